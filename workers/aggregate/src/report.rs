//! Output writers for the batch's files: `report.csv`, `report.json`,
//! `matched.csv` and `analysis.csv`, with the exact columns of docs/data-contracts.md.
//!
//! Pure over [`std::io::Write`]: the caller decides where the bytes go.
//! Every writer sorts its rows itself and formats deterministically, so the
//! same data gives the same bytes whatever order it arrived in.
//!
//! Numbers: every float column uses [`format_float`] — rounded to 3 decimals
//! (correctly rounded from the exact binary value, ties to even), printed
//! without trailing zeros or a trailing dot, `-0` printed as `0`, and an empty
//! cell for a missing or non-finite value. JSON carries the same rounded
//! values as numbers, and `null` for empty cells. Timestamps are RFC 3339 UTC
//! ([`format_rfc3339`]).

use std::borrow::Cow;
use std::io::Write;

use engage_model::csv_safe::csv_safe;
use engage_model::time::Timestamp;
use engage_model::time::format_rfc3339;
use engage_model::{ANSWER_FIELDS, AnalysisOutcome, MatchedRecord};
use serde::Serialize;

use crate::domain::{ReportRow, row_order};

/// Columns of `report.csv` (and keys of `report.json`), in order.
pub const REPORT_COLUMNS: [&str; 11] = [
    "user_id",
    "phase",
    "responses",
    "avg_accuracy",
    "avg_emotional_score",
    "avg_engagement_score",
    "dominant_emotion",
    "engagement_state",
    "session_duration_s",
    "gap_to_next_phase_s",
    "combined_score",
];

/// Which `report.csv` columns hold text from the input (neutralised with
/// [`csv_safe`]); counts and scores are numbers and stay as they are.
const REPORT_TEXT: [bool; 11] = [
    true, true, false, false, false, false, true, true, false, false, false,
];

/// Columns of `matched.csv`, in order.
pub const MATCHED_COLUMNS: [&str; 11] = [
    "response_id",
    "user_id",
    "timestamp",
    "audio_url",
    "accuracy",
    "session_id",
    "session_created_at",
    "milestone",
    "lesson",
    "phase",
    "progress",
];

/// Which `matched.csv` columns hold text from the input; `accuracy` is a
/// number and the two timestamps are generated, so they stay as they are.
pub(crate) const MATCHED_TEXT: [bool; 11] = [
    true, true, false, true, false, true, false, true, true, true, true,
];

/// Columns of `analysis.csv`, in order: the six answer fields between the
/// status and the analyzer.
pub const ANALYSIS_COLUMNS: [&str; 10] = {
    let f = ANSWER_FIELDS;
    [
        "response_id",
        "status",
        f[0],
        f[1],
        f[2],
        f[3],
        f[4],
        f[5],
        "analyzer",
        "error",
    ]
};

/// Which `analysis.csv` columns hold text (everything but the two scores;
/// `error` carries failure details that may quote the input).
const ANALYSIS_TEXT: [bool; 10] = [true, true, false, false, true, true, true, true, true, true];

/// Why an output file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The CSV encoder or the underlying writer failed.
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    /// The underlying writer failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    /// JSON encoding or the underlying writer failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Rows of a sorted `matched.csv` run came out of order (a bug in the
    /// producer, or a corrupt run file).
    #[error("matched rows out of order in a sorted run")]
    OutOfOrder,
}

/// Formats a float with the module's rule: 3 decimals, no trailing zeros,
/// `-0` as `0`, empty for NaN or infinity.
pub fn format_float(x: f64) -> String {
    if !x.is_finite() {
        return String::new();
    }
    let mut s = format!("{x:.3}");
    if s.contains('.') {
        let trimmed = s.trim_end_matches('0').trim_end_matches('.').len();
        s.truncate(trimmed);
    }
    if s == "-0" {
        s.truncate(0);
        s.push('0');
    }
    s
}

fn opt_float(x: Option<f64>) -> String {
    x.map(format_float).unwrap_or_default()
}

