//! One activity record: a JSON object (one line, or one element of a JSON
//! array) turned into an [`ActivityRecord`], a drop (non-English, unselected
//! learner) or a typed reject — docs/data-contracts.md "Activity log".
//!
//! Each line is read once into a borrowed view of the fields the contract
//! names: keys are matched against the alias table without allocating,
//! strings stay borrowed from the line unless they contain escapes, unknown
//! fields are skipped. Flat objects (nearly every log line) take a
//! hand-written scanner (`flat.rs`); anything it does not read completely
//! takes a serde_json pass ([`IgnoredAny`] for unknown fields), which decides
//! exactly as before. Field values are captured whatever their JSON type, so
//! the only way reading fails is malformed JSON, and every other problem is
//! classified precisely afterwards, without a second parse.
//!
//! Rules that the contract leaves open, decided here:
//! - **Alias precedence**: when several spellings of a field are present, the
//!   canonical name wins, then the aliases in the order of docs/data-contracts.md (e.g.
//!   `user_id` > `userId` > `learner_id` > `virtual_id`). When the same key
//!   appears twice, the last occurrence wins (as in `serde_json::Value`).
//! - **Language**: a record with no language field, a `null` one or a
//!   non-string one is *not English*: it is dropped and counted as
//!   `non_english`, like any other language. The value is trimmed first.
//! - **user_id**: strings are trimmed (as the sessions CSV is), an empty
//!   string or `null` is missing; integers become their decimal string;
//!   anything else (fractions, `1e3`, booleans, arrays, objects) is `bad_user_id`.
//! - **timestamp**: an empty string or `null` is missing; strings go through
//!   [`parse_timestamp_str`] (RFC 3339, or digits as epoch ms); integers, and
//!   floats with no fraction, are epoch milliseconds.
//! - **audio_url**: kept exactly as written; an empty or blank string counts as
//!   no audio, like `null`.
//! - **accuracy**: a JSON number in 0–100 inclusive; a string such as `"85"`
//!   is `bad_accuracy`.
//! - **Pass-through text fields**: strings as written; numbers and booleans as
//!   their JSON text; `null`, arrays and objects are treated as absent.
//! - **Check order** (first failure wins): not UTF-8 → invalid JSON → not an
//!   object → not English (dropped) → user id → learner not selected
//!   (dropped) → timestamp → accuracy → audio URL. Non-English and unselected
//!   records are therefore dropped before their other fields are validated or
//!   any hashing or timestamp parsing is done.

use std::borrow::Cow;
use std::fmt;

#[cfg(test)]
use engage_model::response_id;
use engage_model::time::{TimestampError, from_epoch_millis, parse_timestamp_str};
use engage_model::{ActivityRecord, RejectReason, Timestamp, response_id_bytes};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What a well-formed line turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// An English record of a selected learner, normalised.
    Record(ActivityRecord),
    /// The record is not in English (or names no language): dropped, counted.
    NonEnglish,
    /// The learner is not in the batch's selection: dropped, counted.
    Deselected,
}

/// Why a line was rejected. Each variant maps to one [`RejectReason`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The line is not valid UTF-8.
    #[error("not valid UTF-8 after byte {valid_up_to}")]
    InvalidUtf8 {
        /// Length of the valid UTF-8 prefix.
        valid_up_to: usize,
    },
    /// The line is not valid JSON (the parser's message, with the column).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The line is JSON but not an object.
    #[error("JSON value is {0}, not an object")]
    NotAnObject(&'static str),
    /// No user id (absent, `null` or empty).
    #[error("no user_id")]
    MissingUserId,
    /// The user id is neither a string nor an integer.
    #[error("user_id is {0}, not a string or an integer")]
    BadUserId(&'static str),
    /// No timestamp (absent, `null` or empty).
    #[error("no timestamp")]
    MissingTimestamp,
    /// The timestamp does not parse or is out of range.
    #[error("bad timestamp: {0}")]
    BadTimestamp(String),
    /// The accuracy is not a number in 0–100.
    #[error("accuracy {0} is not a number in 0-100")]
    BadAccuracy(String),
    /// The audio URL is neither a string nor `null`.
    #[error("audio_url is {0}, not a string")]
    BadAudioUrl(&'static str),
    /// The line is longer than the configured limit (it was skipped unread).
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The configured limit in bytes.
        limit: usize,
    },
}

impl RecordError {
    /// The stable reject reason for the rejects file and the counters.
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::InvalidUtf8 { .. } => RejectReason::InvalidUtf8,
            Self::InvalidJson(_) => RejectReason::InvalidJson,
            Self::NotAnObject(_) => RejectReason::NotAnObject,
            Self::MissingUserId => RejectReason::MissingUserId,
            Self::BadUserId(_) => RejectReason::BadUserId,
            Self::MissingTimestamp => RejectReason::MissingTimestamp,
            Self::BadTimestamp(_) => RejectReason::BadTimestamp,
            Self::BadAccuracy(_) => RejectReason::BadAccuracy,
            Self::BadAudioUrl(_) => RejectReason::BadAudioUrl,
            Self::LineTooLong { .. } => RejectReason::LineTooLong,
        }
    }
}

/// Whether a language tag means English: case-insensitive `en`, `en-*`,
/// `en_*`, `eng` or `english`, after trimming whitespace.
pub fn is_english(lang: &str) -> bool {
    let l = lang.trim().as_bytes();
    match l.len() {
        2 => l.eq_ignore_ascii_case(b"en"),
        3 => l.eq_ignore_ascii_case(b"eng"),
        _ => {
            l.eq_ignore_ascii_case(b"english")
                || (l.len() > 3
                    && l[..2].eq_ignore_ascii_case(b"en")
                    && matches!(l[2], b'-' | b'_'))
        }
    }
}

