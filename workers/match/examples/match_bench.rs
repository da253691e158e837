//! Match benchmark: loads the data written by `bench/match/gen.py`, then times
//! [`SessionIndex::build`] and [`match_records`] on it (loading is reported
//! separately). Driven by `bench/match/run.sh`.
//!
//! ```text
//! cargo run --release -p engage-match --example match_bench -- DATA_DIR \
//!     [--mode records|positions|shared] [--rule pandas|last-in-file] [--out FILE]
//! ```
//!
//! Modes (each run in its own process, so none reuses memory another freed):
//! - `records` (default): [`match_records`], owned `MatchedRecord`s — what the
//!   match worker gets;
//! - `positions`: [`match_positions`], the join indexer (each response's
//!   session position in the index) — the join result as borrowed views;
//! - `shared`: a what-if for the data model: the indexer, then records paired
//!   with a shared `Arc<SessionMatch>` (built per session, timed) instead of
//!   five cloned strings per response.
//!
//! Prints one JSON line: `{"engine","mode","rule","load_s","build_s","match_s",
//! "total_s","rows","matched","learners"}`. With `--out`, writes
//! `response_id,session_id` sorted by `response_id` so the assignments can be
//! compared with pandas' and polars'.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use engage_match::{
    DEFAULT_TOLERANCE_NS, MatchStats, SameInstantRule, SessionIndex, match_positions, match_records,
};
use engage_model::time::from_epoch_millis;
use engage_model::{ActivityRecord, Session, SessionMatch};
use rayon::prelude::*;

fn field<'a>(rec: &'a csv::ByteRecord, i: usize, what: &str) -> Result<&'a str> {
    let bytes = rec
        .get(i)
        .with_context(|| format!("missing column {what}"))?;
    std::str::from_utf8(bytes).with_context(|| format!("{what} is not UTF-8"))
}

fn millis(s: &str) -> Result<i64> {
    Ok(from_epoch_millis(s.parse().context("bad epoch ms")?)?)
}

fn load_sessions(path: &Path) -> Result<Vec<Session>> {
    let mut rdr = csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
    let mut rec = csv::ByteRecord::new();
    let mut out = Vec::new();
    // Columns as written by gen.py: user_id,session_id,created_at,milestone,lesson,progress,phase
    while rdr.read_byte_record(&mut rec)? {
        out.push(Session {
            user_id: field(&rec, 0, "user_id")?.to_owned(),
            session_id: field(&rec, 1, "session_id")?.to_owned(),
            created_at: millis(field(&rec, 2, "created_at")?)?,
            milestone: field(&rec, 3, "milestone")?.to_owned(),
            lesson: field(&rec, 4, "lesson")?.to_owned(),
            progress: field(&rec, 5, "progress")?.to_owned(),
            phase: field(&rec, 6, "phase")?.to_owned(),
            row: out.len() as u64,
        });
    }
    Ok(out)
}

fn load_responses(path: &Path) -> Result<Vec<ActivityRecord>> {
    let mut rdr = csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
    let mut rec = csv::ByteRecord::new();
    let mut out = Vec::new();
    // Columns as written by gen.py: response_id,user_id,timestamp,accuracy
    while rdr.read_byte_record(&mut rec)? {
        out.push(ActivityRecord {
            response_id: field(&rec, 0, "response_id")?.to_owned(),
            user_id: field(&rec, 1, "user_id")?.to_owned(),
            timestamp: millis(field(&rec, 2, "timestamp")?)?,
            audio_url: None,
            accuracy: field(&rec, 3, "accuracy")?.parse().ok(),
            original_text: None,
            response_text: None,
            session_id: None,
            sub_session_id: None,
        });
    }
    Ok(out)
}

/// What is built and timed.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Records,
    Positions,
    Shared,
}

