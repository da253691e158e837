//! `engage gen-data`: writes a realistic, deterministic batch of input data — an
//! activity log, a sessions CSV and the spoken-answer audio as an S3-style
//! directory tree — for demos, integration tests and benchmarks.
//!
//! Output in `--out DIR`:
//!
//! - `activity.jsonl` (or `activity.json` as one array; `.gz` with `--gzip`):
//!   responses with mixed field aliases (`userId`, `learner_id`, integer
//!   `virtual_id`, `created_at`, epoch-ms `ets`, `lang`/`language_code` spelled
//!   `en-IN`/`EN`/`english`…, `audio_link`/`audioUrl`/`audio`, virtual-hosted and
//!   path-style https S3 URLs), null and missing audio, non-English answers,
//!   rejected records of every kind (invalid JSON, invalid UTF-8, not an object,
//!   missing or null user id, missing or bad timestamp; the array format only
//!   carries the kinds that keep the array parseable) and duplicates (the same
//!   response again later in the log, its timestamp or user id spelled
//!   differently). In the default mode lines are in log order (by time); with
//!   `--target-bytes` they are grouped by learner so memory stays bounded.
//! - `sessions.csv`: `user_id,session_id,created_at,milestone,lesson,progress,phase`;
//!   each learner walks the phases P1…P8, S1, S2 in order (some only a few),
//!   milestones M1…M4, one to three sessions per phase hours to days apart; some
//!   rows leave `phase` empty (it falls back to `lesson`), a few share a
//!   `created_at` (the tie rule), a few are bad rows.
//! - `s3/<bucket>/<key>`: 16 kHz mono 16-bit WAVs of synthetic speech
//!   ([`synth`]) whose loudness, pace, pauses and intonation vary by learner and
//!   drift by phase, plus silent, clipped, noisy, corrupt (truncated, text,
//!   empty) and byte-identical duplicate objects; some links point at objects
//!   that do not exist or at a bucket that is not allowed.
//! - `manifest.json`: the [`GenDataSummary`] with the counts a correct pipeline
//!   must reproduce ([`Expected`]).
//!
//! Responses sit near sessions: most within ±5 min, some exactly 5 min away or
//! at the session instant (matched: the tolerance is inclusive), some 6–40 min
//! away or days before the first session (unmatched). Whether a response matches
//! is computed against all of its learner's sessions, so the expected counts are
//! exact.
//!
//! Deterministic: the same arguments give byte-identical files. Each learner has
//! its own ChaCha8 streams (one for the log, one for audio), so `--no-audio`
//! changes no byte of the log or the sessions.

#![forbid(unsafe_code)]

pub(crate) mod synth;

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::Context;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Map, Value, json};

use engage_model::AudioRef;
use engage_model::session::REQUIRED_SESSION_COLUMNS;

use synth::{SynthError, Voice};

/// Learning phases in curriculum order.
const PHASES: [&str; 10] = ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "S1", "S2"];
/// 2024-03-01T00:00:00Z in epoch milliseconds.
const BASE_MS: i64 = 1_709_251_200_000;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The matching tolerance (inclusive).
const TOLERANCE_MS: i64 = 5 * MINUTE_MS;
const ENGLISH: [&str; 8] = [
    "en", "en-IN", "EN", "english", "en_US", "eng", "en-GB", "English",
];
const NON_ENGLISH: [&str; 6] = ["hi", "hi-IN", "ta", "mr", "bn-IN", "es"];
const PROMPTS: [(&str, &str); 8] = [
    (
        "I would like to order a cup of tea please",
        "I would like order cup of tea please",
    ),
    (
        "Could you tell me the way to the station",
        "Could you tell me way to station",
    ),
    (
        "My name is Anna and I live in the city",
        "My name Anna, I live in city",
    ),
    (
        "What time does the train leave",
        "What time train is leaving",
    ),
    (
        "I have been learning English for two years",
        "I am learning English since two years",
    ),
    ("Can I pay by card", "Can I pay with card"),
    (
        "The weather is lovely today",
        "Weather is very lovely today",
    ),
    ("I am sorry I am late", "Sorry I late"),
];

/// Format of the activity log.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// One JSON object per line.
    Jsonl,
    /// One JSON array of objects.
    Array,
}

/// Arguments of `engage gen-data`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub(crate) struct GenDataArgs {
    /// Number of learners.
    #[arg(long, default_value_t = 20)]
    pub learners: usize,
    /// Log entries per learner (including rejected and non-English ones).
    #[arg(long, default_value_t = 10)]
    pub responses: usize,
    /// Output directory (created if missing; existing files are overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed: the same seed and arguments give byte-identical output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of log entries (and session rows) that are bad records of assorted kinds.
    #[arg(long, default_value_t = 0.02)]
    pub bad_fraction: f64,
    /// Activity log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Jsonl)]
    pub format: LogFormat,
    /// Gzip the activity log (`.gz`).
    #[arg(long)]
    pub gzip: bool,
    /// Write the log and sessions only, no audio (for large benchmark logs).
    #[arg(long)]
    pub no_audio: bool,
    /// Source bucket of the audio links (and of `DIR/s3/<bucket>`).
    #[arg(long, default_value = "learner-audio")]
    pub bucket: String,
    /// Fraction of log entries in a language other than English.
    #[arg(long, default_value_t = 0.1)]
    pub non_english_fraction: f64,
    /// Keep adding learners (each with `--responses` entries; `--learners` is then
    /// ignored) until the log file reaches this many bytes; audio is then off. The
    /// sessions CSV grows with the learners: raise `--responses` for fewer of them.
    #[arg(long)]
    pub target_bytes: Option<u64>,
}