/// Parses one line with every learner selected.
pub fn parse_record(line: &[u8]) -> Result<Parsed, RecordError> {
    parse_record_with(line, |_| true)
}

/// Parses one line; `selected(user_id)` decides whether the learner is in the
/// batch (checked right after the user id, before the costlier fields).
pub fn parse_record_with(
    line: &[u8],
    selected: impl FnOnce(&str) -> bool,
) -> Result<Parsed, RecordError> {
    Ok(match parse_view_with(line, selected)? {
        ParsedView::Record(v) => Parsed::Record(v.into_record()),
        ParsedView::NonEnglish => Parsed::NonEnglish,
        ParsedView::Deselected => Parsed::Deselected,
    })
}

/// What a well-formed line turned into, borrowing from the line: what the
/// cleaner works with, so a kept record costs no allocation unless a field
/// had JSON escapes or was a number.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedView<'a> {
    /// An English record of a selected learner, normalised.
    Record(RecordView<'a>),
    /// The record is not in English (or names no language): dropped, counted.
    NonEnglish,
    /// The learner is not in the batch's selection: dropped, counted.
    Deselected,
}

/// A kept record borrowed from its line: [`ActivityRecord`] without the
/// copies, and its response id as bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView<'a> {
    /// The response id's bytes ([`ActivityRecord::response_id`] is their hex).
    pub id: [u8; 16],
    /// The learner (trimmed; integers as their decimal string).
    pub user_id: Cow<'a, str>,
    /// The response's instant (ns since epoch, UTC).
    pub timestamp: Timestamp,
    /// The audio link as written, if any.
    pub audio_url: Option<Cow<'a, str>>,
    /// Accuracy 0–100, if present.
    pub accuracy: Option<f64>,
    /// The prompt text, passed through.
    pub original_text: Option<Cow<'a, str>>,
    /// The learner's answer text, passed through.
    pub response_text: Option<Cow<'a, str>>,
    /// The product's session id, passed through.
    pub session_id: Option<Cow<'a, str>>,
    /// The product's sub-session id, passed through.
    pub sub_session_id: Option<Cow<'a, str>>,
}

impl RecordView<'_> {
    /// The response id as the integer the duplicate window keys on.
    pub fn id_u128(&self) -> u128 {
        u128::from_be_bytes(self.id)
    }

    /// The owned record.
    pub fn into_record(self) -> ActivityRecord {
        ActivityRecord {
            response_id: hex_id(&self.id).iter().map(|&b| char::from(b)).collect(),
            user_id: self.user_id.into_owned(),
            timestamp: self.timestamp,
            audio_url: self.audio_url.map(Cow::into_owned),
            accuracy: self.accuracy,
            original_text: self.original_text.map(Cow::into_owned),
            response_text: self.response_text.map(Cow::into_owned),
            session_id: self.session_id.map(Cow::into_owned),
            sub_session_id: self.sub_session_id.map(Cow::into_owned),
        }
    }

    /// Appends the record as one JSON object, byte for byte what
    /// `serde_json::to_writer(&record)` writes for the owned
    /// [`ActivityRecord`] (the spool and `cleaned.jsonl` format), without
    /// building it. No newline.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.extend_from_slice(b"{\"response_id\":\"");
        out.extend_from_slice(&hex_id(&self.id));
        out.extend_from_slice(b"\",\"user_id\":");
        write_json_str(out, &self.user_id)?;
        out.extend_from_slice(b",\"timestamp\":");
        serde_json::to_writer(&mut *out, &self.timestamp)?;
        if let Some(u) = &self.audio_url {
            out.extend_from_slice(b",\"audio_url\":");
            write_json_str(out, u)?;
        }
        if let Some(a) = self.accuracy {
            out.extend_from_slice(b",\"accuracy\":");
            serde_json::to_writer(&mut *out, &a)?;
        }
        for (name, v) in [
            (&b",\"original_text\":"[..], &self.original_text),
            (b",\"response_text\":", &self.response_text),
            (b",\"session_id\":", &self.session_id),
            (b",\"sub_session_id\":", &self.sub_session_id),
        ] {
            if let Some(v) = v {
                out.extend_from_slice(name);
                write_json_str(out, v)?;
            }
        }
        out.push(b'}');
        Ok(())
    }
}

/// The 32 lowercase hex digits of an id (what `hex::encode` gives).
pub(crate) fn hex_id(id: &[u8; 16]) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in id.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

/// Whether serde_json writes `s` as is between quotes: no `"`, `\\` or
/// control character. Checked 16 bytes at a time without an early exit
/// inside a block, so the compiler vectorises it.
fn json_plain(s: &str) -> bool {
    let bad = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut blocks = s.as_bytes().chunks_exact(16);
    for block in &mut blocks {
        if block.iter().fold(false, |acc, &b| acc | bad(b)) {
            return false;
        }
    }
    !blocks.remainder().iter().any(|&b| bad(b))
}

/// Appends `s` as a JSON string exactly as serde_json writes it.
fn write_json_str(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    if json_plain(s) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}

