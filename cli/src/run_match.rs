//! `engage run`'s match step in bounded memory: learner partition by
//! partition, a few at a time, each written as sorted runs of `matched.csv`
//! rows (one per key range of learners), then a k-way merge per key range
//! ([`engage_aggregate::matched_runs`]), the ranges merged side by side
//! straight into their places in `matched.csv`.
//!
//! The sessions file is streamed into one spool file per learner partition
//! ([`spool_sessions`]), as clean spools the records. A partition's work:
//! read its sessions and its clean spool files (every piece, in file order;
//! clean writes them as [`compact`] frames of the five record fields
//! `matched.csv` shows, read back borrowed, without parsing); keep the first
//! occurrence of each response id (a response's repeats share its learner's
//! partition, so this is the batch-wide keep-first of
//! [`engage_aggregate::outputs::dedupe_first`]); find each response's
//! session with the match worker's [`SessionIndex`] (positions, no copies of
//! session strings); sort by the `matched.csv` key and write the runs. Peak
//! memory is `threads ×` one partition (its spool bytes, rows and sessions)
//! plus clean's buffers and one read buffer per run while merging; the
//! partition count (`--partitions`, by default from the input size,
//! [`auto_partitions`]) keeps a partition small whatever the log size.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Context;
use engage_aggregate::matched_runs::{RunWriter, matched_header, merge_run_rows};
use engage_aggregate::{MatchedView, SessionView};
use engage_clean::domain::SpoolFormat;
use engage_clean::domain::compact::{self, CompactRow};
use engage_match::{DEFAULT_TOLERANCE_NS, SessionIndex};
use engage_model::Session;
use engage_model::selection::SelectedLearners;
use engage_model::session::{SessionReject, parse_sessions};
use engage_model::time::Timestamp;

/// foldhash for the per-partition sets and maps of ids: SipHash over every
/// response and user id was about 5% of a `--stop-after match` profile.
type Fast = foldhash::fast::RandomState;
type FastSet<K> = HashSet<K, Fast>;
type FastMap<K, V> = HashMap<K, V, Fast>;

/// Spool bytes a partition should hold at most when `--partitions` is not
/// given: with two partitions in flight, about 2 × (this + its rows).
pub(crate) const TARGET_PARTITION_BYTES: u64 = 16 * 1024 * 1024;

/// Fewest partitions `engage run` uses by default (a small log still keeps
/// both cores busy while matching).
pub(crate) const MIN_PARTITIONS: u32 = 4;

/// Most partitions the default picks (each piece keeps a buffered file per
/// partition open while it is cleaned).
pub(crate) const MAX_AUTO_PARTITIONS: u32 = 4096;

/// How much bigger than its file a gzip log is assumed to be once decoded.
const GZIP_RATIO: u64 = 8;

/// The default partition count for activity logs of these sizes (gzip files
/// counted at [`GZIP_RATIO`] times their size): one per
/// [`TARGET_PARTITION_BYTES`] of input, at least [`MIN_PARTITIONS`].
pub(crate) fn auto_partitions(logs: &[(u64, bool)]) -> u32 {
    let bytes: u64 = logs
        .iter()
        .map(|&(len, gzip)| {
            if gzip {
                len.saturating_mul(GZIP_RATIO)
            } else {
                len
            }
        })
        .fold(0, u64::saturating_add);
    let n = bytes.div_ceil(TARGET_PARTITION_BYTES);
    u32::try_from(n)
        .unwrap_or(u32::MAX)
        .clamp(MIN_PARTITIONS, MAX_AUTO_PARTITIONS)
}

/// Counts of the streamed match, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StreamCounts {
    /// Rows of `matched.csv` (unique responses).
    pub rows: u64,
    /// Responses matched to a session.
    pub matched: u64,
    /// Matched responses without audio.
    pub no_audio: u64,
    /// Repeats of a response id dropped (beyond those clean dropped).
    pub duplicates: u64,
    /// Distinct learners.
    pub learners: u64,
}