/// The rounded value as a JSON number (`None` for empty cells).
fn json_float(x: Option<f64>) -> Option<f64> {
    x.and_then(|v| format_float(v).parse().ok())
}

/// The eleven `report.csv` cells of a row.
fn report_cells(r: &ReportRow) -> [String; 11] {
    [
        r.user_id.clone(),
        r.phase.clone(),
        r.responses.to_string(),
        opt_float(r.avg_accuracy),
        opt_float(r.avg_emotional_score),
        opt_float(r.avg_engagement_score),
        r.dominant_emotion
            .map(|e| e.as_str().to_string())
            .unwrap_or_default(),
        r.engagement_state
            .map(|e| e.as_str().to_string())
            .unwrap_or_default(),
        format_float(r.session_duration_s),
        opt_float(r.gap_to_next_phase_s),
        opt_float(r.combined_score),
    ]
}

fn sorted_report(rows: &[ReportRow]) -> Vec<&ReportRow> {
    let mut sorted: Vec<&ReportRow> = rows.iter().collect();
    sorted.sort_by(|a, b| row_order(a, b));
    sorted
}

/// Writes `report.csv`: the header [`REPORT_COLUMNS`], then the rows in report
/// order (`user_id`, phase start, phase name).
pub fn write_report_csv<W: Write>(w: W, rows: &[ReportRow]) -> Result<(), ReportError> {
    write_csv(
        w,
        &REPORT_COLUMNS,
        &REPORT_TEXT,
        sorted_report(rows).into_iter().map(report_cells),
    )
}

/// One `report.json` object; field order is the column order.
#[derive(Serialize)]
struct JsonRow<'a> {
    user_id: &'a str,
    phase: &'a str,
    responses: u64,
    avg_accuracy: Option<f64>,
    avg_emotional_score: Option<f64>,
    avg_engagement_score: Option<f64>,
    dominant_emotion: Option<&'static str>,
    engagement_state: Option<&'static str>,
    session_duration_s: Option<f64>,
    gap_to_next_phase_s: Option<f64>,
    combined_score: Option<f64>,
}

impl<'a> From<&'a ReportRow> for JsonRow<'a> {
    fn from(r: &'a ReportRow) -> Self {
        Self {
            user_id: &r.user_id,
            phase: &r.phase,
            responses: r.responses,
            avg_accuracy: json_float(r.avg_accuracy),
            avg_emotional_score: json_float(r.avg_emotional_score),
            avg_engagement_score: json_float(r.avg_engagement_score),
            dominant_emotion: r.dominant_emotion.map(|e| e.as_str()),
            engagement_state: r.engagement_state.map(|e| e.as_str()),
            session_duration_s: json_float(Some(r.session_duration_s)),
            gap_to_next_phase_s: json_float(r.gap_to_next_phase_s),
            combined_score: json_float(r.combined_score),
        }
    }
}

/// Writes `report.json`: an array of objects with the report's keys in
/// column order, one object per line, `null` for empty cells.
pub fn write_report_json<W: Write>(mut w: W, rows: &[ReportRow]) -> Result<(), ReportError> {
    w.write_all(b"[")?;
    for (i, r) in sorted_report(rows).into_iter().enumerate() {
        w.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut w, &JsonRow::from(r))?;
    }
    w.write_all(if rows.is_empty() { b"]\n" } else { b"\n]\n" })?;
    w.flush()?;
    Ok(())
}

/// One `matched.csv` row's data, borrowed: from a [`MatchedRecord`], or from
/// a record parsed in place and the session it matched (the streaming path of
/// [`crate::matched_runs`]), so both write the same bytes through
/// [`matched_cells`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchedView<'a> {
    /// The response id.
    pub response_id: &'a str,
    /// The learner.
    pub user_id: &'a str,
    /// The response's instant.
    pub timestamp: Timestamp,
    /// The audio link as written, if any.
    pub audio_url: Option<&'a str>,
    /// Accuracy, if present.
    pub accuracy: Option<f64>,
    /// The matched session's fields; `None` when unmatched.
    pub session: Option<SessionView<'a>>,
}

