//! The page layout: head (charset, Content-Security-Policy, inline style),
//! the batch summary, the per-phase charts and table, the learner table and
//! the learner details, and a short inline script that only adds sorting and
//! filtering to the learner table (the page is complete without it).

use std::collections::{BTreeMap, BTreeSet};

use engage_model::summary::Summary;
use engage_model::{
    AnalysisOutcome, DominantEmotion, EngagementState, MatchedRecord, format_rfc3339,
};

use super::digest::{Digest, Learner, MAX_PHASES};
use super::escape::{clipped, push, raw};
use super::palette::{BLUE, GREEN, ORANGE, SCORE_BINS, SKY, VERMILLION, YELLOW, score_bin};
use super::rejects::RejectExamples;
use super::stats::{FiveNum, fmt_duration, fmt1, pct};
use super::svg;
use super::{HtmlInput, Limits};
use crate::domain::ReportRow;

/// The Content-Security-Policy of the page: nothing is fetched; only the
/// inline style and script run.
pub(crate) const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;margin:0 auto;max-width:1200px;padding:0 16px 48px}\
h1{font-size:22px;margin:20px 0 4px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:32px}h3{font-size:15px;margin:20px 0 6px}\
table{border-collapse:collapse;margin:6px 0 14px}th,td{padding:2px 7px;border:1px solid #ddd;text-align:left;vertical-align:top}\
th{background:#f4f4f4}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #eee;max-width:100%;height:auto}\
.note{color:#555}.ex{margin:0;padding-left:16px;font-size:12px}code{font-size:12px;word-break:break-all}\
#lt td{text-align:right;font-variant-numeric:tabular-nums;padding:1px 5px}#lt td:first-child{text-align:left}\
.na{color:#999}.sw{display:inline-block;padding:0 5px;white-space:nowrap;margin-right:3px}\
#lt th[aria-sort]{text-decoration:underline}input[type=search]{margin:4px 0;padding:3px 6px;width:260px}\
section.ld{border-top:1px dashed #ccc}";

const SCRIPT: &str = r#"(function(){var t=document.getElementById('lt');if(!t||!t.tBodies.length)return;var b=t.tBodies[0],rows=[].slice.call(b.rows);
var f=document.createElement('input');f.type='search';f.placeholder='Filter learners by id';f.setAttribute('aria-label','Filter learners by id');t.parentNode.insertBefore(f,t);
f.addEventListener('input',function(){var q=f.value.toLowerCase();rows.forEach(function(r){r.hidden=!!q&&r.cells[0].textContent.toLowerCase().indexOf(q)<0;});});
[].forEach.call(t.tHead.rows[0].cells,function(th,i){var dir=-1;th.tabIndex=0;th.style.cursor='pointer';th.title='Sort';
function go(){dir=-dir;var k=rows.map(function(r,j){var s=r.cells[i].textContent,n=parseFloat(s);return[isNaN(n)?null:n,s,j,r];});
k.sort(function(a,c){if(a[0]!==null&&c[0]!==null&&a[0]!==c[0])return(a[0]-c[0])*dir;if((a[0]===null)!==(c[0]===null))return a[0]===null?1:-1;if(a[1]!==c[1])return(a[1]<c[1]?-1:1)*dir;return a[2]-c[2];});
var fr=document.createDocumentFragment();rows=k.map(function(x){fr.appendChild(x[3]);return x[3];});b.appendChild(fr);
[].forEach.call(t.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});th.setAttribute('aria-sort',dir>0?'ascending':'descending');}
th.addEventListener('click',go);th.addEventListener('keydown',function(e){if(e.key==='Enter')go();});});})();"#;

/// Renders the whole page.
pub(crate) fn render(input: &HtmlInput<'_>, limits: &Limits) -> String {
    let d = Digest::new(input.records, input.rows);
    let mut out = String::with_capacity(64 * 1024 + input.rows.len() * 40);
    raw(
        &mut out,
        format_args!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
             <meta name=\"referrer\" content=\"no-referrer\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>Engagement report</title><style>{STYLE}"
        ),
    );
    for (i, (bg, fg)) in SCORE_BINS.iter().enumerate() {
        raw(
            &mut out,
            format_args!(".s{i}{{background:{bg};color:{fg}}}"),
        );
    }
    out.push_str("</style></head><body>\n");
    let s = input.summary;
    raw(
        &mut out,
        format_args!(
            "<h1>Engagement report</h1><p class=\"note\">{} learners, {} learner-phase rows, {} phases. \
             The same data is in <code>report.csv</code>, <code>matched.csv</code>, <code>analysis.csv</code> \
             and <code>summary.json</code> next to this file.</p>\
             <nav><a href=\"#summary\">Summary</a> · <a href=\"#phases\">Phases</a> · \
             <a href=\"#learners\">Learners</a> · <a href=\"#details\">Learner details</a></nav>\n",
            d.learners.len(),
            input.rows.len(),
            d.phases.len() + d.hidden_phases,
        ),
    );
    summary_section(&mut out, s, input.outcomes, input.records, input.rejects);
    phases_section(&mut out, &d);
    let (details, with_detail) = details_section(&d, input.outcomes, limits);
    learners_section(&mut out, &d, input.outcomes, with_detail);
    out.push_str(&details);
    raw(
        &mut out,
        format_args!("<script>{SCRIPT}</script>\n</body></html>\n"),
    );
    out
}

fn num_row(out: &mut String, label: &str, n: u64, note: &str) {
    raw(
        out,
        format_args!("<tr><td>{label}</td><td class=\"n\">{n}</td><td>{note}</td></tr>"),
    );
}

fn summary_section(
    out: &mut String,
    s: &Summary,
    outcomes: &BTreeMap<String, AnalysisOutcome>,
    records: &[MatchedRecord],
    rejects: &RejectExamples,
) {
    let a = &s.activity;
    let rejected: u64 = a.rejected.values().sum();
    let srejected: u64 = s.sessions.rejected.values().sum();
    let failed: u64 = s.failed.values().sum();
    out.push_str("<section id=\"summary\"><h2>Batch summary</h2>\
        <table><thead><tr><th>Stage</th><th class=\"n\">Count</th><th>Meaning</th></tr></thead><tbody>");
    num_row(
        out,
        "activity: read",
        a.read,
        "records in the activity logs",
    );
    num_row(
        out,
        "activity: kept",
        a.kept,
        &format!(
            "{} of read; unique English responses of selected learners",
            pct(a.kept, a.read)
        ),
    );
    num_row(out, "activity: not English", a.non_english, "dropped");
    num_row(out, "activity: not selected", a.deselected, "dropped");
    num_row(
        out,
        "activity: duplicates",
        a.duplicates,
        "repeats of a kept response, dropped",
    );
    num_row(
        out,
        "activity: rejected",
        rejected,
        "malformed records, by reason below",
    );
    num_row(out, "sessions: kept", s.sessions.kept, "");
    num_row(
        out,
        "sessions: rejected",
        srejected,
        "malformed rows, by reason below",
    );
    num_row(
        out,
        "matched",
        s.matched,
        "kept responses with a session within 5 min",
    );
    num_row(
        out,
        "unmatched",
        s.unmatched,
        "not analyzed, not in the report",
    );
    num_row(
        out,
        "matched without audio",
        s.no_audio,
        "in the report, not analyzed",
    );
    num_row(out, "analyzed", s.analyzed, "");
    num_row(out, "failed", failed, "by reason below");
    num_row(
        out,
        "learners",
        s.learners,
        "with at least one kept response",
    );
    num_row(
        out,
        "report rows",
        s.report_rows,
        "one per learner and phase",
    );
    out.push_str("</tbody></table>\n");

    let reasons: Vec<(&str, &String, &u64)> = a
        .rejected
        .iter()
        .map(|(r, n)| ("activity", r, n))
        .chain(s.sessions.rejected.iter().map(|(r, n)| ("sessions", r, n)))
        .collect();
    out.push_str("<h3>Rejections by reason</h3>");
    if reasons.is_empty() {
        out.push_str("<p class=\"note\">None.</p>");
    } else {
        out.push_str("<table><thead><tr><th>Input</th><th>Reason</th><th class=\"n\">Count</th><th>Examples (first by position)</th></tr></thead><tbody>");
        for (source, reason, n) in reasons {
            raw(out, format_args!("<tr><td>{source}</td><td>"));
            push(out, reason);
            raw(
                out,
                format_args!("</td><td class=\"n\">{n}</td><td><ul class=\"ex\">"),
            );
            for e in rejects.get(source, reason) {
                if source == "sessions" {
                    raw(out, format_args!("<li>row {}: ", e.position));
                } else {
                    raw(out, format_args!("<li>byte {}: ", e.position));
                }
                out.push_str(&clipped(&e.detail, 120));
                if !e.excerpt.is_empty() {
                    out.push_str(" <code>");
                    out.push_str(&clipped(&e.excerpt, 120));
                    out.push_str("</code>");
                }
                out.push_str("</li>");
            }
            out.push_str("</ul></td></tr>");
        }
        out.push_str("</tbody></table>\n");
    }

    out.push_str("<h3>Failed items by reason</h3>");
    if s.failed.is_empty() {
        out.push_str("<p class=\"note\">None.</p>");
    } else {
        // The first three failed items of each reason, by response id.
        let mut examples: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for (id, o) in outcomes {
            if let AnalysisOutcome::Failed { reason, detail } = o {
                let v = examples.entry(reason.as_str()).or_default();
                if v.len() < 3 {
                    v.push((id.as_str(), detail.as_str()));
                }
            }
        }
        let wanted: BTreeSet<&str> = examples.values().flatten().map(|(id, _)| *id).collect();
        let learner_of: BTreeMap<&str, &str> = records
            .iter()
            .filter(|m| wanted.contains(m.record.response_id.as_str()))
            .map(|m| (m.record.response_id.as_str(), m.record.user_id.as_str()))
            .collect();
        out.push_str("<table><thead><tr><th>Reason</th><th class=\"n\">Count</th><th>Examples (response id, learner, detail)</th></tr></thead><tbody>");
        for (reason, n) in &s.failed {
            out.push_str("<tr><td>");
            push(out, reason);
            raw(
                out,
                format_args!("</td><td class=\"n\">{n}</td><td><ul class=\"ex\">"),
            );
            for (id, detail) in examples.get(reason.as_str()).into_iter().flatten() {
                out.push_str("<li><code>");
                out.push_str(&clipped(id, 40));
                out.push_str("</code> ");
                out.push_str(&clipped(learner_of.get(id).copied().unwrap_or("?"), 60));
                if !detail.is_empty() {
                    out.push_str(": ");
                    out.push_str(&clipped(detail, 120));
                }
                out.push_str("</li>");
            }
            out.push_str("</ul></td></tr>");
        }
        out.push_str("</tbody></table>\n");
    }

    let c = &s.cost;
    let paid = c.calls + c.prefiltered + c.prompt_tokens + c.output_tokens > 0
        || outcomes
            .values()
            .filter_map(AnalysisOutcome::result)
            .any(|r| r.analyzer.starts_with("gemini"));
    if paid {
        out.push_str("<h3>Model calls</h3><table><tbody>");
        num_row(out, "Gemini calls", c.calls, "requests made for this batch");
        num_row(
            out,
            "saved by the result cache",
            c.cache_hits,
            "items answered from an earlier analysis of the same audio",
        );
        num_row(
            out,
            "saved by the pre-filter",
            c.prefiltered,
            "items never sent (silent or too short)",
        );
        num_row(out, "prompt tokens", c.prompt_tokens, "");
        num_row(out, "output tokens", c.output_tokens, "");
        out.push_str("</tbody></table><p class=\"note\">The data carries no prices, so no cost estimate is shown.</p>\n");
    }
    out.push_str("</section>\n");
}

fn five(f: Option<FiveNum>) -> String {
    f.map_or_else(
        || "–".into(),
        |f| format!("{} ({}–{})", fmt1(f.median), fmt1(f.p25), fmt1(f.p75)),
    )
}

fn phases_section(out: &mut String, d: &Digest<'_>) {
    out.push_str("<section id=\"phases\"><h2>Phases across learners</h2>");
    if d.phases.is_empty() {
        out.push_str("<p class=\"note\">No report rows: nothing to chart.</p></section>\n");
        return;
    }
    out.push_str("<p class=\"note\">Each learner contributes one value per phase (their average over the phase). \
        Box plots: whiskers at the minimum and maximum, box from the 25th to the 75th percentile, \
        thick line at the median, dot at the mean; n is the number of learners with a value.</p>");
    if d.hidden_phases > 0 {
        raw(
            out,
            format_args!(
                "<p class=\"note\">The {MAX_PHASES} phases with the most learners are shown; {} rarer phases are only in <code>report.csv</code> and the learner details.</p>",
                d.hidden_phases
            ),
        );
    }
    out.push_str("<div class=\"charts\">");
    type Pick = fn(&super::digest::PhaseStats<'_>) -> Option<FiveNum>;
    let metrics: [(&str, &str, Pick); 4] = [
        ("Average engagement score", BLUE, |p| p.engagement),
        ("Average emotional score", ORANGE, |p| p.emotional),
        ("Average accuracy", GREEN, |p| p.accuracy),
        ("Combined score", SKY, |p| p.combined),
    ];
    for (title, colour, pick) in metrics {
        let series: Vec<(&str, Option<FiveNum>)> =
            d.phases.iter().map(|p| (p.name, pick(p))).collect();
        svg::box_plot(out, title, "score (0–100)", colour, &series);
    }
    out.push_str("</div>");

    out.push_str("<table><thead><tr><th>Phase</th><th class=\"n\">Learners</th>\
        <th class=\"n\">Engagement median (IQR)</th><th class=\"n\">Emotional</th><th class=\"n\">Accuracy</th>\
        <th class=\"n\">Combined</th><th class=\"n\">Median duration</th><th class=\"n\">Median gap to next</th></tr></thead><tbody>");
    for p in &d.phases {
        out.push_str("<tr><td>");
        out.push_str(&clipped(p.name, 40));
        raw(
            out,
            format_args!(
                "</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                p.rows,
                five(p.engagement),
                five(p.emotional),
                five(p.accuracy),
                five(p.combined),
                p.median_duration_s.map_or_else(|| "–".into(), fmt_duration),
                p.median_gap_s.map_or_else(|| "–".into(), fmt_duration),
            ),
        );
    }
    out.push_str("</tbody></table><div class=\"charts\">");
    let states: Vec<(&str, &str, &str)> = EngagementState::ALL
        .iter()
        .map(|s| match s {
            EngagementState::Engaged => (s.as_str(), BLUE, "#ffffff"),
            EngagementState::Neutral => (s.as_str(), YELLOW, "#000000"),
            EngagementState::Disengaged => (s.as_str(), VERMILLION, "#000000"),
        })
        .collect();
    let state_rows: Vec<(&str, Vec<u64>)> = d
        .phases
        .iter()
        .map(|p| (p.name, p.states.clone()))
        .collect();
    svg::stacked_shares(
        out,
        "Engagement state (most frequent per learner)",
        &states,
        &state_rows,
    );
    let bars: Vec<(&str, Vec<Option<f64>>)> = d
        .phases
        .iter()
        .map(|p| (p.name, vec![p.median_duration_s, p.median_gap_s]))
        .collect();
    svg::signed_bars(
        out,
        "Phase duration and gap to the next phase",
        &[("duration", BLUE), ("gap to next phase", ORANGE)],
        &bars,
    );
    let emotions: Vec<&str> = DominantEmotion::ALL.iter().map(|e| e.as_str()).collect();
    let emotion_rows: Vec<(&str, Vec<u64>)> = d
        .phases
        .iter()
        .map(|p| (p.name, p.emotions.clone()))
        .collect();
    svg::heatmap(
        out,
        "Dominant emotion (most frequent per learner)",
        BLUE,
        &emotions,
        &emotion_rows,
    );
    out.push_str("</div><p class=\"note\">Duration: last minus first response of the phase. \
        Gap: first response of the learner's next phase minus the last of this one; negative when phases interleave.</p></section>\n");
}

/// A combined-score cell, coloured by band.
fn score_cell(out: &mut String, score: Option<f64>) {
    match score.filter(|s| s.is_finite()) {
        Some(v) => raw(
            out,
            format_args!("<td class=\"s{}\">{}</td>", score_bin(v), fmt1(v)),
        ),
        None => out.push_str("<td class=\"na\">–</td>"),
    }
}

/// A score cell of the learner table, in HTML's short form (unquoted class,
/// end tag omitted: the next cell or row closes it), which keeps the table at
/// 10,000 learners a third smaller.
fn short_score_cell(out: &mut String, score: Option<f64>) {
    match score.filter(|s| s.is_finite()) {
        Some(v) => raw(out, format_args!("<td class=s{}>{}", score_bin(v), fmt1(v))),
        None => out.push_str("<td class=na>–"),
    }
}

fn learners_section(
    out: &mut String,
    d: &Digest<'_>,
    outcomes: &BTreeMap<String, AnalysisOutcome>,
    with_detail: usize,
) {
    out.push_str("<section id=\"learners\"><h2>Learners</h2><p class=\"note\">One row per learner, one cell per phase: \
        the combined score (0–100), coloured by band: ");
    for i in 0..SCORE_BINS.len() {
        raw(
            out,
            format_args!("<span class=\"sw s{i}\">{}–{}</span>", i * 20, i * 20 + 20),
        );
    }
    out.push_str(" – no value. With JavaScript, click a heading to sort and type to filter.</p>");
    out.push_str("<table id=\"lt\"><thead><tr><th>Learner</th><th>Responses</th><th>Analyzed</th><th>Failed</th>");
    for p in &d.phases {
        out.push_str("<th>");
        out.push_str(&clipped(p.name, 12));
        out.push_str("</th>");
    }
    out.push_str("</tr></thead><tbody>\n");
    for (i, l) in d.learners.iter().enumerate() {
        out.push_str("<tr><td>");
        if i < with_detail {
            raw(out, format_args!("<a href=\"#l{i}\">"));
            out.push_str(&clipped(l.id, 48));
            out.push_str("</a>");
        } else {
            out.push_str(&clipped(l.id, 48));
        }
        let [analyzed, failed, _, _] = l.counts(outcomes);
        raw(
            out,
            format_args!("</td><td>{}<td>{analyzed}<td>{failed}", l.responses.len()),
        );
        for p in &d.phases {
            short_score_cell(out, l.row(p.name).and_then(|r| r.combined_score));
        }
        out.push('\n');
    }
    out.push_str("</tbody></table></section>\n");
}

fn opt1(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite()).map_or_else(|| "–".into(), fmt1)
}

fn phase_rows(out: &mut String, rows: &[&ReportRow]) {
    out.push_str("<table><caption>Phases</caption><thead><tr><th>Phase</th><th class=\"n\">Responses</th>\
        <th class=\"n\">Accuracy</th><th class=\"n\">Emotional</th><th class=\"n\">Engagement</th><th>Emotion</th>\
        <th>State</th><th class=\"n\">Duration</th><th class=\"n\">Gap to next</th><th class=\"n\">Combined</th></tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr><td>");
        out.push_str(&clipped(&r.phase, 40));
        raw(
            out,
            format_args!(
                "</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
                r.responses,
                opt1(r.avg_accuracy),
                opt1(r.avg_emotional_score),
                opt1(r.avg_engagement_score),
                r.dominant_emotion.map_or("–", DominantEmotion::as_str),
                r.engagement_state.map_or("–", EngagementState::as_str),
                fmt_duration(r.session_duration_s),
                r.gap_to_next_phase_s
                    .map_or_else(|| "–".into(), fmt_duration),
            ),
        );
        score_cell(out, r.combined_score);
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

fn response_rows(
    out: &mut String,
    l: &Learner<'_>,
    outcomes: &BTreeMap<String, AnalysisOutcome>,
    cap: usize,
) {
    out.push_str("<table><caption>Responses</caption><thead><tr><th>Time (UTC)</th><th>Phase</th>\
        <th class=\"n\">Accuracy</th><th class=\"n\">Engagement</th><th class=\"n\">Emotional</th><th>Emotion</th>\
        <th>State</th><th>Pronunciation</th><th>Audio quality</th><th>Outcome</th></tr></thead><tbody>");
    for m in l.responses.iter().take(cap) {
        out.push_str("<tr><td>");
        out.push_str(&format_rfc3339(m.record.timestamp));
        out.push_str("</td><td>");
        out.push_str(&m.phase().map_or_else(|| "–".into(), |p| clipped(p, 40)));
        raw(
            out,
            format_args!("</td><td class=\"n\">{}</td>", opt1(m.record.accuracy)),
        );
        let outcome = outcomes.get(&m.record.response_id);
        match outcome.and_then(AnalysisOutcome::result) {
            Some(r) => raw(
                out,
                format_args!(
                    "<td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                    fmt1(r.engagement_score),
                    fmt1(r.emotional_score),
                    r.dominant_emotion,
                    r.engagement_state,
                    r.pronunciation_quality,
                    r.audio_quality
                ),
            ),
            None => out.push_str("<td class=\"na\">–</td><td class=\"na\">–</td><td></td><td></td><td></td><td></td>"),
        }
        out.push_str("<td>");
        match outcome {
            Some(AnalysisOutcome::Ok(_)) => out.push_str("ok"),
            Some(AnalysisOutcome::Failed { reason, detail }) => {
                out.push_str("failed: ");
                push(out, reason);
                if !detail.is_empty() {
                    out.push_str(" (");
                    out.push_str(&clipped(detail, 80));
                    out.push(')');
                }
            }
            None if m.session.is_none() => out.push_str("unmatched"),
            None if m.record.audio_url.is_none() => out.push_str("no audio"),
            None => out.push_str("not analyzed"),
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table>");
    if l.responses.len() > cap {
        raw(
            out,
            format_args!(
                "<p class=\"note\">{} more responses: see <code>matched.csv</code> and <code>analysis.csv</code>.</p>",
                l.responses.len() - cap
            ),
        );
    }
}

/// The details of the first learners (by id) that fit the limits, and how
/// many there are.
fn details_section(
    d: &Digest<'_>,
    outcomes: &BTreeMap<String, AnalysisOutcome>,
    limits: &Limits,
) -> (String, usize) {
    let mut body = String::new();
    let mut n = 0;
    let mut one = String::new();
    for (i, l) in d.learners.iter().enumerate() {
        if n >= limits.detail_learners {
            break;
        }
        one.clear();
        raw(
            &mut one,
            format_args!("<section class=\"ld\" id=\"l{i}\"><h3>Learner <code>"),
        );
        one.push_str(&clipped(l.id, 200));
        let [analyzed, failed, unmatched, no_audio] = l.counts(outcomes);
        raw(
            &mut one,
            format_args!(
                "</code></h3><p>{} responses: {analyzed} analyzed, {failed} failed, {unmatched} unmatched, {no_audio} without audio. \
                 <a href=\"#lt\">Back to the table</a></p>",
                l.responses.len()
            ),
        );
        if !l.rows.is_empty() {
            phase_rows(&mut one, &l.rows);
        }
        response_rows(&mut one, l, outcomes, limits.responses_per_learner);
        one.push_str("</section>\n");
        if body.len() + one.len() > limits.detail_bytes {
            break;
        }
        body.push_str(&one);
        n += 1;
    }
    let mut out = String::from("<section id=\"details\"><h2>Learner details</h2>");
    if n < d.learners.len() {
        raw(
            &mut out,
            format_args!(
                "<p class=\"note\">Details of the first {n} of {} learners (by id), to keep this file small; \
                 every learner is in <code>report.csv</code>, <code>matched.csv</code> and <code>analysis.csv</code>.</p>",
                d.learners.len()
            ),
        );
    }
    out.push_str(&body);
    out.push_str("</section>\n");
    (out, n)
}