impl StreamCounts {
    fn merge(&mut self, o: StreamCounts) {
        self.rows += o.rows;
        self.matched += o.matched;
        self.no_audio += o.no_audio;
        self.duplicates += o.duplicates;
        self.learners += o.learners;
    }
}

/// A sessions file spooled by learner partition (so no process holds every
/// session at once).
#[derive(Debug)]
pub(crate) struct SpooledSessions {
    /// One JSON Lines file of [`Session`]s per partition, file order kept.
    pub paths: Vec<PathBuf>,
    /// Sessions kept.
    pub kept: usize,
    /// Rejected rows, in file order.
    pub rejects: Vec<SessionReject>,
    /// With a milestone: the learners with a kept session at it.
    pub selected: Option<SelectedLearners>,
    /// A sample of the learners (at most [`LEARNER_SAMPLE`], each equally
    /// likely): where [`stream_match`] cuts `matched.csv` into key ranges
    /// merged side by side.
    pub learners: LearnerSample,
}

/// Most learners [`LearnerSample`] keeps.
const LEARNER_SAMPLE: usize = 4096;

/// A uniform sample of distinct learner ids in bounded memory: an id is
/// kept when the low `level` bits of its (fixed-seed) hash are zero, and the
/// level rises whenever more than [`LEARNER_SAMPLE`] ids are kept, so
/// repeats of a learner do not weigh more and the order of rows does not
/// matter.
#[derive(Debug, Default)]
pub(crate) struct LearnerSample {
    level: u32,
    ids: HashSet<String>,
}

impl LearnerSample {
    fn hash(id: &str) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(0x6c65_6172_6e65_7273).hash_one(id)
    }

    fn kept(id: &str, level: u32) -> bool {
        level == 0 || Self::hash(id).trailing_zeros() >= level
    }

    /// Offers one learner id.
    pub(crate) fn offer(&mut self, id: &str) {
        if !Self::kept(id, self.level) || self.ids.contains(id) {
            return;
        }
        self.ids.insert(id.to_string());
        while self.ids.len() > LEARNER_SAMPLE && self.level < 64 {
            self.level += 1;
            let level = self.level;
            self.ids.retain(|u| Self::kept(u, level));
        }
    }

    /// Up to `ranges - 1` ascending, distinct learner ids cutting the
    /// sampled learners into `ranges` groups of about the same size.
    pub(crate) fn splitters(&self, ranges: usize) -> Vec<String> {
        let mut ids: Vec<&String> = self.ids.iter().collect();
        ids.sort_unstable();
        let mut out: Vec<String> = (1..ranges.max(1))
            .filter_map(|i| ids.get(i * ids.len() / ranges).map(|u| u.to_string()))
            .collect();
        out.dedup();
        out
    }
}

/// Buffer per session spool file while spooling.
const SESSION_SINK_BUFFER: usize = 16 * 1024;