/// Parses one line into a borrowed view; `selected(user_id)` decides whether
/// the learner is in the batch (checked right after the user id, before the
/// costlier fields).
pub fn parse_view_with<'a>(
    line: &'a [u8],
    selected: impl FnOnce(&str) -> bool,
) -> Result<ParsedView<'a>, RecordError> {
    // simdutf8: the same answer as `std::str::from_utf8`, several times
    // faster on the long ASCII runs of a log.
    let text = simdutf8::compat::from_utf8(line).map_err(|e| RecordError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let mut fields = Fields::default();
    match read_fields(text, &mut fields) {
        Ok(None) => {}
        Ok(Some(kind)) => return Err(RecordError::NotAnObject(kind)),
        Err(e) => return Err(RecordError::InvalidJson(e.to_string())),
    }
    let english = matches!(fields.get(Field::Language), Some(Val::Str(s)) if is_english(s));
    if !english {
        return Ok(ParsedView::NonEnglish);
    }
    let user_id = user_id(fields.take(Field::UserId))?;
    if !selected(&user_id) {
        return Ok(ParsedView::Deselected);
    }
    let timestamp = timestamp(fields.get(Field::Timestamp))?;
    let accuracy = accuracy(fields.get(Field::Accuracy))?;
    let audio_url = audio_url(fields.take(Field::AudioUrl))?;
    let id = response_id_bytes(&user_id, timestamp, audio_url.as_deref());
    Ok(ParsedView::Record(RecordView {
        id,
        user_id,
        timestamp,
        audio_url,
        accuracy,
        original_text: text_field(fields.take(Field::OriginalText)),
        response_text: text_field(fields.take(Field::ResponseText)),
        session_id: text_field(fields.take(Field::SessionId)),
        sub_session_id: text_field(fields.take(Field::SubSessionId)),
    }))
}

fn user_id(v: Option<Val<'_>>) -> Result<Cow<'_, str>, RecordError> {
    match v {
        None | Some(Val::Null) => Err(RecordError::MissingUserId),
        Some(Val::Str(s)) => {
            let trimmed = s.trim();
            if trimmed.is_empty() {
                Err(RecordError::MissingUserId)
            } else if trimmed.len() == s.len() {
                Ok(s)
            } else {
                Ok(match s {
                    Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
                    Cow::Owned(o) => Cow::Owned(o.trim().to_string()),
                })
            }
        }
        Some(Val::I64(i)) => Ok(Cow::Owned(i.to_string())),
        Some(Val::U64(u)) => Ok(Cow::Owned(u.to_string())),
        Some(other) => Err(RecordError::BadUserId(other.kind())),
    }
}

fn timestamp(v: Option<&Val<'_>>) -> Result<Timestamp, RecordError> {
    let bad = |e: TimestampError| RecordError::BadTimestamp(e.to_string());
    match v {
        None | Some(Val::Null) => Err(RecordError::MissingTimestamp),
        Some(Val::Str(s)) if s.trim().is_empty() => Err(RecordError::MissingTimestamp),
        Some(Val::Str(s)) => match rfc3339_fast(s) {
            Some(ts) => Ok(ts),
            None => parse_timestamp_str(s).map_err(bad),
        },
        Some(Val::I64(ms)) => from_epoch_millis(*ms).map_err(bad),
        Some(Val::U64(ms)) => i64::try_from(*ms)
            .map_err(|_| TimestampError::OutOfRange)
            .and_then(from_epoch_millis)
            .map_err(bad),
        // Integral floats such as 1.7e12 are epoch ms, as in `parse_timestamp_json`.
        Some(Val::F64(f)) if f.fract() == 0.0 && f.abs() < 9.2e15 => {
            from_epoch_millis(*f as i64).map_err(bad)
        }
        Some(Val::F64(_)) => Err(RecordError::BadTimestamp(
            "epoch milliseconds with a fraction".into(),
        )),
        Some(other) => Err(RecordError::BadTimestamp(format!(
            "{} is not a string or an integer",
            other.kind()
        ))),
    }
}

/// The common shape of an RFC 3339 timestamp, `YYYY-MM-DDTHH:MM:SS`, an
/// optional fraction of 1–9 digits, then `Z` or `±HH:MM`, read without
/// chrono; `None` for anything else (other spellings, leap seconds, years
/// outside 1678–2261), which then takes [`parse_timestamp_str`]'s full
/// path. Where it answers, it answers as that path does (a property test
/// checks it against chrono).
fn rfc3339_fast(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut n = 0i64;
        for &c in b.get(r)? {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(c - b'0');
        }
        Some(n)
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut i = 19;
    let mut nanos = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let n = end - start;
        if !(1..=9).contains(&n) {
            return None;
        }
        nanos = digits(start..end)? * 10i64.pow((9 - n) as u32);
        i = end;
    }
    let offset_secs = match b.get(i..)? {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1678..=2261).contains(&year)
        || day < 1
        || day > month_days
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    // Days from 1970-01-01 (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn accuracy(v: Option<&Val<'_>>) -> Result<Option<f64>, RecordError> {
    let n = match v {
        None | Some(Val::Null) => return Ok(None),
        Some(Val::I64(i)) => *i as f64,
        Some(Val::U64(u)) => *u as f64,
        Some(Val::F64(f)) => *f,
        Some(other) => return Err(RecordError::BadAccuracy(other.kind().to_string())),
    };
    if (0.0..=100.0).contains(&n) {
        Ok(Some(n))
    } else {
        Err(RecordError::BadAccuracy(n.to_string()))
    }
}