struct Args {
    data: PathBuf,
    out: Option<PathBuf>,
    rule: SameInstantRule,
    mode: Mode,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let (mut data, mut out) = (None, None);
    let (mut rule, mut mode) = (SameInstantRule::Pandas, Mode::Records);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = Some(args.next().context("--out needs a path")?.into()),
            "--rule" => {
                rule = match args.next().as_deref() {
                    Some("pandas") => SameInstantRule::Pandas,
                    Some("last-in-file") => SameInstantRule::LastInFile,
                    other => bail!("unknown --rule {other:?}"),
                }
            }
            "--mode" => {
                mode = match args.next().as_deref() {
                    Some("records") => Mode::Records,
                    Some("positions") => Mode::Positions,
                    Some("shared") => Mode::Shared,
                    other => bail!("unknown --mode {other:?}"),
                }
            }
            _ if data.is_none() => data = Some(a.into()),
            _ => bail!("unexpected argument {a:?}"),
        }
    }
    let data = data.context(
        "usage: match_bench DATA_DIR [--mode records|positions|shared] \
         [--rule pandas|last-in-file] [--out FILE]",
    )?;
    Ok(Args {
        data,
        out,
        rule,
        mode,
    })
}

/// (response_id, session_id or "") for `--out`.
type Pair<'a> = (&'a str, &'a str);

fn write_pairs(path: &Path, mut pairs: Vec<Pair<'_>>) -> Result<()> {
    pairs.sort_unstable();
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["response_id", "session_id"])?;
    for (r, s) in pairs {
        w.write_record([r, s])?;
    }
    w.flush()?;
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;

    let t = Instant::now();
    let sessions = load_sessions(&args.data.join("sessions.csv"))?;
    let responses = load_responses(&args.data.join("responses.csv"))?;
    let load_s = t.elapsed().as_secs_f64();
    let rows = responses.len();

    let t = Instant::now();
    let index = SessionIndex::build_with_rule(sessions, args.rule);
    let build_s = t.elapsed().as_secs_f64();

    let report = |match_s: f64, stats: MatchStats| {
        println!(
            "{{\"engine\":\"engage-match\",\"mode\":\"{:?}\",\"rule\":\"{:?}\",\"load_s\":{load_s:.3},\
             \"build_s\":{build_s:.3},\"match_s\":{match_s:.3},\"total_s\":{:.3},\"rows\":{rows},\
             \"matched\":{},\"learners\":{}}}",
            args.mode,
            args.rule,
            build_s + match_s,
            stats.matched,
            index.learners()
        );
    };

    // Outputs are dropped after the report: freeing 10M records is not matching.
    let t = Instant::now();
    match args.mode {
        Mode::Records => {
            let (matched, stats) = match_records(responses, &index, DEFAULT_TOLERANCE_NS);
            report(t.elapsed().as_secs_f64(), stats);
            if let Some(path) = &args.out {
                let pairs = matched.iter().map(|m| {
                    let sid = m.session.as_ref().map_or("", |s| s.session_id.as_str());
                    (m.record.response_id.as_str(), sid)
                });
                write_pairs(path, pairs.collect())?;
            }
        }
        Mode::Positions => {
            let (positions, stats) = match_positions(&responses, &index, DEFAULT_TOLERANCE_NS);
            report(t.elapsed().as_secs_f64(), stats);
            if let Some(path) = &args.out {
                let pairs = responses.iter().zip(&positions).map(|(r, p)| {
                    let s = p.and_then(|p| index.session(p));
                    (
                        r.response_id.as_str(),
                        s.map_or("", |s| s.session_id.as_str()),
                    )
                });
                write_pairs(path, pairs.collect())?;
            }
        }
        Mode::Shared => {
            let shared: Vec<Arc<SessionMatch>> = (0..index.len())
                .filter_map(|i| index.session(i))
                .map(|s| Arc::new(SessionMatch::from(s)))
                .collect();
            let (positions, stats) = match_positions(&responses, &index, DEFAULT_TOLERANCE_NS);
            let joined: Vec<(ActivityRecord, Option<Arc<SessionMatch>>)> = responses
                .into_par_iter()
                .zip(positions.into_par_iter())
                .map(|(r, p)| (r, p.and_then(|p| shared.get(p)).cloned()))
                .collect();
            report(t.elapsed().as_secs_f64(), stats);
            if let Some(path) = &args.out {
                let pairs = joined.iter().map(|(r, s)| {
                    (
                        r.response_id.as_str(),
                        s.as_ref().map_or("", |s| s.session_id.as_str()),
                    )
                });
                write_pairs(path, pairs.collect())?;
            }
        }
    }
    Ok(())
}