/// Streams a sessions CSV ([`parse_sessions`]'s rules) into one spool file
/// per learner partition under `work`; with `milestone`, also collects the
/// learners it selects (as [`SelectedLearners::from_sessions`] does).
pub(crate) fn spool_sessions(
    r: impl Read,
    partitions: u32,
    work: &Path,
    milestone: Option<&str>,
) -> anyhow::Result<SpooledSessions> {
    let paths: Vec<PathBuf> = (0..partitions)
        .map(|p| work.join(format!("sessions-{p:04}.jsonl")))
        .collect();
    let mut sinks = paths
        .iter()
        .map(|p| File::create(p).map(|f| BufWriter::with_capacity(SESSION_SINK_BUFFER, f)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot create the sessions spool")?;
    let mut out = SpooledSessions {
        paths: Vec::new(),
        kept: 0,
        rejects: Vec::new(),
        selected: None,
        learners: LearnerSample::default(),
    };
    let milestone = milestone.map(str::trim);
    let mut ids: HashSet<String> = HashSet::new();
    for row in parse_sessions(r)? {
        match row? {
            Ok(session) => {
                if milestone.is_some_and(|m| session.milestone.trim() == m) {
                    ids.insert(session.user_id.trim().to_string());
                }
                out.learners.offer(&session.user_id);
                let sink = &mut sinks
                    [SpoolFormat::Compact.partition_of(&session.user_id, partitions) as usize];
                serde_json::to_writer(&mut *sink, &session)?;
                sink.write_all(b"\n")?;
                out.kept += 1;
            }
            Err(reject) => out.rejects.push(reject),
        }
    }
    for sink in sinks {
        sink.into_inner()
            .map_err(|e| e.into_error())
            .context("cannot write the sessions spool")?;
    }
    out.paths = paths;
    out.selected = milestone.map(|_| SelectedLearners::from_ids(ids));
    Ok(out)
}

fn read_session_spool(path: &Path) -> anyhow::Result<Vec<Session>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).context("corrupt sessions work file"))
        .collect()
}

/// What the read buffers of one key range's merge may take together (one
/// buffer per partition's run).
const MERGE_BUDGET: usize = 4 * 1024 * 1024;

/// The read buffer of each run in a merge of `runs` runs: smaller as the
/// partition count grows, so the merge's memory does not grow with the log.
fn merge_buffer(runs: usize) -> usize {
    (MERGE_BUDGET / runs.max(1)).clamp(4 * 1024, 64 * 1024)
}

/// What matching one partition produced.
#[derive(Debug)]
struct PartitionDone {
    counts: StreamCounts,
    /// `matched.csv` bytes of each key range's run.
    range_bytes: Vec<u64>,
}