fn audio_url(v: Option<Val<'_>>) -> Result<Option<Cow<'_, str>>, RecordError> {
    match v {
        None | Some(Val::Null) => Ok(None),
        Some(Val::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Val::Str(s)) => Ok(Some(s)),
        Some(other) => Err(RecordError::BadAudioUrl(other.kind())),
    }
}

fn text_field(v: Option<Val<'_>>) -> Option<Cow<'_, str>> {
    match v? {
        Val::Str(s) => Some(s),
        Val::I64(i) => Some(Cow::Owned(i.to_string())),
        Val::U64(u) => Some(Cow::Owned(u.to_string())),
        Val::F64(f) => Some(Cow::Owned(f.to_string())),
        Val::Bool(b) => Some(Cow::Owned(b.to_string())),
        Val::Null | Val::Compound(_) => None,
    }
}

// ---------------------------------------------------------------------------
// The borrowed, single-pass view of one JSON object.
// ---------------------------------------------------------------------------

/// The fields the cleaner reads, in slot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    UserId,
    Language,
    Timestamp,
    AudioUrl,
    Accuracy,
    OriginalText,
    ResponseText,
    SessionId,
    SubSessionId,
}

pub(super) const FIELD_COUNT: usize = 9;

/// Every field, in slot order.
pub(super) const FIELDS: [Field; FIELD_COUNT] = [
    Field::UserId,
    Field::Language,
    Field::Timestamp,
    Field::AudioUrl,
    Field::Accuracy,
    Field::OriginalText,
    Field::ResponseText,
    Field::SessionId,
    Field::SubSessionId,
];

/// Maps a key to (field, rank); rank 0 is the canonical name. Exact match.
pub(super) fn lookup_key(key: &str) -> Option<(Field, u8)> {
    Some(match key {
        "user_id" => (Field::UserId, 0),
        "userId" => (Field::UserId, 1),
        "learner_id" => (Field::UserId, 2),
        "virtual_id" => (Field::UserId, 3),
        "language" => (Field::Language, 0),
        "lang" => (Field::Language, 1),
        "language_code" => (Field::Language, 2),
        "timestamp" => (Field::Timestamp, 0),
        "created_at" => (Field::Timestamp, 1),
        "ets" => (Field::Timestamp, 2),
        "audio_url" => (Field::AudioUrl, 0),
        "audio_link" => (Field::AudioUrl, 1),
        "audioUrl" => (Field::AudioUrl, 2),
        "audio" => (Field::AudioUrl, 3),
        "accuracy" => (Field::Accuracy, 0),
        "score" => (Field::Accuracy, 1),
        "original_text" => (Field::OriginalText, 0),
        "response_text" => (Field::ResponseText, 0),
        "session_id" => (Field::SessionId, 0),
        "sub_session_id" => (Field::SubSessionId, 0),
        _ => return None,
    })
}

/// A JSON value as captured, whatever its type; strings borrow from the line
/// unless they contain escapes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    /// An array or an object (skipped, only its kind is kept).
    Compound(&'static str),
}

impl Val<'_> {
    /// "a string", "an array", … for reject details.
    fn kind(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "a boolean",
            Val::I64(_) | Val::U64(_) => "an integer",
            Val::F64(_) => "a non-integer number",
            Val::Str(_) => "a string",
            Val::Compound(k) => k,
        }
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Val::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Val::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Val::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Val::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Val::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Val::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Val::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Val::Compound("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Val::Compound("an object"))
    }
}

impl<'de> de::Deserialize<'de> for Val<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

/// A key: one of ours with its rank, or anything else. Never allocates.
struct Key(Option<(Field, u8)>);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(lookup_key(v)))
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The captured fields of one object: per field, the best-ranked value seen.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Fields<'a> {
    slots: [Option<(u8, Val<'a>)>; FIELD_COUNT],
}

impl<'a> Fields<'a> {
    fn get(&self, f: Field) -> Option<&Val<'a>> {
        self.slots[f as usize].as_ref().map(|(_, v)| v)
    }
    fn take(&mut self, f: Field) -> Option<Val<'a>> {
        self.slots[f as usize].take().map(|(_, v)| v)
    }
    pub(super) fn put(&mut self, f: Field, rank: u8, v: Val<'a>) {
        let slot = &mut self.slots[f as usize];
        // Lower rank wins; for the same key, the later occurrence wins.
        if slot.as_ref().is_none_or(|(r, _)| rank <= *r) {
            *slot = Some((rank, v));
        }
    }
}

/// Deserializes the top-level value of a line *into* a [`Fields`] owned by
/// the caller (no large value is moved around per line). Yields `None` for an
/// object, or the kind of non-object it was.
struct TopSeed<'f, 'de>(&'f mut Fields<'de>);

impl<'de> de::DeserializeSeed<'de> for TopSeed<'_, 'de> {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, 'de> {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match key {
                Some((field, rank)) => self.0.put(field, rank, map.next_value::<Val>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some("an array"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Some("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Some("a string"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Some("null"))
    }
}

/// Parses one JSON text into `fields` (must be empty). Trailing non-whitespace
/// is an error, as with `serde_json::from_str`. Flat objects take the
/// hand-written scanner ([`super::flat`]); everything else serde_json.
fn read_fields<'de>(
    text: &'de str,
    fields: &mut Fields<'de>,
) -> Result<Option<&'static str>, serde_json::Error> {
    if super::flat::read_flat(text, fields).is_some() {
        return Ok(None);
    }
    read_fields_serde(text, fields)
}

