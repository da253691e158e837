//! Sessions: one row of the sessions CSV, the session fields a matched response
//! carries, and the streaming sessions CSV parser ([`parse_sessions`],
//! [`read_sessions`]) that turns a file into sessions and row rejects.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::reject::RejectReason;
use super::time::{Timestamp, TimestampError, parse_timestamp_str};

/// One lesson session of a learner (a sessions CSV row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The learner (trimmed).
    pub user_id: String,
    /// The session id.
    pub session_id: String,
    /// When the session was created (ns since epoch, UTC).
    pub created_at: Timestamp,
    /// The `milestone` column.
    pub milestone: String,
    /// The `lesson` column.
    pub lesson: String,
    /// The `progress` column, as written.
    pub progress: String,
    /// The `phase` column if present and non-empty, else `lesson`.
    pub phase: String,
    /// 0-based position of the row in the sessions file (data rows only);
    /// decides the tie rule "same created_at: the last in the file wins".
    pub row: u64,
}

/// The session fields attached to a matched response (the `matched.csv` columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMatch {
    /// The session id.
    pub session_id: String,
    /// When the session was created.
    pub created_at: Timestamp,
    /// The session's milestone.
    pub milestone: String,
    /// The session's lesson.
    pub lesson: String,
    /// The session's phase.
    pub phase: String,
    /// The session's progress, as written.
    pub progress: String,
}

impl From<&Session> for SessionMatch {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.session_id.clone(),
            created_at: s.created_at,
            milestone: s.milestone.clone(),
            lesson: s.lesson.clone(),
            phase: s.phase.clone(),
            progress: s.progress.clone(),
        }
    }
}

/// [`SessionMatch`] borrowed from a [`Session`] or a [`SessionMatch`]: the
/// same fields in the same order, so it serializes to the same JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SessionMatchRef<'a> {
    /// The session id.
    pub session_id: &'a str,
    /// When the session was created.
    pub created_at: Timestamp,
    /// The session's milestone.
    pub milestone: &'a str,
    /// The session's lesson.
    pub lesson: &'a str,
    /// The session's phase.
    pub phase: &'a str,
    /// The session's progress, as written.
    pub progress: &'a str,
}

impl<'a> From<&'a Session> for SessionMatchRef<'a> {
    fn from(s: &'a Session) -> Self {
        Self {
            session_id: &s.session_id,
            created_at: s.created_at,
            milestone: &s.milestone,
            lesson: &s.lesson,
            phase: &s.phase,
            progress: &s.progress,
        }
    }
}

impl<'a> From<&'a SessionMatch> for SessionMatchRef<'a> {
    fn from(s: &'a SessionMatch) -> Self {
        Self {
            session_id: &s.session_id,
            created_at: s.created_at,
            milestone: &s.milestone,
            lesson: &s.lesson,
            phase: &s.phase,
            progress: &s.progress,
        }
    }
}

// ---------------------------------------------------------------------------
// Sessions CSV parsing
// ---------------------------------------------------------------------------

/// The columns a sessions CSV header must name (in any order).
pub const REQUIRED_SESSION_COLUMNS: [&str; 6] = [
    "user_id",
    "session_id",
    "created_at",
    "milestone",
    "lesson",
    "progress",
];

