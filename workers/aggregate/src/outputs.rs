//! The batch's output files, built in memory from the final data. Used by the
//! fleet's report job and by `engage run`, so both write identical bytes for
//! the same input (`report.html` included: see [`crate::html`]).

use std::collections::{BTreeMap, HashSet};

use engage_model::summary::Summary;
use engage_model::{AnalysisOutcome, MatchedRecord};

use crate::domain::{ReportRow, sort_rows};
use crate::html::{HtmlInput, REPORT_HTML, RejectExamples, render_html};
use crate::report::{
    ReportError, write_analysis_csv, write_matched_csv, write_report_csv, write_report_json,
};

/// Names of the files every complete batch has.
pub const OUTPUT_FILES: [&str; 6] = [
    "matched.csv",
    "analysis.csv",
    "report.csv",
    "report.json",
    REPORT_HTML,
    "summary.json",
];

/// Keeps the first occurrence of each response id (input order decides which),
/// returning the unique records and the number of repeats dropped.
pub fn dedupe_first(records: impl IntoIterator<Item = MatchedRecord>) -> (Vec<MatchedRecord>, u64) {
    let mut seen = HashSet::new();
    let mut dups = 0;
    let mut out = Vec::new();
    for r in records {
        if seen.insert(r.record.response_id.clone()) {
            out.push(r);
        } else {
            dups += 1;
        }
    }
    (out, dups)
}

/// Fills the match and analysis counts of a summary from the final data.
pub fn count_into(
    summary: &mut Summary,
    records: &[MatchedRecord],
    outcomes: &BTreeMap<String, AnalysisOutcome>,
    rows: &[ReportRow],
) {
    summary.matched = records.iter().filter(|r| r.session.is_some()).count() as u64;
    summary.unmatched = records.len() as u64 - summary.matched;
    summary.no_audio = records
        .iter()
        .filter(|r| r.session.is_some() && r.record.audio_url.is_none())
        .count() as u64;
    summary.analyzed = outcomes.values().filter(|o| o.result().is_some()).count() as u64;
    summary.failed.clear();
    for o in outcomes.values() {
        if let AnalysisOutcome::Failed { reason, .. } = o {
            *summary.failed.entry(reason.clone()).or_insert(0) += 1;
        }
    }
    summary.learners = records
        .iter()
        .map(|r| r.record.user_id.as_str())
        .collect::<HashSet<_>>()
        .len() as u64;
    summary.report_rows = rows.len() as u64;
}

/// Renders the output files: `(name, bytes)` in [`OUTPUT_FILES`] order.
/// `rejects` are the examples of rejected records `report.html` shows.
pub fn render(
    records: &[MatchedRecord],
    outcomes: &BTreeMap<String, AnalysisOutcome>,
    mut rows: Vec<ReportRow>,
    summary: &Summary,
    rejects: &RejectExamples,
) -> Result<Vec<(&'static str, Vec<u8>)>, ReportError> {
    sort_rows(&mut rows);
    let mut matched = Vec::new();
    write_matched_csv(&mut matched, records)?;
    let mut analysis = Vec::new();
    let pairs: Vec<(String, AnalysisOutcome)> = outcomes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    write_analysis_csv(&mut analysis, &pairs)?;
    let mut report = Vec::new();
    write_report_csv(&mut report, &rows)?;
    let mut json = Vec::new();
    write_report_json(&mut json, &rows)?;
    let html = render_html(&HtmlInput {
        records,
        outcomes,
        rows: &rows,
        summary,
        rejects,
    });
    let mut sum = serde_json::to_vec_pretty(summary)?;
    sum.push(b'\n');
    Ok(vec![
        ("matched.csv", matched),
        ("analysis.csv", analysis),
        ("report.csv", report),
        ("report.json", json),
        (REPORT_HTML, html.into_bytes()),
        ("summary.json", sum),
    ])
}