impl GenDataArgs {
    /// Arguments with every default and the given output directory.
    pub(crate) fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            learners: 20,
            responses: 10,
            out: out.into(),
            seed: 42,
            bad_fraction: 0.02,
            format: LogFormat::Jsonl,
            gzip: false,
            no_audio: false,
            bucket: "learner-audio".into(),
            non_english_fraction: 0.1,
            target_bytes: None,
        }
    }

    fn validate(&self) -> Result<(), GenDataError> {
        for (name, v) in [
            ("--bad-fraction", self.bad_fraction),
            ("--non-english-fraction", self.non_english_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(GenDataError::Fraction { name, value: v });
            }
        }
        if self.bad_fraction + self.non_english_fraction > 1.0 {
            return Err(GenDataError::FractionsExceedOne);
        }
        if AudioRef::parse(&format!("s3://{}/k", self.bucket)).is_err() {
            return Err(GenDataError::Bucket(self.bucket.clone()));
        }
        if self.target_bytes.is_some() && self.responses == 0 {
            return Err(GenDataError::NoResponses);
        }
        Ok(())
    }

    fn audio_enabled(&self) -> bool {
        !self.no_audio && self.target_bytes.is_none()
    }
}

/// Invalid `gen-data` arguments.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GenDataError {
    /// A fraction outside 0–1.
    #[error("{name} must be between 0 and 1, got {value}")]
    Fraction {
        /// The option.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// Bad and non-English fractions together above 1.
    #[error("--bad-fraction plus --non-english-fraction must not exceed 1")]
    FractionsExceedOne,
    /// Not a valid S3 bucket name.
    #[error("not a valid S3 bucket name: {0:?}")]
    Bucket(String),
    /// `--target-bytes` with zero responses per learner would never finish.
    #[error("--target-bytes needs --responses above 0")]
    NoResponses,
}

/// Audio objects behind the matched responses that have an audio link, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct AudioKinds {
    /// Synthetic speech (analyzable).
    pub speech: u64,
    /// A byte-identical copy of another of the learner's answers (analyzable; dedups by content hash).
    pub shared_content: u64,
    /// Digital silence or faint hiss.
    pub silent: u64,
    /// Speech driven into hard clipping.
    pub clipped: u64,
    /// Speech under white noise at 0–5 dB SNR.
    pub noisy: u64,
    /// Undecodable: truncated WAV, text, or zero bytes.
    pub corrupt: u64,
    /// The link points at a key that was not written.
    pub missing_object: u64,
    /// The link points at a bucket other than `--bucket`.
    pub foreign_bucket: u64,
}

/// Counts a correct pipeline must reproduce from this data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Expected {
    /// Learners generated.
    pub learners: u64,
    /// Valid session rows.
    pub sessions: u64,
    /// Session rows that must be rejected.
    pub bad_session_rows: u64,
    /// Log entries that must be rejected.
    pub rejected: u64,
    /// Valid entries in another language (dropped, counted).
    pub non_english: u64,
    /// Entries repeating an earlier kept response (same user, instant and link).
    pub duplicates: u64,
    /// Unique English responses.
    pub kept: u64,
    /// Kept responses with a session within 5 minutes.
    pub matched: u64,
    /// Kept responses without one.
    pub unmatched: u64,
    /// Kept responses with a null or missing audio link.
    pub no_audio: u64,
    /// Matched responses with an audio link (the download jobs).
    pub matched_with_audio: u64,
    /// What is behind those links (sums to `matched_with_audio`).
    pub audio: AudioKinds,
}

impl Expected {
    fn add(&mut self, o: &Expected) {
        self.learners += o.learners;
        self.sessions += o.sessions;
        self.bad_session_rows += o.bad_session_rows;
        self.rejected += o.rejected;
        self.non_english += o.non_english;
        self.duplicates += o.duplicates;
        self.kept += o.kept;
        self.matched += o.matched;
        self.unmatched += o.unmatched;
        self.no_audio += o.no_audio;
        self.matched_with_audio += o.matched_with_audio;
        let (a, b) = (&mut self.audio, &o.audio);
        a.speech += b.speech;
        a.shared_content += b.shared_content;
        a.silent += b.silent;
        a.clipped += b.clipped;
        a.noisy += b.noisy;
        a.corrupt += b.corrupt;
        a.missing_object += b.missing_object;
        a.foreign_bucket += b.foreign_bucket;
    }
}

/// What `gen-data` wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct GenDataSummary {
    /// The activity log.
    pub activity_path: PathBuf,
    /// The sessions CSV.
    pub sessions_path: PathBuf,
    /// `DIR/s3`: one sub-directory per bucket, one file per key (the `--s3-root` layout).
    pub audio_root: PathBuf,
    /// Entries in the activity log (lines, or array elements).
    pub records: u64,
    /// Audio objects written.
    pub audio_files: u64,
    /// Size of the activity log file in bytes.
    pub bytes: u64,
    /// Total size of the audio objects in bytes.
    pub audio_bytes: u64,
    /// The counts a correct pipeline must reproduce.
    pub expected: Expected,
}