/// Why a sessions file as a whole cannot be read (as opposed to one bad row).
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    /// The header row lacks a required column; nothing in the file can be trusted.
    #[error("sessions header lacks required column {0:?}")]
    MissingColumn(&'static str),
    /// The file has no header row at all (it is empty).
    #[error("sessions file is empty (no header row)")]
    Empty,
    /// Reading the underlying stream failed (I/O error, not a data problem).
    #[error("reading sessions CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// One rejected sessions row: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("sessions row {row}: {reason}: {detail}")]
pub struct SessionReject {
    /// 0-based data row number (same numbering as [`Session::row`]).
    pub row: u64,
    /// Why the row was rejected.
    pub reason: RejectReason,
    /// A human-readable explanation (no learner data beyond the offending value).
    pub detail: String,
}

/// A data row: a session, or the reason it was rejected.
pub type SessionRow = Result<Session, SessionReject>;

/// Column positions resolved from the header.
#[derive(Debug, Clone, Copy)]
struct Columns {
    user_id: usize,
    session_id: usize,
    created_at: usize,
    milestone: usize,
    lesson: usize,
    progress: usize,
    phase: Option<usize>,
    width: usize,
}

impl Columns {
    fn from_header(header: &csv::ByteRecord) -> Result<Self, SessionsError> {
        let names: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let raw = if i == 0 {
                    raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
                } else {
                    raw
                };
                String::from_utf8_lossy(raw).trim().to_ascii_lowercase()
            })
            .collect();
        // The first column with a given name wins.
        let find = |name: &str| names.iter().position(|n| n == name);
        let need = |name: &'static str| find(name).ok_or(SessionsError::MissingColumn(name));
        Ok(Self {
            user_id: need("user_id")?,
            session_id: need("session_id")?,
            created_at: need("created_at")?,
            milestone: need("milestone")?,
            lesson: need("lesson")?,
            progress: need("progress")?,
            phase: find("phase"),
            width: names.len(),
        })
    }
}

/// Streams the rows of a sessions CSV, one [`SessionRow`] per data row.
///
/// Created by [`parse_sessions`]. Memory is bounded by the longest row. The
/// iterator yields `Err` only for a failure of the underlying reader (the
/// file can not be read any further); bad rows are `Ok(Err(SessionReject))`.
pub struct SessionRows<R: Read> {
    reader: csv::Reader<R>,
    columns: Columns,
    record: csv::ByteRecord,
    next_row: u64,
    failed: bool,
}

/// Starts reading a sessions CSV: checks the header, then streams the rows.
///
/// The header must name `user_id,session_id,created_at,milestone,lesson,progress`
/// (any order, case-insensitive, surrounding whitespace ignored) and may name
/// `phase`; other columns are ignored. Values are trimmed. `created_at` is
/// RFC 3339 or epoch milliseconds. The phase is `phase` when present and
/// non-empty, else `lesson`. Blank lines are skipped by the CSV reader and do
/// not count as rows; every other data row, kept or rejected, advances `row`.
///
/// Row checks, first failure wins: wrong number of fields or a needed field
/// that is not UTF-8 → `bad_csv_row`; empty user id → `missing_user_id`;
/// empty session id → `missing_session_id`; empty `created_at` →
/// `missing_timestamp`, unparseable → `bad_timestamp`; no phase →
/// `missing_phase`.
pub fn parse_sessions<R: Read>(r: R) -> Result<SessionRows<R>, SessionsError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(r);
    let header = reader.byte_headers()?.clone();
    if header.is_empty() {
        return Err(SessionsError::Empty);
    }
    let columns = Columns::from_header(&header)?;
    Ok(SessionRows {
        reader,
        columns,
        record: csv::ByteRecord::new(),
        next_row: 0,
        failed: false,
    })
}

impl<R: Read> Iterator for SessionRows<R> {
    type Item = Result<SessionRow, SessionsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let row = self.next_row;
                self.next_row += 1;
                Some(Ok(row_to_session(&self.columns, &self.record, row)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(SessionsError::Csv(e)))
            }
        }
    }
}

fn reject(row: u64, reason: RejectReason, detail: impl Into<String>) -> SessionReject {
    SessionReject {
        row,
        reason,
        detail: detail.into(),
    }
}