/// The session columns of a `matched.csv` row, borrowed: the model's
/// borrowed session match (the match stage serializes the same type).
pub use engage_model::SessionMatchRef as SessionView;

impl<'a> From<&'a MatchedRecord> for MatchedView<'a> {
    fn from(m: &'a MatchedRecord) -> Self {
        let r = &m.record;
        Self {
            response_id: &r.response_id,
            user_id: &r.user_id,
            timestamp: r.timestamp,
            audio_url: r.audio_url.as_deref(),
            accuracy: r.accuracy,
            session: m.session.as_ref().map(SessionView::from),
        }
    }
}

impl MatchedView<'_> {
    /// The `matched.csv` order: user id, timestamp, response id.
    pub fn key(&self) -> (&str, Timestamp, &str) {
        (self.user_id, self.timestamp, self.response_id)
    }
}

/// The eleven `matched.csv` cells of a row, [`MATCHED_COLUMNS`] order, before
/// [`csv_safe`]: input text is borrowed, timestamps and accuracy formatted.
pub fn matched_cells<'a>(v: &MatchedView<'a>) -> [Cow<'a, str>; 11] {
    let s = v.session.as_ref();
    let text = |f: fn(&SessionView<'a>) -> &'a str| Cow::Borrowed(s.map(f).unwrap_or_default());
    [
        Cow::Borrowed(v.response_id),
        Cow::Borrowed(v.user_id),
        Cow::Owned(format_rfc3339(v.timestamp)),
        Cow::Borrowed(v.audio_url.unwrap_or_default()),
        Cow::Owned(opt_float(v.accuracy)),
        text(|s| s.session_id),
        Cow::Owned(s.map(|s| format_rfc3339(s.created_at)).unwrap_or_default()),
        text(|s| s.milestone),
        text(|s| s.lesson),
        text(|s| s.phase),
        text(|s| s.progress),
    ]
}

/// Writes `matched.csv`: every response with its session fields (empty when
/// unmatched), sorted by `user_id`, `timestamp`, `response_id`; identical
/// duplicate rows are written once. Holds every row in memory: a batch too
/// big for that goes through [`crate::matched_runs`] instead, which writes
/// the same bytes.
pub fn write_matched_csv<W: Write>(w: W, records: &[MatchedRecord]) -> Result<(), ReportError> {
    let mut rows: Vec<(&str, i64, [Cow<'_, str>; 11])> = records
        .iter()
        .map(|m| {
            let v = MatchedView::from(m);
            (v.user_id, v.timestamp, matched_cells(&v))
        })
        .collect();
    // The key, then the whole row: a total order that ignores input order.
    rows.sort_by(|a, b| (a.0, a.1, &a.2[0], &a.2).cmp(&(b.0, b.1, &b.2[0], &b.2)));
    rows.dedup_by(|a, b| a.2 == b.2);
    write_csv(
        w,
        &MATCHED_COLUMNS,
        &MATCHED_TEXT,
        rows.into_iter().map(|(_, _, cells)| cells),
    )
}

/// The ten `analysis.csv` cells of one outcome.
fn analysis_cells(response_id: &str, outcome: &AnalysisOutcome) -> [String; 10] {
    match outcome {
        AnalysisOutcome::Ok(r) => [
            response_id.to_string(),
            "ok".to_string(),
            format_float(r.emotional_score),
            format_float(r.engagement_score),
            r.dominant_emotion.as_str().to_string(),
            r.engagement_state.as_str().to_string(),
            r.pronunciation_quality.as_str().to_string(),
            r.audio_quality.as_str().to_string(),
            r.analyzer.clone(),
            String::new(),
        ],
        AnalysisOutcome::Failed { reason, detail } => {
            let error = if detail.is_empty() {
                reason.clone()
            } else {
                format!("{reason}: {detail}")
            };
            let mut cells: [String; 10] = Default::default();
            cells[0] = response_id.to_string();
            cells[1] = "failed".to_string();
            cells[9] = error;
            cells
        }
    }
}

/// Writes `analysis.csv`: one row per analyzed item, `status` `ok` or
/// `failed` (then `error` is `reason` or `reason: detail` and the result
/// columns are empty), sorted by `response_id`; identical duplicate rows are
/// written once.
pub fn write_analysis_csv<W: Write>(
    w: W,
    outcomes: &[(String, AnalysisOutcome)],
) -> Result<(), ReportError> {
    let mut rows: Vec<[String; 10]> = outcomes
        .iter()
        .map(|(id, o)| analysis_cells(id, o))
        .collect();
    rows.sort();
    rows.dedup();
    write_csv(w, &ANALYSIS_COLUMNS, &ANALYSIS_TEXT, rows)
}

/// Writes a header and rows; the cells of the columns marked in `text` go
/// through [`csv_safe`] (formula neutralising), numeric and generated
/// columns are written as they are.
fn write_csv<W: Write, S: AsRef<str>, const N: usize>(
    w: W,
    header: &[&str; N],
    text: &[bool; N],
    rows: impl IntoIterator<Item = [S; N]>,
) -> Result<(), ReportError> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record(header)?;
    for row in rows {
        write_safe_record(&mut out, text, &row)?;
    }
    out.flush()?;
    Ok(())
}

/// Writes one record, the cells of the columns marked in `text` through
/// [`csv_safe`].
pub(crate) fn write_safe_record<W: Write, S: AsRef<str>, const N: usize>(
    out: &mut csv::Writer<W>,
    text: &[bool; N],
    row: &[S; N],
) -> Result<(), ReportError> {
    let cells: [Cow<'_, str>; N] = std::array::from_fn(|i| {
        let cell = row[i].as_ref();
        if text[i] {
            csv_safe(cell)
        } else {
            Cow::Borrowed(cell)
        }
    });
    out.write_record(cells.iter().map(|c| c.as_bytes()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use engage_model::time::NANOS_PER_SEC;
    use engage_model::{
        ActivityRecord, AnalysisResult, AudioQuality, DominantEmotion, EngagementState,
        PronunciationQuality, SessionMatch,
    };

    const T0: i64 = 1_709_287_200 * NANOS_PER_SEC;

    #[test]
    fn analysis_columns_are_the_contracts() {
        assert_eq!(
            ANALYSIS_COLUMNS.join(","),
            "response_id,status,emotional_score,engagement_score,dominant_emotion,\
             engagement_state,pronunciation_quality,audio_quality,analyzer,error"
        );
    }

    fn text(f: impl FnOnce(&mut Vec<u8>) -> Result<(), ReportError>) -> String {
        let mut buf = Vec::new();
        f(&mut buf).expect("write");
        String::from_utf8(buf).expect("utf-8")
    }

    fn row(user: &str, phase: &str, first: i64) -> ReportRow {
        ReportRow {
            user_id: user.into(),
            phase: phase.into(),
            responses: 3,
            avg_accuracy: Some(66.666_666_6),
            avg_emotional_score: None,
            avg_engagement_score: Some(80.0),
            dominant_emotion: Some(DominantEmotion::Happy),
            engagement_state: None,
            session_duration_s: 12.5,
            gap_to_next_phase_s: Some(-0.0001),
            combined_score: Some(73.333_333_3),
            first_response_at: first,
            last_response_at: first,
        }
    }

    #[test]
    fn float_rule() {
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.1 + 0.2), "0.3");
        assert_eq!(format_float(66.666_666), "66.667");
        assert_eq!(format_float(12.5), "12.5");
        assert_eq!(format_float(-0.0), "0");
        assert_eq!(format_float(-0.0004), "0");
        assert_eq!(format_float(-1.25), "-1.25");
        assert_eq!(format_float(100.0), "100");
        assert_eq!(format_float(1e21), "1000000000000000000000");
        assert_eq!(format_float(f64::NAN), "");
        assert_eq!(format_float(f64::INFINITY), "");
    }

    #[test]
    fn report_csv_header_order_and_empty_cells() {
        let rows = vec![
            row("b", "P1", T0),
            row("a,1", "P2", T0 + 1),
            row("a,1", "P1", T0 + 2),
        ];
        let got = text(|w| write_report_csv(w, &rows));
        let want = "user_id,phase,responses,avg_accuracy,avg_emotional_score,avg_engagement_score,\
dominant_emotion,engagement_state,session_duration_s,gap_to_next_phase_s,combined_score\n\
\"a,1\",P2,3,66.667,,80,happy,,12.5,0,73.333\n\
\"a,1\",P1,3,66.667,,80,happy,,12.5,0,73.333\n\
b,P1,3,66.667,,80,happy,,12.5,0,73.333\n";
        assert_eq!(got, want);
        assert_eq!(
            text(|w| write_report_csv(w, &[])),
            format!("{}\n", REPORT_COLUMNS.join(","))
        );
    }

    #[test]
    fn report_json_has_the_same_keys_and_nulls() {
        let mut r = row("u\"1", "P1", T0);
        r.gap_to_next_phase_s = None;
        let got = text(|w| write_report_json(w, &[r]));
        let want = "[\n{\"user_id\":\"u\\\"1\",\"phase\":\"P1\",\"responses\":3,\"avg_accuracy\":66.667,\
\"avg_emotional_score\":null,\"avg_engagement_score\":80.0,\"dominant_emotion\":\"happy\",\
\"engagement_state\":null,\"session_duration_s\":12.5,\"gap_to_next_phase_s\":null,\
\"combined_score\":73.333}\n]\n";
        assert_eq!(got, want);
        let parsed: serde_json::Value = serde_json::from_str(&got).expect("valid JSON");
        let keys: Vec<&str> = parsed[0]
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want_keys = REPORT_COLUMNS.to_vec();
        want_keys.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want_keys);
        assert_eq!(text(|w| write_report_json(w, &[])), "[]\n");
    }

    #[test]
    fn formula_cells_are_neutralised_in_text_columns_only() {
        let mut r = row("@SUM(1+1)*cmd|' /C calc'!A0", "=1+2", T0);
        r.gap_to_next_phase_s = Some(-12.5);
        r.avg_accuracy = Some(-3.0);
        let got = text(|w| write_report_csv(w, std::slice::from_ref(&r)));
        let line = got.lines().nth(1).expect("row");
        assert_eq!(
            line,
            "'@SUM(1+1)*cmd|' /C calc'!A0,'=1+2,3,-3,,80,happy,,12.5,-12.5,73.333"
        );
        // JSON keeps the raw values.
        let json = text(|w| write_report_json(w, &[r]));
        assert!(
            json.contains("\"user_id\":\"@SUM(1+1)*cmd|' /C calc'!A0\""),
            "{json}"
        );
        assert!(json.contains("\"phase\":\"=1+2\""), "{json}");

        let mut m = matched("=HYPERLINK(\"http://evil\",\"x\")", "+r1", T0, true);
        if let Some(s) = m.session.as_mut() {
            s.phase = "-P1".into();
            s.lesson = "\tL".into();
        }
        m.record.audio_url = Some("@s3://bkt/a.wav".into());
        let got = text(|w| write_matched_csv(w, &[m]));
        let mut rd = csv::Reader::from_reader(got.as_bytes());
        let rec = rd.records().next().expect("row").expect("csv");
        assert_eq!(&rec[0], "'+r1");
        assert_eq!(&rec[1], "'=HYPERLINK(\"http://evil\",\"x\")");
        assert_eq!(&rec[3], "'@s3://bkt/a.wav");
        assert_eq!(&rec[4], "87.5");
        assert_eq!(&rec[8], "'\tL");
        assert_eq!(&rec[9], "'-P1");

        let failed = AnalysisOutcome::Failed {
            reason: "io".into(),
            detail: String::new(),
        };
        let got = text(|w| write_analysis_csv(w, &[("=r".to_string(), failed)]));
        assert!(
            got.lines().nth(1).expect("row").starts_with("'=r,failed,"),
            "{got}"
        );
    }

    fn matched(user: &str, id: &str, ts: i64, session: bool) -> MatchedRecord {
        MatchedRecord {
            record: ActivityRecord {
                response_id: id.into(),
                user_id: user.into(),
                timestamp: ts,
                audio_url: session.then(|| "s3://bkt/a,b.wav".to_string()),
                accuracy: session.then_some(87.5),
                original_text: None,
                response_text: None,
                session_id: None,
                sub_session_id: None,
            },
            session: session.then(|| SessionMatch {
                session_id: "s1".into(),
                created_at: T0,
                milestone: "M1".into(),
                lesson: "P1".into(),
                phase: "P1".into(),
                progress: "40".into(),
            }),
        }
    }

    #[test]
    fn matched_csv_sorted_with_empty_session_fields() {
        let records = vec![
            matched("u2", "r3", T0, true),
            matched("u1", "r2", T0 + 250_000_000, false),
            matched("u1", "r1", T0 + 250_000_000, true),
            matched("u1", "r1", T0 + 250_000_000, true),
        ];
        let got = text(|w| write_matched_csv(w, &records));
        let want = "response_id,user_id,timestamp,audio_url,accuracy,session_id,session_created_at,\
milestone,lesson,phase,progress\n\
r1,u1,2024-03-01T10:00:00.250Z,\"s3://bkt/a,b.wav\",87.5,s1,2024-03-01T10:00:00Z,M1,P1,P1,40\n\
r2,u1,2024-03-01T10:00:00.250Z,,,,,,,,\n\
r3,u2,2024-03-01T10:00:00Z,\"s3://bkt/a,b.wav\",87.5,s1,2024-03-01T10:00:00Z,M1,P1,P1,40\n";
        assert_eq!(got, want);
    }

    #[test]
    fn analysis_csv_ok_and_failed_sorted() {
        let ok = AnalysisOutcome::Ok(AnalysisResult {
            emotional_score: 70.0,
            engagement_score: 55.55555,
            dominant_emotion: DominantEmotion::Calm,
            engagement_state: EngagementState::Engaged,
            pronunciation_quality: PronunciationQuality::Average,
            audio_quality: AudioQuality::Good,
            analyzer: "gemini:flash:v1".into(),
        });
        let failed = AnalysisOutcome::Failed {
            reason: "undecodable".into(),
            detail: "bad header, 0 bytes".into(),
        };
        let bare = AnalysisOutcome::Failed {
            reason: "audio_missing".into(),
            detail: String::new(),
        };
        let items = vec![
            ("r2".to_string(), failed),
            ("r1".to_string(), ok.clone()),
            ("r3".to_string(), bare),
            ("r1".to_string(), ok),
        ];
        let got = text(|w| write_analysis_csv(w, &items));
        let want = "response_id,status,emotional_score,engagement_score,dominant_emotion,\
engagement_state,pronunciation_quality,audio_quality,analyzer,error\n\
r1,ok,70,55.556,calm,engaged,average,good,gemini:flash:v1,\n\
r2,failed,,,,,,,,\"undecodable: bad header, 0 bytes\"\n\
r3,failed,,,,,,,,audio_missing\n";
        assert_eq!(got, want);
    }

    #[test]
    fn io_errors_are_reported_not_panics() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::other("disk full"))
            }
        }
        let disk_full = |r: Result<(), ReportError>| matches!(r, Err(ReportError::Io(e)) if e.to_string() == "disk full");
        assert!(disk_full(write_report_csv(Broken, &[row("u", "P1", T0)])));
        assert!(disk_full(write_report_json(Broken, &[])));
        assert!(disk_full(write_matched_csv(Broken, &[])));
        assert!(disk_full(write_analysis_csv(Broken, &[])));
    }
}