/// [`read_fields`] by serde_json alone: the reference the scanner agrees with.
fn read_fields_serde<'de>(
    text: &'de str,
    fields: &mut Fields<'de>,
) -> Result<Option<&'static str>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let kind = de::DeserializeSeed::deserialize(TopSeed(fields), &mut de)?;
    de.end()?;
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engage_model::parse_timestamp_str;
    use proptest::prelude::*;

    fn record(line: &str) -> ActivityRecord {
        match parse_record(line.as_bytes()) {
            Ok(Parsed::Record(r)) => r,
            other => panic!("expected a record from {line}, got {other:?}"),
        }
    }

    fn reason(line: &[u8]) -> RejectReason {
        match parse_record(line) {
            Err(e) => e.reason(),
            other => panic!("expected a reject, got {other:?}"),
        }
    }

    const TS: &str = "2024-03-01T10:00:00Z";

    #[test]
    fn fields_are_listed_in_slot_order() {
        for (i, f) in FIELDS.into_iter().enumerate() {
            assert_eq!(f as usize, i);
        }
    }

    #[test]
    fn canonical_fields_are_read() {
        let r = record(
            r#"{"user_id":"u1","language":"en","timestamp":"2024-03-01T10:00:00Z",
                "audio_url":"s3://b/k.wav","accuracy":87.5,"original_text":"hello",
                "response_text":"helo","session_id":"s1","sub_session_id":"ss1","extra":{"x":[1,2]}}"#,
        );
        assert_eq!(r.user_id, "u1");
        assert_eq!(r.timestamp, parse_timestamp_str(TS).unwrap());
        assert_eq!(r.audio_url.as_deref(), Some("s3://b/k.wav"));
        assert_eq!(r.accuracy, Some(87.5));
        assert_eq!(r.original_text.as_deref(), Some("hello"));
        assert_eq!(r.response_text.as_deref(), Some("helo"));
        assert_eq!(r.session_id.as_deref(), Some("s1"));
        assert_eq!(r.sub_session_id.as_deref(), Some("ss1"));
        assert_eq!(
            r.response_id,
            response_id("u1", r.timestamp, Some("s3://b/k.wav"))
        );
    }

    #[test]
    fn every_alias_is_understood() {
        for user in ["user_id", "userId", "learner_id", "virtual_id"] {
            for lang in ["language", "lang", "language_code"] {
                for ts in ["timestamp", "created_at", "ets"] {
                    for audio in ["audio_url", "audio_link", "audioUrl", "audio"] {
                        for acc in ["accuracy", "score"] {
                            let line = format!(
                                r#"{{"{user}":"u","{lang}":"en","{ts}":"{TS}","{audio}":"s3://b/k","{acc}":50}}"#
                            );
                            let r = record(&line);
                            assert_eq!(r.user_id, "u", "{line}");
                            assert_eq!(r.audio_url.as_deref(), Some("s3://b/k"), "{line}");
                            assert_eq!(r.accuracy, Some(50.0), "{line}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn canonical_name_wins_over_aliases_in_any_order() {
        let r = record(&format!(
            r#"{{"userId":"alias","user_id":"canon","learner_id":"x","lang":"fr","language":"en","ets":1,"timestamp":"{TS}","audio":"a","audio_url":"b","score":1,"accuracy":2}}"#
        ));
        assert_eq!(r.user_id, "canon");
        assert_eq!(r.timestamp, parse_timestamp_str(TS).unwrap());
        assert_eq!(r.audio_url.as_deref(), Some("b"));
        assert_eq!(r.accuracy, Some(2.0));
        // Among aliases, the earlier one in the data contract's list wins.
        let r = record(&format!(
            r#"{{"virtual_id":"v","learner_id":"l","lang":"en","timestamp":"{TS}"}}"#
        ));
        assert_eq!(r.user_id, "l");
        // The same key twice: the last one wins.
        let r = record(&format!(
            r#"{{"user_id":"first","user_id":"last","lang":"en","timestamp":"{TS}"}}"#
        ));
        assert_eq!(r.user_id, "last");
    }

    #[test]
    fn english_rules() {
        for yes in [
            "en", "EN", "En", "en-IN", "en_GB", "EN-us", "eng", "ENG", "English", "english", " en ",
        ] {
            assert!(is_english(yes), "{yes}");
        }
        for no in [
            "fr", "enx", "", "e", "en-", "en_", "engl", "englishx", "hi-en", "es", "enIN",
        ] {
            assert!(!is_english(no), "{no}");
        }
    }

    #[test]
    fn non_english_and_missing_language_are_dropped_not_rejected() {
        for line in [
            format!(r#"{{"user_id":"u","language":"fr","timestamp":"{TS}"}}"#),
            format!(r#"{{"user_id":"u","timestamp":"{TS}"}}"#),
            format!(r#"{{"user_id":"u","language":null,"timestamp":"{TS}"}}"#),
            format!(r#"{{"user_id":"u","language":7,"timestamp":"{TS}"}}"#),
            format!(r#"{{"user_id":"u","language":"enx","timestamp":"{TS}"}}"#),
            // Language is checked before the other fields.
            r#"{"language":"hi","timestamp":"garbage"}"#.to_string(),
        ] {
            assert_eq!(
                parse_record(line.as_bytes()),
                Ok(Parsed::NonEnglish),
                "{line}"
            );
        }
    }

    #[test]
    fn integer_user_ids_become_decimal_strings() {
        let a = record(&format!(
            r#"{{"user_id":12345,"lang":"en","timestamp":"{TS}"}}"#
        ));
        let b = record(&format!(
            r#"{{"user_id":"12345","lang":"en","timestamp":"{TS}"}}"#
        ));
        let c = record(&format!(
            r#"{{"user_id":-7,"lang":"en","timestamp":"{TS}"}}"#
        ));
        let d = record(&format!(
            r#"{{"user_id":" 12345 ","lang":"en","timestamp":"{TS}"}}"#
        ));
        assert_eq!(a.user_id, "12345");
        assert_eq!(a.response_id, b.response_id);
        assert_eq!(a.response_id, d.response_id);
        assert_eq!(c.user_id, "-7");
    }

    #[test]
    fn epoch_ms_and_rfc3339_give_the_same_instant_and_id() {
        let a = record(
            r#"{"user_id":"u","lang":"en","timestamp":"2024-03-01T10:00:00Z","audio":"s3://b/k"}"#,
        );
        let b =
            record(r#"{"user_id":"u","lang":"en","timestamp":1709287200000,"audio":"s3://b/k"}"#);
        let c =
            record(r#"{"user_id":"u","lang":"en","timestamp":"1709287200000","audio":"s3://b/k"}"#);
        let d = record(
            r#"{"user_id":"u","lang":"en","timestamp":"2024-03-01T15:30:00+05:30","audio":"s3://b/k"}"#,
        );
        let e =
            record(r#"{"user_id":"u","lang":"en","timestamp":1.7092872e12,"audio":"s3://b/k"}"#);
        for other in [&b, &c, &d, &e] {
            assert_eq!(a.timestamp, other.timestamp);
            assert_eq!(a.response_id, other.response_id);
        }
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let r = record(&format!(
            r#"{{"user\u005fid":"u\"1\\","lang":"en","timestamp":"{TS}","response_text":"line\nbreak \u00e9"}}"#
        ));
        assert_eq!(r.user_id, "u\"1\\");
        assert_eq!(r.response_text.as_deref(), Some("line\nbreak é"));
    }

    #[test]
    fn optional_fields_may_be_null_or_absent() {
        let r = record(&format!(
            r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","audio_url":null,"accuracy":null,"session_id":null}}"#
        ));
        assert_eq!(r.audio_url, None);
        assert_eq!(r.accuracy, None);
        assert_eq!(r.session_id, None);
        let r = record(&format!(
            r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","audio":"  "}}"#
        ));
        assert_eq!(r.audio_url, None);
        assert_eq!(r.response_id, response_id("u", r.timestamp, None));
        let r = record(&format!(
            r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","session_id":42,"sub_session_id":[1]}}"#
        ));
        assert_eq!(r.session_id.as_deref(), Some("42"));
        assert_eq!(r.sub_session_id, None);
        let r = record(&format!(
            r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","accuracy":0}}"#
        ));
        assert_eq!(r.accuracy, Some(0.0));
        let r = record(&format!(
            r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","score":100}}"#
        ));
        assert_eq!(r.accuracy, Some(100.0));
    }

    #[test]
    fn every_reject_reason() {
        use RejectReason as R;
        let cases: Vec<(Vec<u8>, RejectReason)> = vec![
            (b"{\"user_id\":\"u\xff\"}".to_vec(), R::InvalidUtf8),
            (b"{\"user_id\":".to_vec(), R::InvalidJson),
            (b"{\"user_id\":\"u\"} trailing".to_vec(), R::InvalidJson),
            (b"not json".to_vec(), R::InvalidJson),
            (b"{'a':1}".to_vec(), R::InvalidJson),
            (b"[1,2]".to_vec(), R::NotAnObject),
            (b"\"str\"".to_vec(), R::NotAnObject),
            (b"42".to_vec(), R::NotAnObject),
            (b"null".to_vec(), R::NotAnObject),
            (b"true".to_vec(), R::NotAnObject),
            (
                format!(r#"{{"lang":"en","timestamp":"{TS}"}}"#).into_bytes(),
                R::MissingUserId,
            ),
            (
                format!(r#"{{"user_id":"","lang":"en","timestamp":"{TS}"}}"#).into_bytes(),
                R::MissingUserId,
            ),
            (
                format!(r#"{{"user_id":null,"lang":"en","timestamp":"{TS}"}}"#).into_bytes(),
                R::MissingUserId,
            ),
            (
                format!(r#"{{"user_id":1.5,"lang":"en","timestamp":"{TS}"}}"#).into_bytes(),
                R::BadUserId,
            ),
            (
                format!(r#"{{"user_id":true,"lang":"en","timestamp":"{TS}"}}"#).into_bytes(),
                R::BadUserId,
            ),
            (
                format!(r#"{{"user_id":{{}},"lang":"en","timestamp":"{TS}"}}"#).into_bytes(),
                R::BadUserId,
            ),
            (
                br#"{"user_id":"u","lang":"en"}"#.to_vec(),
                R::MissingTimestamp,
            ),
            (
                br#"{"user_id":"u","lang":"en","timestamp":null}"#.to_vec(),
                R::MissingTimestamp,
            ),
            (
                br#"{"user_id":"u","lang":"en","timestamp":""}"#.to_vec(),
                R::MissingTimestamp,
            ),
            (
                br#"{"user_id":"u","lang":"en","timestamp":"yesterday"}"#.to_vec(),
                R::BadTimestamp,
            ),
            (
                br#"{"user_id":"u","lang":"en","timestamp":1.5}"#.to_vec(),
                R::BadTimestamp,
            ),
            (
                br#"{"user_id":"u","lang":"en","timestamp":true}"#.to_vec(),
                R::BadTimestamp,
            ),
            (
                br#"{"user_id":"u","lang":"en","timestamp":99999999999999999999}"#.to_vec(),
                R::BadTimestamp,
            ),
            (
                br#"{"user_id":"u","lang":"en","timestamp":18446744073709551615}"#.to_vec(),
                R::BadTimestamp,
            ),
            (
                format!(r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","accuracy":101}}"#)
                    .into_bytes(),
                R::BadAccuracy,
            ),
            (
                format!(r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","accuracy":-0.5}}"#)
                    .into_bytes(),
                R::BadAccuracy,
            ),
            (
                format!(r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","score":"85"}}"#)
                    .into_bytes(),
                R::BadAccuracy,
            ),
            (
                format!(r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","audio_url":5}}"#)
                    .into_bytes(),
                R::BadAudioUrl,
            ),
            (
                format!(r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","audio":["s3://b/k"]}}"#)
                    .into_bytes(),
                R::BadAudioUrl,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(reason(&line), want, "{}", String::from_utf8_lossy(&line));
        }
        assert_eq!(
            RecordError::LineTooLong { limit: 1 }.reason(),
            RejectReason::LineTooLong
        );
    }

    #[test]
    fn selection_is_checked_after_the_user_id() {
        let line = r#"{"user_id":"u9","lang":"en","timestamp":"bad"}"#;
        assert_eq!(
            parse_record_with(line.as_bytes(), |u| u != "u9"),
            Ok(Parsed::Deselected)
        );
        assert_eq!(
            parse_record_with(line.as_bytes(), |u| u == "u9").map_err(|e| e.reason()),
            Err(RejectReason::BadTimestamp)
        );
    }

    /// serde_json's own bytes for a record: what `write_json` must match.
    fn serde_bytes(r: &ActivityRecord) -> Vec<u8> {
        serde_json::to_vec(r).unwrap()
    }

    fn view(line: &str) -> RecordView<'_> {
        match parse_view_with(line.as_bytes(), |_| true) {
            Ok(ParsedView::Record(v)) => v,
            other => panic!("expected a record from {line}, got {other:?}"),
        }
    }

    #[test]
    fn written_views_are_serde_json_bytes_on_awkward_fields() {
        for line in [
            format!(r#"{{"user_id":"u1","lang":"en","timestamp":"{TS}"}}"#),
            format!(
                r#"{{"user_id":" \u0007 x\"y\\ ","lang":"en","timestamp":"{TS}","audio":"s3://b/é\n","accuracy":87.25,"original_text":"tab\there","response_text":"\u2028 ok","session_id":12,"sub_session_id":true}}"#
            ),
            r#"{"user_id":7,"lang":"en","ets":1709287200123,"score":0,"session_id":1.5e3,"original_text":"a/b <>&'"}"#
                .to_string(),
            format!(
                r#"{{"user_id":"u","lang":"en","timestamp":"{TS}","accuracy":100,"response_text":"0123456789abcdef0123456789abcdef\u001f"}}"#
            ),
        ] {
            let v = view(&line);
            let mut out = Vec::new();
            v.write_json(&mut out).unwrap();
            let owned = v.clone().into_record();
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&serde_bytes(&owned)),
                "{line}"
            );
            assert_eq!(
                owned.response_id,
                response_id(&owned.user_id, owned.timestamp, owned.audio_url.as_deref())
            );
            assert_eq!(
                v.id_u128(),
                u128::from_str_radix(&owned.response_id, 16).unwrap()
            );
        }
    }

    #[test]
    fn json_plain_finds_a_special_byte_anywhere() {
        let base = "x".repeat(40);
        assert!(json_plain(&base));
        for i in 0..40 {
            for special in ['"', '\\', '\n', '\u{1f}', '\0'] {
                let mut s = base.clone();
                s.replace_range(i..=i, &special.to_string());
                assert!(!json_plain(&s), "{i} {special:?}");
            }
        }
        assert!(json_plain("é \u{7f} / \u{2028}"));
    }

    #[test]
    fn fast_timestamps_agree_with_chrono_on_edges() {
        for s in [
            "2024-03-01T10:00:00Z",
            "2024-03-01T10:00:00.5Z",
            "2024-03-01T10:00:00.123456789Z",
            "2024-02-29T23:59:59.999+05:30",
            "2023-12-31T00:00:00-23:59",
            "1678-01-01T00:00:00Z",
            "2261-12-31T23:59:59Z",
            "2000-02-29T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.000000001Z",
        ] {
            assert_eq!(
                rfc3339_fast(s),
                Some(parse_timestamp_str(s).unwrap()),
                "{s}"
            );
        }
        // Not the common shape: left to chrono, whatever it decides.
        for s in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-03-01T10:00:60Z",
            "2024-03-01t10:00:00z",
            "2024-03-01 10:00:00Z",
            "2024-03-01T10:00:00.Z",
            "2024-03-01T10:00:00.1234567890Z",
            "2024-03-01T10:00:00+24:00",
            "2024-03-01T10:00:00+0530",
            " 2024-03-01T10:00:00Z",
            "2024-03-01T10:00:00Z ",
            "2024-13-01T10:00:00Z",
            "2024-00-01T10:00:00Z",
            "2024-04-31T10:00:00Z",
            "1677-12-31T23:59:59Z",
            "2262-04-12T00:00:00Z",
            "+2024-03-01T10:00:00Z",
        ] {
            assert_eq!(rfc3339_fast(s), None, "{s}");
        }
    }

    /// A JSON key: ours, aliases, unknown, or with an escape.
    fn json_key() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => proptest::sample::select(vec![
                "user_id", "userId", "language", "lang", "timestamp", "ets", "audio_url",
                "audio", "accuracy", "score", "original_text", "session_id", "extra",
            ])
            .prop_map(|k| format!("\"{k}\"")),
            1 => Just(r#""user\u005fid""#.to_string()),
            1 => "[a-z]{0,3}".prop_map(|k| format!("\"{k}\"")),
        ]
    }

    /// A JSON-ish value: mostly what the flat scanner reads (so whole lines
    /// often take it), and every awkward spelling it must leave to serde:
    /// signs, exponents, long significands, escapes, control characters,
    /// nesting.
    fn json_value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "\"[a-z :/.]{0,12}\"",
            3 => "(0|[1-9][0-9]{0,6})(\\.[0-9]{1,6})?",
            1 => proptest::sample::select(vec!["true", "false", "null"]).prop_map(String::from),
            1 => "-?(0|[1-9][0-9]{0,21})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            1 => "0[0-9]{1,3}",
            1 => "\"[a-zé \u{7f}\u{1}\\\\\"/]{0,20}\"",
            1 => "\"[ -~]{0,30}\"",
            1 => proptest::sample::select(vec!["tru", "nul", "{}", "[]",
                r#"{"a":[1,{"b":"c"}]}"#, "[1,2", r#""\u00e9\n""#]).prop_map(String::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The flat scanner answers exactly as serde_json wherever it
        /// answers: on records built from awkward pieces (escapes, control
        /// characters, nesting, every number spelling, repeated and unknown
        /// keys, odd whitespace) and then mutated byte by byte.
        #[test]
        fn flat_scanner_agrees_with_serde(
            members in proptest::collection::vec((json_key(), json_value()), 0..8),
            ws in "[ \t\r\n]{0,2}",
            cuts in proptest::collection::vec((any::<proptest::sample::Index>(), "[\"{}\\[\\],:\\\\ 0.e-]?"), 0..2),
        ) {
            let mut line = String::from("{");
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(&format!("{ws}{k}{ws}:{ws}{v}{ws}"));
            }
            line.push('}');
            let mut bytes = line.into_bytes();
            for (at, insert) in &cuts {
                let at = at.index(bytes.len() + 1);
                if insert.is_empty() && at < bytes.len() {
                    bytes.remove(at);
                } else {
                    bytes.splice(at..at, insert.bytes());
                }
            }
            let Ok(text) = std::str::from_utf8(&bytes) else { return Ok(()) };
            let (mut fast, mut slow) = (Fields::default(), Fields::default());
            let a = read_fields(text, &mut fast).map_err(|e| e.to_string());
            let b = read_fields_serde(text, &mut slow).map_err(|e| e.to_string());
            prop_assert_eq!(&a, &b, "{}", text);
            if a.is_ok() {
                prop_assert_eq!(fast, slow, "{}", text);
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_record(&line);
        }

        #[test]
        fn fast_timestamps_agree_with_chrono(
            year in 1678i64..=2261, month in 1u32..=12, day in 1u32..=31,
            hour in 0u32..=23, minute in 0u32..=59, second in 0u32..=59,
            frac in proptest::option::of("[0-9]{1,9}"),
            offset in proptest::option::of((any::<bool>(), 0u32..=23, 0u32..=59)),
        ) {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let offset = match offset {
                None => "Z".to_string(),
                Some((neg, h, m)) => format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' }),
            };
            let s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{frac}{offset}");
            match (rfc3339_fast(&s), parse_timestamp_str(&s)) {
                (Some(fast), Ok(slow)) => prop_assert_eq!(fast, slow, "{}", s),
                // Invalid dates (day 31 of a short month) and instants just
                // outside the nanosecond range are left to chrono.
                (None, _) => {}
                (Some(fast), Err(e)) => prop_assert!(false, "{s}: fast {fast}, chrono {e}"),
            }
        }

        #[test]
        fn written_views_are_serde_json_bytes(
            user in "\\PC{1,12}",
            ms in 0i64..4_000_000_000_000,
            audio in proptest::option::of("\\PC{1,30}"),
            acc in proptest::option::of(0.0f64..=100.0),
            texts in proptest::collection::vec(proptest::option::of(any::<String>()), 4),
        ) {
            let v = serde_json::json!({
                "user_id": user, "lang": "en", "ets": ms, "audio_url": audio, "accuracy": acc,
                "original_text": texts[0], "response_text": texts[1],
                "session_id": texts[2], "sub_session_id": texts[3],
            });
            let line = serde_json::to_string(&v).unwrap();
            prop_assume!(!user.trim().is_empty());
            let view = match parse_view_with(line.as_bytes(), |_| true) {
                Ok(ParsedView::Record(r)) => r,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            let mut out = Vec::new();
            view.write_json(&mut out).unwrap();
            prop_assert_eq!(out, serde_bytes(&view.into_record()));
        }

        #[test]
        fn serialised_records_parse_back(
            user in "[a-zA-Z0-9_\"\\\\ é]{1,12}",
            ms in 0i64..4_000_000_000_000,
            audio in proptest::option::of("[ -~]{1,30}"),
            acc in proptest::option::of(0.0f64..=100.0),
            text in proptest::option::of(".{0,20}"),
        ) {
            let v = serde_json::json!({
                "learner_id": user, "lang": "en-GB", "ets": ms,
                "audioUrl": audio, "score": acc, "response_text": text,
            });
            let line = serde_json::to_string(&v).unwrap();
            let user = user.trim();
            prop_assume!(!user.is_empty());
            let r = match parse_record(line.as_bytes()) {
                Ok(Parsed::Record(r)) => r,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            let audio = audio.filter(|a| !a.trim().is_empty());
            prop_assert_eq!(&r.user_id, user);
            prop_assert_eq!(r.timestamp, ms * 1_000_000);
            prop_assert_eq!(r.accuracy, acc);
            prop_assert_eq!(&r.response_text, &text);
            prop_assert_eq!(&r.response_id, &response_id(user, ms * 1_000_000, audio.as_deref()));
            prop_assert_eq!(r.audio_url, audio);
        }
    }
}