/// Generates the data set described by `args`.
pub(crate) fn run(args: &GenDataArgs) -> anyhow::Result<GenDataSummary> {
    args.validate()?;
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let log_name = match (args.format, args.gzip) {
        (LogFormat::Jsonl, false) => "activity.jsonl",
        (LogFormat::Jsonl, true) => "activity.jsonl.gz",
        (LogFormat::Array, false) => "activity.json",
        (LogFormat::Array, true) => "activity.json.gz",
    };
    let activity_path = args.out.join(log_name);
    let sessions_path = args.out.join("sessions.csv");
    let audio_root = args.out.join("s3");

    let mut log = LogWriter::create(&activity_path, args.format, args.gzip)?;
    let mut sessions = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(BufWriter::new(
            File::create(&sessions_path)
                .with_context(|| format!("creating {}", sessions_path.display()))?,
        ));
    let mut header = REQUIRED_SESSION_COLUMNS.to_vec();
    header.push("phase");
    sessions.write_record(&header)?;

    let progress = progress_bar(args);
    let mut expected = Expected::default();
    let mut audio_files = 0u64;
    let mut audio_bytes = 0u64;
    let mut pending: Vec<(i64, usize, usize, Vec<u8>)> = Vec::new();
    let mut learner = 0usize;
    loop {
        let done = match args.target_bytes {
            Some(target) => log.bytes() >= target,
            None => learner >= args.learners,
        };
        if done {
            break;
        }
        let out = generate_learner(args, learner)?;
        for row in &out.session_rows {
            sessions.write_record(row)?;
        }
        for (key, bytes) in &out.audio {
            let path = object_path(&audio_root, &args.bucket, key)?;
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            audio_files += 1;
            audio_bytes += bytes.len() as u64;
        }
        expected.add(&out.expected);
        if args.target_bytes.is_some() {
            // Streaming: this learner's entries now, in time order.
            for e in sorted(out.entries) {
                log.entry(&e.line)?;
            }
            progress.set_position(log.bytes());
        } else {
            pending.extend(
                out.entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| (e.sort_key, learner, i, e.line)),
            );
            progress.inc(1);
        }
        learner += 1;
    }
    // Log order: by time, ties by learner then generation order.
    pending.sort_by_key(|a| (a.0, a.1, a.2));
    for (_, _, _, line) in &pending {
        log.entry(line)?;
    }
    let records = log.entries;
    log.finish()?;
    sessions.flush()?;
    progress.finish_and_clear();

    let bytes = fs::metadata(&activity_path)?.len();
    let summary = GenDataSummary {
        activity_path,
        sessions_path,
        audio_root,
        records,
        audio_files,
        bytes,
        audio_bytes,
        expected,
    };
    write_manifest(args, &summary, log_name)?;
    Ok(summary)
}

/// `DIR/s3/<bucket>/<key>`, with the key normalised so it cannot escape.
fn object_path(root: &Path, bucket: &str, key: &str) -> anyhow::Result<PathBuf> {
    let key = engage_model::audio_ref::normalise_key(key)
        .map_err(|e| anyhow::anyhow!("generated key {key:?}: {e}"))?;
    Ok(root.join(bucket).join(key))
}

fn write_manifest(args: &GenDataArgs, s: &GenDataSummary, log_name: &str) -> anyhow::Result<()> {
    let manifest = json!({
        "seed": args.seed,
        "learners": s.expected.learners,
        "responses_per_learner": args.responses,
        "bucket": args.bucket,
        "format": args.format,
        "gzip": args.gzip,
        "audio": args.audio_enabled(),
        "activity": log_name,
        "sessions": "sessions.csv",
        "audio_root": "s3",
        "records": s.records,
        "bytes": s.bytes,
        "audio_files": s.audio_files,
        "audio_bytes": s.audio_bytes,
        "expected": s.expected,
    });
    let path = args.out.join("manifest.json");
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn progress_bar(args: &GenDataArgs) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match args.target_bytes {
        Some(t) => {
            let pb = ProgressBar::new(t);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                pb.set_style(style);
            }
            pb
        }
        None => {
            let pb = ProgressBar::new(args.learners as u64);
            if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} learners {eta}") {
                pb.set_style(style);
            }
            pb
        }
    }
}

/// The activity log writer: plain or gzip, JSON Lines or one array, counting the
/// bytes that reach the file.
struct LogWriter {
    inner: Sink,
    format: LogFormat,
    entries: u64,
    written: Rc<Cell<u64>>,
}

/// The encoder's state (zlib-rs) is boxed: it dwarfs the plain writer.
enum Sink {
    Plain(Counting<BufWriter<File>>),
    Gzip(Box<GzEncoder<Counting<BufWriter<File>>>>),
}

impl LogWriter {
    fn create(path: &Path, format: LogFormat, gzip: bool) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let written = Rc::new(Cell::new(0));
        let counting = Counting {
            inner: BufWriter::with_capacity(1 << 20, file),
            count: Rc::clone(&written),
        };
        let inner = if gzip {
            Sink::Gzip(Box::new(GzEncoder::new(counting, Compression::fast())))
        } else {
            Sink::Plain(counting)
        };
        Ok(Self {
            inner,
            format,
            entries: 0,
            written,
        })
    }

    fn w(&mut self) -> &mut dyn Write {
        match &mut self.inner {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w,
        }
    }

    fn entry(&mut self, line: &[u8]) -> io::Result<()> {
        let sep: &[u8] = match (self.format, self.entries) {
            (LogFormat::Jsonl, _) => b"",
            (LogFormat::Array, 0) => b"[\n",
            (LogFormat::Array, _) => b",\n",
        };
        let newline: &[u8] = if self.format == LogFormat::Jsonl {
            b"\n"
        } else {
            b""
        };
        let w = self.w();
        w.write_all(sep)?;
        w.write_all(line)?;
        w.write_all(newline)?;
        self.entries += 1;
        Ok(())
    }

    /// Bytes written to the file so far (compressed bytes with gzip).
    fn bytes(&self) -> u64 {
        self.written.get()
    }

    fn finish(mut self) -> io::Result<()> {
        if self.format == LogFormat::Array {
            let end: &[u8] = if self.entries == 0 { b"[]\n" } else { b"\n]\n" };
            self.w().write_all(end)?;
        }
        let mut counting = match self.inner {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w.finish()?,
        };
        counting.flush()
    }
}

