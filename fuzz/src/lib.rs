//! Fuzz targets: every parser that reads bytes from outside the fleet.
//!
//! Each target takes arbitrary bytes and drives one parser the way the product
//! does, to the end of its input. A target returns normally whatever the
//! bytes; a panic, an abort (e.g. an allocation sized from an untrusted
//! header) or a hang is a bug. `tests/targets.rs` runs each target with
//! proptest on random and mutated seed inputs (`seeds/TARGET/`) and replays
//! every saved crash (`regressions/TARGET/`); see `fuzz/README.md`.
//!
//! Why proptest and not `cargo fuzz`: libFuzzer's instrumentation needs a
//! nightly toolchain, and this project builds on stable only. The targets are
//! plain `fn(&[u8])`, so a `cargo fuzz` wrapper is a few lines if a nightly is
//! at hand.
#![forbid(unsafe_code)]

use std::io::Cursor;

use engage_clean::domain::parse_record;
use engage_clean::domain::reader::{ActivityReader, ReaderOptions};
use engage_model::envelope::Envelope;
use engage_model::jobs::{AggregateJob, AnalyzeJob, CleanJob, DownloadJob, MatchJob};
use engage_model::uri::ObjectUri;
use engage_model::{AudioRef, read_sessions};

/// Upper bound on items a target reads from one input, so that a target
/// always ends (the readers themselves are streaming and bounded).
const MAX_ITEMS: usize = 100_000;

/// The names of the targets, as used for `seeds/` and `regressions/`.
pub const TARGETS: [&str; 6] = [
    "activity", "sessions", "envelope", "audio", "gemini", "links",
];

/// Runs the named target on `bytes`.
///
/// # Panics
/// On an unknown target name (a bug in the harness, never in the input).
pub fn run(target: &str, bytes: &[u8]) {
    match target {
        "activity" => activity(bytes),
        "sessions" => sessions(bytes),
        "envelope" => envelope(bytes),
        "audio" => audio(bytes),
        "gemini" => gemini(bytes),
        "links" => links(bytes),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// An activity log (JSON Lines or array, plain or gzip) read to its end with
/// a small line limit, every item parsed as the clean stage does.
pub fn activity(bytes: &[u8]) {
    let opts = ReaderOptions {
        max_line_bytes: 4096,
    };
    let Ok(mut reader) = ActivityReader::new(Cursor::new(bytes), opts) else {
        return;
    };
    for _ in 0..MAX_ITEMS {
        match reader.next_raw() {
            Ok(Some(item)) => {
                if item.error.is_none() {
                    let _ = parse_record(item.bytes);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = parse_record(bytes);
}

/// A sessions CSV parsed whole.
pub fn sessions(bytes: &[u8]) {
    let _ = read_sessions(Cursor::new(bytes));
}

/// A message body decoded as an envelope and as every stage's job.
pub fn envelope(bytes: &[u8]) {
    let Ok(env) = Envelope::decode(bytes) else {
        return;
    };
    let _ = env.job_as::<CleanJob>();
    let _ = env.job_as::<MatchJob>();
    let _ = env.job_as::<DownloadJob>();
    let _ = env.job_as::<AnalyzeJob>();
    let _ = env.job_as::<AggregateJob>();
}

/// Audio bytes probed as download does (decode, then features), with and
/// without a format hint.
pub fn audio(bytes: &[u8]) {
    let _ = engage_audio::probe(bytes, Some("wav"));
    let _ = engage_audio::probe(bytes, None);
}

/// A Gemini `generateContent` body, and its text as a structured answer.
pub fn gemini(bytes: &[u8]) {
    let _ = engage_analyze::gemini::parse_generate_response(bytes, "gemini:fuzz");
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = engage_analyze::gemini::parse_answer(text, "gemini:fuzz");
    }
}

/// An audio link and an object URI as a producer might write them.
pub fn links(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let _ = AudioRef::parse(text);
    let _ = AudioRef::parse_allowed(text, &["learner-audio".to_owned()]);
    if let Ok(uri) = ObjectUri::parse(text) {
        let _ = uri.join("a/b");
        let _ = uri.to_string();
    }
}