fn row_to_session(c: &Columns, rec: &csv::ByteRecord, row: u64) -> SessionRow {
    if rec.len() != c.width {
        return Err(reject(
            row,
            RejectReason::BadCsvRow,
            format!("expected {} fields, found {}", c.width, rec.len()),
        ));
    }
    let field = |i: usize, name: &str| -> Result<&str, SessionReject> {
        let raw = rec.get(i).unwrap_or_default();
        std::str::from_utf8(raw)
            .map(str::trim)
            .map_err(|_| reject(row, RejectReason::BadCsvRow, format!("{name} is not UTF-8")))
    };
    let user_id = field(c.user_id, "user_id")?;
    let session_id = field(c.session_id, "session_id")?;
    let created_at = field(c.created_at, "created_at")?;
    let milestone = field(c.milestone, "milestone")?;
    let lesson = field(c.lesson, "lesson")?;
    let progress = field(c.progress, "progress")?;
    let phase = match c.phase {
        Some(i) => field(i, "phase")?,
        None => "",
    };
    if user_id.is_empty() {
        return Err(reject(row, RejectReason::MissingUserId, "empty user_id"));
    }
    if session_id.is_empty() {
        return Err(reject(
            row,
            RejectReason::MissingSessionId,
            "empty session_id",
        ));
    }
    if created_at.is_empty() {
        return Err(reject(
            row,
            RejectReason::MissingTimestamp,
            "empty created_at",
        ));
    }
    let created_at = parse_timestamp_str(created_at).map_err(|e: TimestampError| {
        reject(row, RejectReason::BadTimestamp, format!("created_at: {e}"))
    })?;
    let phase = if phase.is_empty() { lesson } else { phase };
    if phase.is_empty() {
        return Err(reject(
            row,
            RejectReason::MissingPhase,
            "neither phase nor lesson is set",
        ));
    }
    Ok(Session {
        user_id: user_id.to_string(),
        session_id: session_id.to_string(),
        created_at,
        milestone: milestone.to_string(),
        lesson: lesson.to_string(),
        progress: progress.to_string(),
        phase: phase.to_string(),
        row,
    })
}

/// Every row of a sessions file, split into kept sessions and rejects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedSessions {
    /// The well-formed sessions, in file order.
    pub sessions: Vec<Session>,
    /// The rejected rows, in file order.
    pub rejects: Vec<SessionReject>,
}