/// A writer that counts the bytes passing through it.
struct Counting<W> {
    inner: W,
    count: Rc<Cell<u64>>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One log entry: raw bytes (not necessarily valid JSON or UTF-8) and its place in the log.
struct Entry {
    sort_key: i64,
    line: Vec<u8>,
}

fn sorted(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by_key(|e| e.sort_key);
    entries
}

/// Everything generated for one learner.
struct LearnerOut {
    session_rows: Vec<Vec<String>>,
    entries: Vec<Entry>,
    audio: Vec<(String, Vec<u8>)>,
    expected: Expected,
}

struct SessionRow {
    id: String,
    created_ms: i64,
    phase: usize,
}

/// Learner-level traits that shape their audio and accuracy.
struct Profile {
    voice: Voice,
    /// Change of liveliness from the first to the last phase (−0.4…0.4).
    trend: f64,
    accuracy_mean: f64,
}

fn rng_for(seed: u64, learner: usize, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((learner as u64) * 2 + stream);
    rng
}

fn learner_id(learner: usize, rng: &mut ChaCha8Rng) -> (String, bool) {
    if rng.random_bool(0.3) {
        // Numeric ids (they may appear as JSON integers in the log).
        (
            format!("{}", 100_000 + learner * 7 + rng.random_range(0..7)),
            true,
        )
    } else {
        (
            format!("L{learner:05}{:04x}", rng.random_range(0..0x10000u32)),
            false,
        )
    }
}

fn generate_learner(args: &GenDataArgs, learner: usize) -> Result<LearnerOut, SynthError> {
    let mut rng = rng_for(args.seed, learner, 0);
    let mut arng = rng_for(args.seed, learner, 1);
    let (uid, numeric) = learner_id(learner, &mut rng);
    let profile = Profile {
        voice: Voice {
            f0_hz: if rng.random_bool(0.5) {
                rng.random_range(90.0..140.0)
            } else {
                rng.random_range(170.0..260.0)
            },
            liveliness: rng.random_range(0.05..1.0),
            level_dbfs: rng.random_range(-34.0..-14.0),
            rate_syll_s: rng.random_range(2.5..6.0),
            pause_prob: rng.random_range(0.02..0.35),
        },
        trend: rng.random_range(-0.4..0.4),
        accuracy_mean: rng.random_range(45.0..95.0),
    };
    let mut expected = Expected {
        learners: 1,
        ..Expected::default()
    };

    // Sessions: phases in order, one to three sessions each.
    let n_phases = match rng.random_range(0..100) {
        0..25 => rng.random_range(1..=3),
        25..85 => rng.random_range(4..=9),
        _ => PHASES.len(),
    };
    let mut sessions = Vec::new();
    let mut rows = Vec::new();
    let mut t = BASE_MS + rng.random_range(0..20 * DAY_MS) / 1000 * 1000;
    let mut sid = 0usize;
    for phase in 0..n_phases {
        let n = rng.random_range(1..=3);
        for k in 0..n {
            if sid > 0 {
                t += rng.random_range(2 * HOUR_MS..3 * DAY_MS) / 1000 * 1000;
            }
            let progress = ((k + 1) * 100 / n).to_string();
            let mut add = |id: String, rows: &mut Vec<Vec<String>>, rng: &mut ChaCha8Rng| {
                rows.push(session_row(&uid, &id, t, phase, &progress, rng));
                sessions.push(SessionRow {
                    id,
                    created_ms: t,
                    phase,
                });
            };
            add(format!("S{learner:05}-{sid:02}"), &mut rows, &mut rng);
            sid += 1;
            if rng.random_bool(0.02) {
                // A second session at the same instant: the later row wins ties.
                add(format!("S{learner:05}-{sid:02}"), &mut rows, &mut rng);
                sid += 1;
            }
            if rng.random_bool(args.bad_fraction) {
                rows.push(bad_session_row(&uid, t, &mut rng));
                expected.bad_session_rows += 1;
            }
        }
    }
    expected.sessions = sessions.len() as u64;

    let mut entries = Vec::new();
    let mut audio: Vec<(String, Vec<u8>)> = Vec::new();
    // Speech objects so far (drawn whether or not audio is written, so the
    // counts do not depend on --no-audio), and their indices in `audio`.
    let mut speech_count = 0usize;
    let mut speech_objects: Vec<usize> = Vec::new();
    let mut used_ts: HashSet<i64> = HashSet::new();
    let foreign = if args.bucket == "foreign-audio" {
        "foreign-audio-2"
    } else {
        "foreign-audio"
    };
    for j in 0..args.responses {
        let session = &sessions[rng.random_range(0..sessions.len())];
        let ts = place_response(&mut rng, session.created_ms, &sessions, &mut used_ts);
        let matched = sessions
            .iter()
            .any(|s| (s.created_ms - ts).abs() <= TOLERANCE_MS);
        let phase_frac = session.phase as f64 / (PHASES.len() - 1) as f64;
        let roll: f64 = rng.random();
        if roll < args.bad_fraction {
            let line = bad_record(&uid, ts, args.format, &mut rng);
            entries.push(Entry { sort_key: ts, line });
            expected.rejected += 1;
            continue;
        }
        let english = roll >= args.bad_fraction + args.non_english_fraction;
        let key = format!("responses/{uid}/{j:04}.wav");
        // What the link points at (drawn from the log stream so --no-audio keeps the log).
        let link = match rng.random_range(0..1000) {
            0..50 => Link::Null,
            50..70 => Link::Absent,
            70..80 => Link::Missing,
            80..90 => Link::Foreign,
            _ => Link::Object(match rng.random_range(0..1000) {
                0..30 => Kind::Silent,
                30..60 => Kind::Clipped,
                60..90 => Kind::Noisy,
                90..110 => Kind::Corrupt,
                110..140 if speech_count > 0 => Kind::Shared,
                _ => Kind::Speech,
            }),
        };
        let url = match link {
            Link::Null | Link::Absent => None,
            Link::Foreign => Some(format!("s3://{foreign}/{key}")),
            _ => Some(url_form(&args.bucket, &key, &mut rng)),
        };
        let record = record_json(
            &uid,
            numeric,
            ts,
            english,
            link,
            url.as_deref(),
            &profile,
            session,
            &mut rng,
        );
        entries.push(Entry {
            sort_key: ts,
            line: record.to_string().into_bytes(),
        });
        if !english {
            expected.non_english += 1;
            continue;
        }
        expected.kept += 1;
        if matched {
            expected.matched += 1;
        } else {
            expected.unmatched += 1;
        }
        if url.is_none() {
            expected.no_audio += 1;
        } else if matched {
            expected.matched_with_audio += 1;
            let k = &mut expected.audio;
            match link {
                Link::Missing => k.missing_object += 1,
                Link::Foreign => k.foreign_bucket += 1,
                Link::Object(Kind::Speech) => k.speech += 1,
                Link::Object(Kind::Shared) => k.shared_content += 1,
                Link::Object(Kind::Silent) => k.silent += 1,
                Link::Object(Kind::Clipped) => k.clipped += 1,
                Link::Object(Kind::Noisy) => k.noisy += 1,
                Link::Object(Kind::Corrupt) => k.corrupt += 1,
                Link::Null | Link::Absent => {}
            }
        }
        if rng.random_bool(0.015) {
            // The same response again, later in the log, spelled differently.
            let dup = respell(&record, numeric, ts);
            entries.push(Entry {
                sort_key: ts + rng.random_range(HOUR_MS..2 * DAY_MS),
                line: dup.to_string().into_bytes(),
            });
            expected.duplicates += 1;
        }
        if link == Link::Object(Kind::Speech) {
            speech_count += 1;
        }
        if let Link::Object(kind) = link
            && args.audio_enabled()
        {
            let liveliness = (profile.voice.liveliness
                * (1.0 + profile.trend * (phase_frac - 0.5) * 2.0))
                .clamp(0.02, 1.0);
            let voice = Voice {
                liveliness,
                level_dbfs: profile.voice.level_dbfs + arng.random_range(-3.0..3.0),
                rate_syll_s: profile.voice.rate_syll_s * arng.random_range(0.85..1.15),
                ..profile.voice
            };
            let bytes = match speech_objects.as_slice() {
                [] if kind == Kind::Shared => synthesize(Kind::Speech, &voice, &mut arng)?,
                idx if kind == Kind::Shared => {
                    audio[idx[arng.random_range(0..idx.len())]].1.clone()
                }
                _ => synthesize(kind, &voice, &mut arng)?,
            };
            if kind == Kind::Speech {
                speech_objects.push(audio.len());
            }
            audio.push((key, bytes));
        }
    }
    Ok(LearnerOut {
        session_rows: rows,
        entries,
        audio,
        expected,
    })
}

/// What an audio link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// `"audio_url": null`.
    Null,
    /// No audio field at all.
    Absent,
    /// A key in the allowed bucket that is never written.
    Missing,
    /// A bucket that is not allowed.
    Foreign,
    /// A written object.
    Object(Kind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Speech,
    Shared,
    Silent,
    Clipped,
    Noisy,
    Corrupt,
}

/// Chooses a response instant near `session_ms`, unique for the learner.
fn place_response(
    rng: &mut ChaCha8Rng,
    session_ms: i64,
    sessions: &[SessionRow],
    used: &mut HashSet<i64>,
) -> i64 {
    let mut ts = match rng.random_range(0..100) {
        0..78 => session_ms + rng.random_range(-295_000..=295_000),
        78..88 => {
            let off = rng.random_range(6 * MINUTE_MS..=40 * MINUTE_MS);
            if rng.random_bool(0.5) {
                session_ms + off
            } else {
                session_ms - off
            }
        }
        88..92 => {
            if rng.random_bool(0.5) {
                session_ms + TOLERANCE_MS
            } else {
                session_ms - TOLERANCE_MS
            }
        }
        92..95 => session_ms,
        _ => {
            let first = sessions
                .iter()
                .map(|s| s.created_ms)
                .min()
                .unwrap_or(session_ms);
            first - rng.random_range(DAY_MS..3 * DAY_MS)
        }
    };
    while !used.insert(ts) {
        ts += rng.random_range(1..1000);
    }
    ts
}

fn rfc3339_ms(ms: i64, secs_only: bool) -> String {
    let dt = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    let fmt = if secs_only {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Millis
    };
    dt.to_rfc3339_opts(fmt, true)
}

fn rfc3339_ist(ms: i64) -> String {
    let dt = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    match FixedOffset::east_opt(5 * 3600 + 1800) {
        Some(ist) => dt
            .with_timezone(&ist)
            .to_rfc3339_opts(SecondsFormat::Millis, false),
        None => rfc3339_ms(ms, false),
    }
}

fn session_row(
    uid: &str,
    id: &str,
    t: i64,
    phase: usize,
    progress: &str,
    rng: &mut ChaCha8Rng,
) -> Vec<String> {
    let created = match rng.random_range(0..100) {
        0..75 => rfc3339_ms(t, true),
        75..85 => rfc3339_ist(t),
        _ => t.to_string(),
    };
    let name = PHASES[phase].to_string();
    // Some exports leave `phase` empty: it falls back to `lesson`.
    let phase_col = if rng.random_bool(0.1) {
        String::new()
    } else {
        name.clone()
    };
    vec![
        uid.to_string(),
        id.to_string(),
        created,
        format!("M{}", (phase / 2 + 1).min(4)),
        name,
        progress.to_string(),
        phase_col,
    ]
}

fn bad_session_row(uid: &str, t: i64, rng: &mut ChaCha8Rng) -> Vec<String> {
    let ts = rfc3339_ms(t + HOUR_MS, true);
    match rng.random_range(0..3) {
        0 => vec![
            uid.into(),
            String::new(),
            ts,
            "M1".into(),
            "P1".into(),
            "0".into(),
            "P1".into(),
        ],
        1 => vec![
            uid.into(),
            "S-bad".into(),
            "not-a-date".into(),
            "M1".into(),
            "P1".into(),
            "0".into(),
            "P1".into(),
        ],
        _ => vec![
            uid.into(),
            "S-nophase".into(),
            ts,
            "M1".into(),
            String::new(),
            "0".into(),
            String::new(),
        ],
    }
}

/// One of the accepted spellings of an S3 link to `bucket/key`.
fn url_form(bucket: &str, key: &str, rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..100) {
        0..65 => format!("s3://{bucket}/{key}"),
        65..85 => format!("https://{bucket}.s3.ap-south-1.amazonaws.com/{key}"),
        _ => format!("https://s3.ap-south-1.amazonaws.com/{bucket}/{key}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn record_json(
    uid: &str,
    numeric: bool,
    ts: i64,
    english: bool,
    link: Link,
    url: Option<&str>,
    profile: &Profile,
    session: &SessionRow,
    rng: &mut ChaCha8Rng,
) -> Value {
    let mut m = Map::new();
    let id_value = |as_int: bool| match (as_int, uid.parse::<u64>()) {
        (true, Ok(n)) => json!(n),
        _ => json!(uid),
    };
    match (numeric, rng.random_range(0..100)) {
        (true, 0..50) => m.insert("virtual_id".into(), id_value(true)),
        (true, 50..75) => m.insert("user_id".into(), id_value(false)),
        (true, _) => m.insert("userId".into(), id_value(true)),
        (false, 0..65) => m.insert("user_id".into(), id_value(false)),
        (false, 65..85) => m.insert("userId".into(), id_value(false)),
        (false, _) => m.insert("learner_id".into(), id_value(false)),
    };
    let (field, value) = match rng.random_range(0..100) {
        0..55 => ("timestamp", json!(rfc3339_ms(ts, false))),
        55..65 => ("timestamp", json!(rfc3339_ist(ts))),
        65..75 => ("created_at", json!(rfc3339_ms(ts, false))),
        75..95 => ("ets", json!(ts)),
        _ => ("timestamp", json!(ts.to_string())),
    };
    m.insert(field.into(), value);
    let lang = if english {
        ENGLISH.choose(rng).copied().unwrap_or("en")
    } else {
        NON_ENGLISH.choose(rng).copied().unwrap_or("hi")
    };
    let lang_field = match rng.random_range(0..10) {
        0..6 => "language",
        6..9 => "lang",
        _ => "language_code",
    };
    m.insert(lang_field.into(), json!(lang));
    if link != Link::Absent {
        let audio_field = match rng.random_range(0..10) {
            0..6 => "audio_url",
            6..8 => "audio_link",
            8 => "audioUrl",
            _ => "audio",
        };
        m.insert(audio_field.into(), url.map_or(Value::Null, |u| json!(u)));
    }
    if rng.random_bool(0.85) {
        let acc = (profile.accuracy_mean + rng.random_range(-20.0..20.0)).clamp(0.0, 100.0);
        let field = if rng.random_bool(0.8) {
            "accuracy"
        } else {
            "score"
        };
        m.insert(field.into(), json!((acc * 10.0).round() / 10.0));
    }
    let (prompt, attempt) = PROMPTS[rng.random_range(0..PROMPTS.len())];
    m.insert("original_text".into(), json!(prompt));
    m.insert(
        "response_text".into(),
        json!(if rng.random_bool(0.5) {
            prompt
        } else {
            attempt
        }),
    );
    if rng.random_bool(0.5) {
        m.insert("session_id".into(), json!(session.id));
    }
    if rng.random_bool(0.3) {
        m.insert(
            "sub_session_id".into(),
            json!(format!("{}-{}", session.id, rng.random_range(1..5))),
        );
    }
    Value::Object(m)
}

/// The same response with its timestamp (and integer user id) spelled another way.
fn respell(record: &Value, numeric: bool, ts: i64) -> Value {
    let mut m = match record {
        Value::Object(m) => m.clone(),
        other => return other.clone(),
    };
    for f in ["timestamp", "created_at", "ets"] {
        m.remove(f);
    }
    let was_ms = record.get("ets").is_some();
    if was_ms {
        m.insert("timestamp".into(), json!(rfc3339_ist(ts)));
    } else {
        m.insert("ets".into(), json!(ts));
    }
    if numeric && let Some(v) = m.remove("virtual_id") {
        let s = v.as_u64().map_or_else(|| v.to_string(), |n| n.to_string());
        m.insert("user_id".into(), json!(s));
    }
    Value::Object(m)
}

/// A log entry that must be rejected. The array format only gets kinds that keep
/// the array valid JSON.
fn bad_record(uid: &str, ts: i64, format: LogFormat, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let kinds = if format == LogFormat::Jsonl {
        0..7
    } else {
        2..7
    };
    let good = json!({"user_id": uid, "timestamp": rfc3339_ms(ts, false), "language": "en",
                      "audio_url": null})
    .to_string();
    match rng.random_range(kinds) {
        0 => {
            // Invalid JSON: a proper prefix of an object is never valid.
            let cut = rng.random_range(1..good.len());
            good.as_bytes()[..cut].to_vec()
        }
        1 => {
            let mut b = br#"{"user_id": ""#.to_vec();
            b.extend_from_slice(&[0xff, 0xfe, 0x80]);
            b.extend_from_slice(format!(r#"", "timestamp": {ts}, "language": "en"}}"#).as_bytes());
            b
        }
        2 => [&b"[1, 2, 3]"[..], b"\"just a string\"", b"42", b"null"][rng.random_range(0..4)]
            .to_vec(),
        3 => json!({"timestamp": rfc3339_ms(ts, false), "language": "en", "audio_url": null})
            .to_string()
            .into_bytes(),
        4 => json!({"user_id": null, "ets": ts, "language": "en"})
            .to_string()
            .into_bytes(),
        5 => json!({"user_id": uid, "language": "en", "accuracy": 50})
            .to_string()
            .into_bytes(),
        _ => {
            let bad = ["yesterday", "2024-02-30T25:61:00Z", "", "12:30"][rng.random_range(0..4)];
            json!({"user_id": uid, "timestamp": bad, "language": "en"})
                .to_string()
                .into_bytes()
        }
    }
}

/// Synthesises one audio object of `kind` (never `Shared`, which copies bytes).
fn synthesize(kind: Kind, voice: &Voice, rng: &mut ChaCha8Rng) -> Result<Vec<u8>, SynthError> {
    let duration = 1.0 + 2.0 * rng.random::<f64>().powf(1.5);
    let samples = match kind {
        Kind::Silent => synth::silence(duration, rng.random_bool(0.5), rng),
        Kind::Clipped => {
            let mut x = synth::speech(voice, duration, rng);
            synth::clip(
                &mut x,
                rng.random_range(18.0..26.0) - (voice.level_dbfs + 20.0),
            );
            x
        }
        Kind::Noisy => {
            let mut x = synth::speech(voice, duration, rng);
            let snr = rng.random_range(0.0..5.0);
            synth::add_noise(&mut x, voice.level_dbfs, snr, rng);
            x
        }
        Kind::Corrupt => return corrupt(voice, rng),
        Kind::Speech | Kind::Shared => synth::speech(voice, duration, rng),
    };
    synth::to_wav(&samples)
}

/// An undecodable object: a truncated WAV, text, or nothing.
fn corrupt(voice: &Voice, rng: &mut ChaCha8Rng) -> Result<Vec<u8>, SynthError> {
    Ok(match rng.random_range(0..3) {
        0 => {
            let wav = synth::to_wav(&synth::speech(voice, 2.0, rng))?;
            let keep = (wav.len() as f64 * rng.random_range(0.2..0.6)) as usize;
            wav[..keep].to_vec()
        }
        1 => b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>\n".to_vec(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engage_model::AudioRef;
    use std::collections::BTreeMap;
    use std::io::Read;

    fn small(dir: &Path) -> GenDataArgs {
        GenDataArgs {
            learners: 6,
            responses: 12,
            bad_fraction: 0.1,
            ..GenDataArgs::new(dir)
        }
    }

    /// Every file under `dir` (relative path → bytes).
    fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("read_dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).expect("prefix").to_path_buf();
                    out.insert(rel, fs::read(&p).expect("read"));
                }
            }
        }
        out
    }

    #[test]
    fn small_run_writes_consistent_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = run(&small(tmp.path())).expect("run");
        let e = &s.expected;
        assert_eq!(e.learners, 6);
        assert_eq!(s.records, 6 * 12 + e.duplicates);
        assert_eq!(
            e.kept + e.rejected + e.non_english + e.duplicates,
            s.records
        );
        assert_eq!(e.matched + e.unmatched, e.kept);
        let a = &e.audio;
        assert_eq!(
            a.speech
                + a.shared_content
                + a.silent
                + a.clipped
                + a.noisy
                + a.corrupt
                + a.missing_object
                + a.foreign_bucket,
            e.matched_with_audio
        );
        assert!(e.matched > 0 && e.unmatched > 0 && e.rejected > 0 && e.non_english > 0);

        let log = fs::read(&s.activity_path).expect("log");
        assert_eq!(s.bytes, log.len() as u64);
        assert_eq!(
            log.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64,
            s.records
        );

        let mut csv = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(&s.sessions_path)
            .expect("csv");
        let header: Vec<String> = csv
            .headers()
            .expect("header")
            .iter()
            .map(String::from)
            .collect();
        assert_eq!(
            header,
            [
                "user_id",
                "session_id",
                "created_at",
                "milestone",
                "lesson",
                "progress",
                "phase"
            ]
        );
        assert_eq!(
            csv.records().count() as u64,
            e.sessions + e.bad_session_rows
        );

        // Every written object is under DIR/s3/<bucket>, and every s3:// link of the
        // allowed bucket in the log resolves (or is a deliberately missing object).
        let files = tree(&s.audio_root);
        assert_eq!(files.len() as u64, s.audio_files);
        assert!(files.keys().all(|k| k.starts_with("learner-audio")));
        let mut resolved = 0;
        for line in log.split(|&b| b == b'\n') {
            let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            for f in ["audio_url", "audio_link", "audioUrl", "audio"] {
                if let Some(Value::String(u)) = m.get(f)
                    && let Ok(r) = AudioRef::parse_allowed(u, &["learner-audio".to_string()])
                    && files.contains_key(&Path::new("learner-audio").join(r.key()))
                {
                    resolved += 1;
                }
            }
        }
        assert!(
            resolved as u64 >= s.audio_files,
            "{resolved} links for {} files",
            s.audio_files
        );
        let manifest: Value =
            serde_json::from_slice(&fs::read(tmp.path().join("manifest.json")).expect("manifest"))
                .expect("json");
        assert_eq!(manifest["records"], json!(s.records));
        assert_eq!(manifest["expected"]["kept"], json!(e.kept));
    }

    #[test]
    fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
        let (a, b, c) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
            tempfile::tempdir().expect("c"),
        );
        run(&small(a.path())).expect("a");
        run(&small(b.path())).expect("b");
        run(&GenDataArgs {
            seed: 7,
            ..small(c.path())
        })
        .expect("c");
        let (ta, tb, tc) = (tree(a.path()), tree(b.path()), tree(c.path()));
        assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
        for (k, v) in &ta {
            assert!(tb[k] == *v, "{} differs", k.display());
        }
        let log = Path::new("activity.jsonl");
        assert_ne!(ta[log], tc[log]);
    }

