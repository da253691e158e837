//! One activity record: a JSON object (one line, or one element of a JSON
//! array) turned into an [`ActivityRecord`], a drop (non-English, unselected
//! learner) or a typed reject — docs/data-contracts.md "Activity log".
//!
//! The fast path is a single serde pass over the line into a borrowed view:
//! keys are matched against the alias table without allocating, strings stay
//! borrowed from the line unless they contain escapes, unknown fields are
//! skipped with [`IgnoredAny`]. Field values are captured whatever their JSON
//! type, so the only way the pass fails is malformed JSON, and every other
//! problem is classified precisely afterwards, without a second parse.
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

use engage_model::time::{TimestampError, from_epoch_millis, parse_timestamp_str};
use engage_model::{ActivityRecord, RejectReason, Timestamp, response_id};
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
    let text = std::str::from_utf8(line).map_err(|e| RecordError::InvalidUtf8 {
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
        return Ok(Parsed::NonEnglish);
    }
    let user_id = user_id(fields.get(Field::UserId))?;
    if !selected(&user_id) {
        return Ok(Parsed::Deselected);
    }
    let timestamp = timestamp(fields.get(Field::Timestamp))?;
    let accuracy = accuracy(fields.get(Field::Accuracy))?;
    let audio_url = audio_url(fields.take(Field::AudioUrl))?;
    let response_id = response_id(&user_id, timestamp, audio_url.as_deref());
    Ok(Parsed::Record(ActivityRecord {
        response_id,
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

fn user_id(v: Option<&Val<'_>>) -> Result<String, RecordError> {
    match v {
        None | Some(Val::Null) => Err(RecordError::MissingUserId),
        Some(Val::Str(s)) => {
            let t = s.trim();
            if t.is_empty() {
                Err(RecordError::MissingUserId)
            } else {
                Ok(t.to_string())
            }
        }
        Some(Val::I64(i)) => Ok(i.to_string()),
        Some(Val::U64(u)) => Ok(u.to_string()),
        Some(other) => Err(RecordError::BadUserId(other.kind())),
    }
}

fn timestamp(v: Option<&Val<'_>>) -> Result<Timestamp, RecordError> {
    let bad = |e: TimestampError| RecordError::BadTimestamp(e.to_string());
    match v {
        None | Some(Val::Null) => Err(RecordError::MissingTimestamp),
        Some(Val::Str(s)) if s.trim().is_empty() => Err(RecordError::MissingTimestamp),
        Some(Val::Str(s)) => parse_timestamp_str(s).map_err(bad),
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

fn audio_url(v: Option<Val<'_>>) -> Result<Option<String>, RecordError> {
    match v {
        None | Some(Val::Null) => Ok(None),
        Some(Val::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Val::Str(s)) => Ok(Some(s.into_owned())),
        Some(other) => Err(RecordError::BadAudioUrl(other.kind())),
    }
}

fn text_field(v: Option<Val<'_>>) -> Option<String> {
    match v? {
        Val::Str(s) => Some(s.into_owned()),
        Val::I64(i) => Some(i.to_string()),
        Val::U64(u) => Some(u.to_string()),
        Val::F64(f) => Some(f.to_string()),
        Val::Bool(b) => Some(b.to_string()),
        Val::Null | Val::Compound(_) => None,
    }
}

// ---------------------------------------------------------------------------
// The borrowed, single-pass view of one JSON object.
// ---------------------------------------------------------------------------

/// The fields the cleaner reads, in slot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
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

const FIELD_COUNT: usize = 9;

/// Maps a key to (field, rank); rank 0 is the canonical name. Exact match.
fn lookup_key(key: &str) -> Option<(Field, u8)> {
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
enum Val<'a> {
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
#[derive(Debug, Default)]
struct Fields<'a> {
    slots: [Option<(u8, Val<'a>)>; FIELD_COUNT],
}

impl<'a> Fields<'a> {
    fn get(&self, f: Field) -> Option<&Val<'a>> {
        self.slots[f as usize].as_ref().map(|(_, v)| v)
    }
    fn take(&mut self, f: Field) -> Option<Val<'a>> {
        self.slots[f as usize].take().map(|(_, v)| v)
    }
    fn put(&mut self, f: Field, rank: u8, v: Val<'a>) {
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
/// is an error, as with `serde_json::from_str`.
fn read_fields<'de>(
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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_record(&line);
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