/// Reads a whole sessions CSV into memory (see [`parse_sessions`] for the rules).
pub fn read_sessions<R: Read>(r: R) -> Result<ParsedSessions, SessionsError> {
    let mut out = ParsedSessions::default();
    for item in parse_sessions(r)? {
        match item? {
            Ok(s) => out.sessions.push(s),
            Err(rej) => out.rejects.push(rej),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_timestamp_str;

    fn parse(s: &str) -> ParsedSessions {
        read_sessions(s.as_bytes()).expect("readable")
    }

    #[test]
    fn a_session_borrowed_serializes_like_its_owned_match() {
        let rows = parse(
            "user_id,session_id,created_at,milestone,lesson,progress,phase\nu1,s1,2024-05-01T10:00:00Z,M1,L2,3.50,\n",
        );
        let s = &rows.sessions[0];
        let owned = serde_json::to_string(&SessionMatch::from(s)).unwrap();
        let borrowed = serde_json::to_string(&SessionMatchRef::from(s)).unwrap();
        assert_eq!(owned, borrowed);
        // The phase falls back to the lesson: the borrowed form carries it.
        assert!(borrowed.contains(r#""phase":"L2""#), "{borrowed}");
    }

    #[test]
    fn parses_rows_in_any_column_order_and_ignores_extra_columns() {
        let p = parse(
            "extra,progress,lesson,milestone,created_at,session_id,user_id\n\
             x, 40 ,P3,M1,2024-03-01T10:00:00Z,s1, 42 \n\
             y,50,P4,M2,1709287200000,s2,43\n",
        );
        assert!(p.rejects.is_empty(), "{:?}", p.rejects);
        assert_eq!(p.sessions.len(), 2);
        let s = &p.sessions[0];
        assert_eq!(s.user_id, "42");
        assert_eq!(s.session_id, "s1");
        assert_eq!(s.progress, "40");
        assert_eq!(s.phase, "P3");
        assert_eq!(s.row, 0);
        assert_eq!(p.sessions[1].row, 1);
        assert_eq!(
            p.sessions[1].created_at,
            parse_timestamp_str("2024-03-01T10:00:00Z").unwrap()
        );
    }

    #[test]
    fn phase_column_wins_when_non_empty() {
        let p = parse(
            "user_id,session_id,created_at,milestone,lesson,progress,phase\n\
             1,a,2024-03-01T10:00:00Z,M,L1,0,S1\n\
             1,b,2024-03-01T10:00:00Z,M,L2,0,\n",
        );
        assert_eq!(p.sessions[0].phase, "S1");
        assert_eq!(p.sessions[0].lesson, "L1");
        assert_eq!(p.sessions[1].phase, "L2");
    }

    #[test]
    fn missing_required_column_fails_the_file() {
        let err = read_sessions("user_id,session_id,created_at,milestone,lesson\n".as_bytes())
            .unwrap_err();
        assert!(
            matches!(err, SessionsError::MissingColumn("progress")),
            "{err}"
        );
        assert!(matches!(
            read_sessions("".as_bytes()),
            Err(SessionsError::Empty | SessionsError::MissingColumn(_))
        ));
    }

    #[test]
    fn header_is_case_insensitive_and_bom_tolerant() {
        let p = parse(
            "\u{feff}User_ID , Session_Id,CREATED_AT,milestone,lesson,progress\n\
             1,a,2024-03-01T10:00:00Z,M,P1,0\n",
        );
        assert_eq!(p.sessions.len(), 1);
    }

    #[test]
    fn bad_rows_are_rejected_with_row_numbers_and_counted() {
        let mut input = b"user_id,session_id,created_at,milestone,lesson,progress,phase\n".to_vec();
        input.extend_from_slice(b"1,a,2024-03-01T10:00:00Z,M,P1,0,\n"); // 0 ok
        input.extend_from_slice(b"1,a,yesterday,M,P1,0,\n"); // 1 bad ts
        input.extend_from_slice(b",a,2024-03-01T10:00:00Z,M,P1,0,\n"); // 2 no user
        input.extend_from_slice(b"1, ,2024-03-01T10:00:00Z,M,P1,0,\n"); // 3 no session
        input.extend_from_slice(b"1,a,2024-03-01T10:00:00Z,M,,0,\n"); // 4 no phase
        input.extend_from_slice(b"1,a,2024-03-01T10:00:00Z,M,P1\n"); // 5 short row
        input.extend_from_slice(b"1,a\xff,2024-03-01T10:00:00Z,M,P1,0,\n"); // 6 bad utf-8
        input.extend_from_slice(b"1,a,,M,P1,0,\n"); // 7 empty created_at
        input.extend_from_slice(b"2,b,1709287200000,M,P2,1,\n"); // 8 ok
        let p = read_sessions(input.as_slice()).unwrap();
        let got: Vec<(u64, RejectReason)> = p.rejects.iter().map(|r| (r.row, r.reason)).collect();
        assert_eq!(
            got,
            vec![
                (1, RejectReason::BadTimestamp),
                (2, RejectReason::MissingUserId),
                (3, RejectReason::MissingSessionId),
                (4, RejectReason::MissingPhase),
                (5, RejectReason::BadCsvRow),
                (6, RejectReason::BadCsvRow),
                (7, RejectReason::MissingTimestamp),
            ]
        );
        assert_eq!(
            p.sessions.iter().map(|s| s.row).collect::<Vec<_>>(),
            vec![0, 8]
        );
        assert_eq!(
            p.rejects
                .iter()
                .filter(|r| r.reason == RejectReason::BadCsvRow)
                .count(),
            2
        );
    }

    #[test]
    fn quoted_fields_are_unquoted() {
        let p = parse(
            "user_id,session_id,created_at,milestone,lesson,progress\n\
             \"7\",\"s,1\",\"2024-03-01T10:00:00Z\",\"M \"\"x\"\"\",P1,0\n",
        );
        assert_eq!(p.sessions[0].session_id, "s,1");
        assert_eq!(p.sessions[0].milestone, "M \"x\"");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut input = b"user_id,session_id,created_at,milestone,lesson,progress\n".to_vec();
            input.extend_from_slice(&body);
            if let Ok(rows) = parse_sessions(input.as_slice()) {
                for (expected_row, item) in rows.enumerate() {
                    let row = match item {
                        Ok(Ok(s)) => s.row,
                        Ok(Err(r)) => r.row,
                        Err(_) => break,
                    };
                    proptest::prop_assert_eq!(row, expected_row as u64);
                }
            }
        }
    }
}