    #[test]
    fn no_audio_keeps_the_log_byte_identical() {
        let (a, b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let with = run(&small(a.path())).expect("with");
        let without = run(&GenDataArgs {
            no_audio: true,
            ..small(b.path())
        })
        .expect("without");
        assert_eq!(without.audio_files, 0);
        assert!(with.audio_files > 0);
        assert_eq!(
            fs::read(&with.activity_path).ok(),
            fs::read(&without.activity_path).ok()
        );
        assert_eq!(
            fs::read(&with.sessions_path).ok(),
            fs::read(&without.sessions_path).ok()
        );
        assert_eq!(with.expected, without.expected);
    }

    #[test]
    fn gzipped_array_parses_as_one_json_array() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = run(&GenDataArgs {
            format: LogFormat::Array,
            gzip: true,
            no_audio: true,
            bad_fraction: 0.2,
            ..small(tmp.path())
        })
        .expect("run");
        assert!(s.activity_path.ends_with("activity.json.gz"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(&s.activity_path).expect("open"))
            .read_to_string(&mut text)
            .expect("gunzip");
        let v: Vec<Value> = serde_json::from_str(&text).expect("one array");
        assert_eq!(v.len() as u64, s.records);
        assert!(s.expected.rejected > 0);
        assert!(v.iter().any(|x| !x.is_object()) || s.expected.rejected > 0);
    }

    #[test]
    fn target_bytes_grows_the_log_without_audio() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = run(&GenDataArgs {
            learners: 1,
            target_bytes: Some(300_000),
            ..GenDataArgs::new(tmp.path())
        })
        .expect("run");
        assert!(s.bytes >= 300_000, "{}", s.bytes);
        assert!(
            s.bytes < 330_000,
            "stops soon after the target: {}",
            s.bytes
        );
        assert_eq!(s.audio_files, 0);
        assert!(s.expected.learners > 1);
        assert!(!s.audio_root.exists());
    }