/// Matches one partition: `spools` in order (every piece's file of this
/// partition) against the sessions in `sessions`, written as sorted runs,
/// `runs[k]` holding the learners of key range `k` (`splitters`, ascending,
/// start ranges 1, 2, …).
fn match_partition(
    spools: &[PathBuf],
    sessions: &Path,
    runs: &[PathBuf],
    splitters: &[String],
) -> anyhow::Result<PartitionDone> {
    anyhow::ensure!(runs.len() == splitters.len() + 1, "one run per key range");
    let sessions = read_session_spool(sessions)?;
    let bufs = spools
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .collect::<anyhow::Result<Vec<Vec<u8>>>>()?;
    let mut rows: Vec<CompactRow<'_>> = Vec::new();
    for buf in &bufs {
        for row in compact::frames(buf) {
            rows.push(row.context("corrupt work file")?);
        }
    }
    anyhow::ensure!(
        u32::try_from(rows.len()).is_ok(),
        "a learner partition holds more than 2^32 records: use more --partitions"
    );
    let mut counts = StreamCounts::default();
    let read = rows.len() as u64;
    // Keep-first by response id, in spool order (= input order).
    let keep: Vec<bool> = {
        let mut seen: FastSet<[u8; 16]> =
            FastSet::with_capacity_and_hasher(rows.len(), Fast::default());
        rows.iter().map(|r| seen.insert(r.id)).collect()
    };
    let mut keep = keep.into_iter();
    rows.retain(|_| keep.next().unwrap_or(false));
    let index = SessionIndex::build(sessions);
    // Learners ranked by id once, so the sort compares integers and only
    // falls back to response ids for one learner's equal instants (sorting
    // by the strings themselves chased a pointer per comparison).
    let mut learners: Vec<&str> = {
        let mut set: FastSet<&str> = FastSet::default();
        rows.iter()
            .map(|r| r.user_id)
            .filter(|u| set.insert(u))
            .collect()
    };
    learners.sort_unstable();
    let rank: FastMap<&str, u32> = learners
        .iter()
        .enumerate()
        .map(|(i, u)| (*u, i as u32))
        .collect();
    counts.learners = learners.len() as u64;
    let mut order: Vec<(u32, Timestamp, u32, Option<usize>)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                rank.get(r.user_id).copied().unwrap_or(u32::MAX),
                r.timestamp,
                i as u32,
                index.nearest_position(r.user_id, r.timestamp, DEFAULT_TOLERANCE_NS),
            )
        })
        .collect();
    order.sort_unstable_by(|a, b| {
        // Id bytes order as their fixed-width lowercase hex does.
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| rows[a.2 as usize].id.cmp(&rows[b.2 as usize].id))
    });

    let mut writers = runs
        .iter()
        .map(|run| {
            File::create(run)
                .map(|f| RunWriter::new(BufWriter::with_capacity(128 * 1024, f)))
                .with_context(|| format!("cannot create {}", run.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Rows come in learner order, so the key range only moves forward.
    let mut range = 0;
    for &(_, _, i, pos) in &order {
        let r = &rows[i as usize];
        while splitters
            .get(range)
            .is_some_and(|s| r.user_id >= s.as_str())
        {
            range += 1;
        }
        let w = &mut writers[range];
        let session = pos.and_then(|p| index.session(p)).map(SessionView::from);
        let audio_url = r.audio_url;
        counts.rows += 1;
        if session.is_some() {
            counts.matched += 1;
            if audio_url.is_none() {
                counts.no_audio += 1;
            }
        }
        let response_id = r.response_id();
        w.push(&MatchedView {
            response_id: response_id.as_str(),
            user_id: r.user_id,
            timestamp: r.timestamp,
            audio_url,
            accuracy: r.accuracy,
            session,
        })?;
    }
    let range_bytes = writers.iter().map(RunWriter::csv_bytes).collect();
    for w in writers {
        w.finish()?;
    }
    counts.duplicates = read - counts.rows;
    Ok(PartitionDone {
        counts,
        range_bytes,
    })
}

/// Matches every partition (`pieces[k][p]` is piece `k`'s spool of partition
/// `p`; `sessions.paths[p]` that partition's session spool,
/// [`spool_sessions`]) with at most `threads` partitions in flight, deletes
/// the spool files as they are consumed, and writes `matched.csv` to `out`.
///
/// The merge is parallel too: `matched.csv` is cut into `threads` key
/// ranges at learners from the sessions' sample, every partition writes one
/// run per range, and each range is merged by its own thread straight into
/// its place in the file (its offset is known: the runs' writers count the
/// bytes of their rows). A sample that is unrepresentative only makes the
/// ranges uneven, never the file different.
pub(crate) fn stream_match(
    pieces: &[Vec<PathBuf>],
    sessions: &SpooledSessions,
    work: &Path,
    out: &Path,
    threads: usize,
) -> anyhow::Result<StreamCounts> {
    let partitions = sessions.paths.len();
    let threads = threads.max(1);
    let splitters = sessions.learners.splitters(threads);
    let ranges = splitters.len() + 1;
    let run_path = |p: usize, k: usize| work.join(format!("match-{p:04}-{k:02}.run"));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<anyhow::Result<PartitionDone>>> = Mutex::new(Vec::new());
    let worker = || {
        while !failed.load(Ordering::Relaxed) {
            let p = next.fetch_add(1, Ordering::Relaxed);
            if p >= partitions {
                break;
            }
            let mut spools: Vec<PathBuf> =
                pieces.iter().filter_map(|pc| pc.get(p).cloned()).collect();
            let runs: Vec<PathBuf> = (0..ranges).map(|k| run_path(p, k)).collect();
            let r = match_partition(&spools, &sessions.paths[p], &runs, &splitters).and_then(|c| {
                spools.push(sessions.paths[p].clone());
                for s in &spools {
                    std::fs::remove_file(s)
                        .with_context(|| format!("cannot remove {}", s.display()))?;
                }
                Ok(c)
            });
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            match results.lock() {
                Ok(mut v) => v.push(r),
                Err(poisoned) => poisoned.into_inner().push(r),
            }
        }
    };
    let panicked = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.clamp(1, partitions.max(1)))
            .map(|_| s.spawn(worker))
            .collect();
        handles.into_iter().any(|h| h.join().is_err())
    });
    if panicked {
        anyhow::bail!("a match thread panicked");
    }
    let mut counts = StreamCounts::default();
    let mut range_bytes = vec![0u64; ranges];
    for r in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let done = r?;
        counts.merge(done.counts);
        for (total, b) in range_bytes.iter_mut().zip(&done.range_bytes) {
            *total += b;
        }
    }

    // Each range's offset in the file: the header, then the ranges before it.
    let header = matched_header()?;
    let mut offsets = Vec::with_capacity(ranges);
    let mut at = header.len() as u64;
    for b in &range_bytes {
        offsets.push(at);
        at += b;
    }
    let size = at;
    File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let merge_range = |k: usize| -> anyhow::Result<u64> {
        let runs = (0..partitions)
            .map(|p| {
                File::open(run_path(p, k))
                    .map(|f| BufReader::with_capacity(merge_buffer(partitions), f))
                    .with_context(|| format!("cannot open match run {p}/{k}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut file = OpenOptions::new()
            .write(true)
            .open(out)
            .with_context(|| format!("cannot open {}", out.display()))?;
        // Range 0 writes the header in front of its rows.
        let start = if k == 0 { 0 } else { offsets[k] };
        file.seek(SeekFrom::Start(start))?;
        let mut w = BufWriter::with_capacity(1024 * 1024, file);
        if k == 0 {
            w.write_all(&header)?;
        }
        let rows = merge_run_rows(runs, &mut w)?;
        w.into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", out.display()))?;
        Ok(rows)
    };
    let merged: Vec<anyhow::Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ranges)
            .map(|k| s.spawn(move || merge_range(k)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a merge thread panicked")))
            })
            .collect()
    });
    let mut written = 0;
    for r in merged {
        written += r?;
    }
    anyhow::ensure!(
        written == counts.rows,
        "matched.csv has {written} rows, the partitions produced {}",
        counts.rows
    );
    let len = std::fs::metadata(out)?.len();
    anyhow::ensure!(
        len == size,
        "matched.csv has {len} bytes, its rows make {size}"
    );
    for p in 0..partitions {
        for k in 0..ranges {
            std::fs::remove_file(run_path(p, k))?;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engage_aggregate::outputs::dedupe_first;
    use engage_aggregate::write_matched_csv;
    use engage_clean::domain::PartitionWriter;
    use engage_match::match_records;
    use engage_model::session::read_sessions;
    use engage_model::{ActivityRecord, MatchedRecord};
    use rand::{Rng, SeedableRng};

    const MIN: i64 = 60_000_000_000;

    /// A sessions CSV with awkward ids, shared instants and a few bad rows.
    fn sessions_csv(rng: &mut rand_chacha::ChaCha8Rng, users: &[&str]) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "user_id",
            "session_id",
            "created_at",
            "milestone",
            "lesson",
            "progress",
            "phase",
        ])
        .expect("header");
        for row in 0..60 {
            let u = users[rng.random_range(0..users.len())];
            // Few instants, so several sessions share one; epoch milliseconds.
            let at = (rng.random_range(0..12) * 5 * MIN / 1_000_000).to_string();
            let at = if row % 17 == 5 {
                "yesterday".to_string()
            } else {
                at
            };
            let milestone = format!("M{}", row % 2);
            let phase = format!("P{}", row % 3);
            w.write_record([u, &format!("s{row}"), &at, &milestone, "P,1", "-5", &phase])
                .expect("row");
        }
        w.into_inner().expect("csv")
    }

    fn dataset(seed: u64) -> (Vec<Vec<ActivityRecord>>, Vec<u8>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let users = ["1", "2", "10", "-7", "=u", "a\"b", "é", "tab\tx", "u9"];
        let sessions = sessions_csv(&mut rng, &users);
        let mut pieces: Vec<Vec<ActivityRecord>> = vec![Vec::new(), Vec::new(), Vec::new()];
        let mut all: Vec<ActivityRecord> = Vec::new();
        for _ in 0..400 {
            let repeat = !all.is_empty() && rng.random_bool(0.1);
            let r = if repeat {
                // The same response again (same id), possibly another piece,
                // possibly with other pass-through fields.
                let mut r = all[rng.random_range(0..all.len())].clone();
                r.response_text = Some("again".into());
                r
            } else {
                let u = users[rng.random_range(0..users.len())];
                let ts = rng.random_range(-2..62) * MIN + rng.random_range(0..3) * MIN / 2;
                let audio = match rng.random_range(0..4) {
                    0 => None,
                    1 => Some("s3://b/a,\"q\".wav".to_string()),
                    _ => Some(format!("s3://b/{}.wav", rng.random_range(0..1000))),
                };
                ActivityRecord {
                    response_id: engage_model::response_id(u, ts, audio.as_deref()),
                    user_id: u.into(),
                    timestamp: ts,
                    audio_url: audio,
                    accuracy: rng
                        .random_bool(0.7)
                        .then(|| rng.random_range(0..10_000) as f64 / 100.0),
                    original_text: Some("prompt".into()),
                    response_text: None,
                    session_id: None,
                    sub_session_id: None,
                }
            };
            all.push(r.clone());
            pieces[rng.random_range(0..3)].push(r);
        }
        (pieces, sessions)
    }

    /// The streamed `matched.csv` is byte for byte what the in-memory path
    /// (match every partition, keep-first across all, render) writes, and
    /// the counts are the summary's.
    #[test]
    fn streamed_matched_csv_equals_the_in_memory_one() {
        for (seed, parts, threads) in [(1, 1, 1), (2, 3, 2), (3, 5, 2), (4, 16, 3)] {
            let (pieces, csv) = dataset(seed);
            let dir = tempfile::tempdir().expect("tempdir");
            let mut spools: Vec<Vec<PathBuf>> = Vec::new();
            for (k, piece) in pieces.iter().enumerate() {
                let paths: Vec<PathBuf> = (0..parts)
                    .map(|p| dir.path().join(format!("k{k}-p{p}.jsonl")))
                    .collect();
                let files = paths
                    .iter()
                    .map(File::create)
                    .collect::<std::io::Result<Vec<_>>>()
                    .expect("create");
                let mut w =
                    PartitionWriter::with_format(files, SpoolFormat::Compact).expect("writer");
                for r in piece {
                    w.write(r).expect("write");
                }
                w.finish().expect("finish");
                spools.push(paths);
            }

            let parsed = read_sessions(csv.as_slice()).expect("sessions");
            assert!(!parsed.rejects.is_empty(), "bad session rows exercised");
            // The in-memory path: every record (piece order) against every
            // session, then keep-first by response id.
            let index = SessionIndex::build(parsed.sessions.clone());
            let recs: Vec<ActivityRecord> = pieces.iter().flatten().cloned().collect();
            let all: Vec<MatchedRecord> = match_records(recs, &index, DEFAULT_TOLERANCE_NS).0;
            let (records, dups) = dedupe_first(all);
            let mut want = Vec::new();
            write_matched_csv(&mut want, &records).expect("render");

            let spooled =
                spool_sessions(csv.as_slice(), parts, dir.path(), Some(" M1 ")).expect("spool");
            assert_eq!(spooled.kept, parsed.sessions.len());
            assert_eq!(spooled.rejects, parsed.rejects);
            assert_eq!(
                spooled.selected,
                Some(SelectedLearners::from_sessions(
                    parsed.sessions.iter(),
                    "M1"
                ))
            );
            let out = dir.path().join("matched.csv");
            let c = stream_match(&spools, &spooled, dir.path(), &out, threads).expect("stream");
            let got = std::fs::read(&out).expect("matched.csv");
            assert_eq!(
                String::from_utf8(got).expect("utf-8"),
                String::from_utf8(want).expect("utf-8"),
                "seed {seed}, {parts} partitions"
            );
            let matched = records.iter().filter(|r| r.session.is_some()).count() as u64;
            assert!(
                matched > 0 && matched < records.len() as u64,
                "seed {seed}: both kinds"
            );
            assert!(dups > 0, "seed {seed}: repeats exercised");
            assert_eq!(
                c,
                StreamCounts {
                    rows: records.len() as u64,
                    matched,
                    no_audio: records
                        .iter()
                        .filter(|r| r.session.is_some() && r.record.audio_url.is_none())
                        .count() as u64,
                    duplicates: dups,
                    learners: records
                        .iter()
                        .map(|r| r.record.user_id.as_str())
                        .collect::<HashSet<_>>()
                        .len() as u64,
                },
                "seed {seed}"
            );
            // Spools and runs are consumed.
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .expect("dir")
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            assert_eq!(left, vec![std::ffi::OsString::from("matched.csv")]);
        }
    }

    #[test]
    fn a_corrupt_spool_line_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("s.jsonl");
        // A frame cut inside its id.
        std::fs::write(&spool, [7u8; 9]).expect("write");
        let header = b"user_id,session_id,created_at,milestone,lesson,progress\n";
        let sessions = spool_sessions(&header[..], 1, dir.path(), None).expect("sessions");
        let err = stream_match(
            &[vec![spool]],
            &sessions,
            dir.path(),
            &dir.path().join("m.csv"),
            1,
        )
        .expect_err("corrupt");
        assert!(format!("{err:#}").contains("corrupt work file"), "{err:#}");
    }

    /// The sample stays bounded, ignores repeats and row order, and cuts the
    /// learners into ranges of about equal size.
    #[test]
    fn learner_sample_is_bounded_and_splits_evenly() {
        let ids: Vec<String> = (0..50_000).map(|i| format!("learner-{i:05}")).collect();
        let mut a = LearnerSample::default();
        for id in ids.iter().chain(&ids) {
            a.offer(id);
        }
        let mut b = LearnerSample::default();
        for id in ids.iter().rev() {
            b.offer(id);
        }
        assert!(a.ids.len() <= LEARNER_SAMPLE && a.ids.len() > LEARNER_SAMPLE / 4);
        assert_eq!(a.ids, b.ids);
        let cuts = a.splitters(4);
        assert_eq!(cuts.len(), 3);
        let mut sizes = [0usize; 4];
        for id in &ids {
            sizes[cuts.partition_point(|c| c.as_str() <= id.as_str())] += 1;
        }
        assert!(
            sizes.iter().all(|&n| (9_000..16_000).contains(&n)),
            "{sizes:?}"
        );
        assert!(LearnerSample::default().splitters(4).is_empty());
        assert!(a.splitters(1).is_empty());
    }

    #[test]
    fn auto_partitions_grow_with_the_input_and_stay_in_bounds() {
        assert_eq!(auto_partitions(&[]), MIN_PARTITIONS);
        assert_eq!(auto_partitions(&[(10 << 20, false)]), MIN_PARTITIONS);
        assert_eq!(auto_partitions(&[(100 << 20, false)]), 7);
        assert_eq!(
            auto_partitions(&[(5_000_000_000, false)]),
            5_000_000_000u64.div_ceil(TARGET_PARTITION_BYTES) as u32
        );
        assert_eq!(
            auto_partitions(&[(500 << 20, true)]),
            auto_partitions(&[(4000 << 20, false)])
        );
        assert_eq!(auto_partitions(&[(u64::MAX, true)]), MAX_AUTO_PARTITIONS);
    }
}