    #[test]
    fn responses_are_placed_as_classified() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let sessions: Vec<SessionRow> = (0..4)
            .map(|i| SessionRow {
                id: format!("s{i}"),
                created_ms: BASE_MS + i * DAY_MS,
                phase: 0,
            })
            .collect();
        let mut used = HashSet::new();
        let (mut near, mut far, mut boundary) = (0, 0, 0);
        for _ in 0..2_000 {
            let s = &sessions[rng.random_range(0..4)];
            let ts = place_response(&mut rng, s.created_ms, &sessions, &mut used);
            let d = sessions
                .iter()
                .map(|s| (s.created_ms - ts).abs())
                .min()
                .unwrap_or(i64::MAX);
            if d == TOLERANCE_MS {
                boundary += 1;
            }
            if d <= TOLERANCE_MS {
                near += 1;
            } else {
                far += 1;
            }
        }
        assert_eq!(used.len(), 2_000, "instants are unique per learner");
        assert!(
            near > 1_600 && far > 200 && boundary > 0,
            "{near} {far} {boundary}"
        );
    }

    #[test]
    fn bad_records_are_bad_and_keep_arrays_valid() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..200 {
            let line = bad_record("L1", BASE_MS, LogFormat::Jsonl, &mut rng);
            let ok_object = match serde_json::from_slice::<Value>(&line) {
                Ok(Value::Object(m)) => {
                    let has_user = m.get("user_id").is_some_and(|v| !v.is_null());
                    let good_ts = m
                        .get("timestamp")
                        .and_then(Value::as_str)
                        .is_some_and(|t| engage_model::parse_timestamp_str(t).is_ok())
                        || m.get("ets").is_some();
                    has_user && good_ts
                }
                _ => false,
            };
            assert!(!ok_object, "{}", String::from_utf8_lossy(&line));
            let array_line = bad_record("L1", BASE_MS, LogFormat::Array, &mut rng);
            assert!(serde_json::from_slice::<Value>(&array_line).is_ok());
        }
    }

    #[test]
    fn command_line_defaults_match_the_documented_ones() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: GenDataArgs,
        }
        let cli = Cli::try_parse_from(["gen-data", "--out", "/tmp/x"]).expect("parse");
        assert_eq!(cli.args, GenDataArgs::new("/tmp/x"));
        let cli = Cli::try_parse_from([
            "gen-data",
            "--out",
            "d",
            "--format",
            "array",
            "--gzip",
            "--target-bytes",
            "1000",
        ])
        .expect("parse");
        assert_eq!(cli.args.format, LogFormat::Array);
        assert!(cli.args.gzip);
        assert_eq!(cli.args.target_bytes, Some(1000));
        assert!(
            matches!(
                Cli::try_parse_from(["gen-data"]),
                Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument
            ),
            "--out is required"
        );
    }

    #[test]
    fn invalid_arguments_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        type Expected = fn(&GenDataError) -> bool;
        let cases: [(GenDataArgs, Expected); 3] = [
            (
                GenDataArgs {
                    bad_fraction: 1.5,
                    ..GenDataArgs::new(tmp.path())
                },
                |e| {
                    matches!(
                        e,
                        GenDataError::Fraction {
                            name: "--bad-fraction",
                            ..
                        }
                    )
                },
            ),
            (
                GenDataArgs {
                    bad_fraction: 0.6,
                    non_english_fraction: 0.6,
                    ..GenDataArgs::new(tmp.path())
                },
                |e| matches!(e, GenDataError::FractionsExceedOne),
            ),
            (
                GenDataArgs {
                    bucket: "Bad_Bucket".into(),
                    ..GenDataArgs::new(tmp.path())
                },
                |e| matches!(e, GenDataError::Bucket(b) if b == "Bad_Bucket"),
            ),
        ];
        for (args, expected) in cases {
            let e = run(&args).expect_err("invalid arguments must be refused");
            let e = e
                .downcast_ref::<GenDataError>()
                .unwrap_or_else(|| panic!("not a GenDataError: {e:#}"));
            assert!(expected(e), "{e}");
        }
    }
}
