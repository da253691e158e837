//! `engage run`: the whole pipeline in one process on one machine — the
//! embedded default and the reference the fleet's outputs are compared with.
//!
//! It uses the same domain functions as the workers (clean, match, probe,
//! acoustic analysis, aggregation, output rendering) so that, for the same
//! input, it writes byte-identical `matched.csv`, `analysis.csv`,
//! `report.csv`, `report.json` and `report.html`. Work goes to a
//! `OUTDIR.partial` directory that is renamed to OUTDIR only when everything
//! succeeded, so nothing half-written ever looks complete.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use engage_aggregate::html::RejectExamples;
use engage_aggregate::outputs::{count_into, dedupe_first, render};
use engage_aggregate::{Weights, aggregate_all};
use engage_analyze::acoustic::analyze_bytes;
use engage_clean::domain::{
    ActivityReader, CleanOptions, CleanStats, PieceSinks, SpoolFormat, clean_into, clean_parallel,
    is_splittable, split_ranges,
};
use engage_clean::plan::{activity_counts, partition_sessions, session_counts};
use engage_download::domain::{AUDIO_MISSING, memory_need, validate};
use engage_match::{DEFAULT_TOLERANCE_NS, SessionIndex, match_records};
use engage_model::selection::SelectedLearners;
use engage_model::session::read_sessions;
use engage_model::summary::Summary;
use engage_model::{ActivityRecord, AnalysisOutcome, AudioRef, MatchedRecord};
use engage_runtime::audio_budget::{AudioBudget, Held, HoldError};
use engage_runtime::config::DEFAULT_AUDIO_MEMORY_BYTES;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ordered_out::OrderedFile;
use crate::run_match::{SpooledSessions, auto_partitions, spool_sessions, stream_match};
use crate::run_segments::{DEFAULT_SEGMENT_BYTES, clean_segmented};

/// Clean's per-piece duplicate window when matching is streamed.
const STREAMED_DEDUP_CAPACITY: usize = 1 << 16;

/// Where the sessions are while the run goes on.
enum HeldSessions {
    /// Parsed, all of them (the full pipeline).
    InMemory(Vec<engage_model::Session>),
    /// One spool file per learner partition (`--stop-after match`).
    Spooled(SpooledSessions),
}
use rayon::prelude::*;

/// Where `engage run` may stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum StopAfter {
    /// After cleaning: `cleaned.jsonl`, `rejects.jsonl`, `summary.json`.
    Clean,
    /// After matching: adds `matched.csv`.
    Match,
    /// After analysis: adds `analysis.csv`.
    Analyze,
}

/// Arguments of `engage run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Activity log(s): JSON Lines or a JSON array, optionally .gz. Repeat for several files.
    #[arg(long, required = true)]
    pub activity: Vec<PathBuf>,
    /// Sessions CSV.
    #[arg(long)]
    pub sessions: PathBuf,
    /// Directory laid out like an S3 server: `s3://bucket/key` is read from DIR/bucket/key.
    #[arg(long)]
    pub s3_root: PathBuf,
    /// Buckets audio may be read from (comma-separated); any other link is a failed item.
    #[arg(long, value_delimiter = ',', required = true)]
    pub audio_buckets: Vec<String>,
    /// Select these learners (comma-separated ids).
    #[arg(long, value_delimiter = ',', group = "select")]
    pub users: Option<Vec<String>>,
    /// Select the learners listed in this file (one id per line).
    #[arg(long, group = "select")]
    pub users_file: Option<PathBuf>,
    /// Select learners with at least one session at this milestone.
    #[arg(long, group = "select")]
    pub milestone: Option<String>,
    /// Stop after a stage and write what is done so far.
    #[arg(long, value_enum)]
    pub stop_after: Option<StopAfter>,
    /// Output directory (must not exist, or be empty, unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Combined-score weights engagement,emotional,accuracy.
    #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [0.4, 0.2, 0.4])]
    pub weights: Vec<f64>,
    /// Learner partitions: the unit of matching (two at a time on two cores);
    /// fewer, bigger partitions take more memory. Default: one per 16 MiB of
    /// activity log (gzip counted at 8× its size), at least 4.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// With --stop-after clean, a gzip or JSON-array log is decompressed on
    /// one thread and cut into segments of about this many (decompressed)
    /// bytes, cleaned on the other threads as they come (about four
    /// segments are in memory at a time).
    #[arg(long, default_value_t = DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Runs the pipeline and returns the summary (also written to OUTDIR).
pub(crate) fn run(args: &RunArgs) -> anyhow::Result<Summary> {
    let weights = match args.weights.as_slice() {
        [e, m, a] => Weights {
            engagement: *e,
            emotional: *m,
            accuracy: *a,
        },
        _ => bail!("--weights takes three numbers: engagement,emotional,accuracy"),
    };
    weights.validate().context("--weights")?;
    if args.segment_bytes == 0 {
        bail!("--segment-bytes must be at least 1");
    }
    if args.partitions == Some(0) {
        bail!("--partitions must be at least 1");
    }
    for a in &args.activity {
        File::open(a).with_context(|| format!("cannot read activity log {}", a.display()))?;
    }
    if !args.s3_root.is_dir() {
        bail!("--s3-root {} is not a directory", args.s3_root.display());
    }
    let partial = prepare_out(&args.out, args.force)?;
    let result = run_into(args, &weights, &partial);
    match result {
        Ok(summary) => {
            if args.out.exists() {
                std::fs::remove_dir_all(&args.out)
                    .with_context(|| format!("cannot replace {}", args.out.display()))?;
            }
            std::fs::rename(&partial, &args.out)
                .with_context(|| format!("cannot move results to {}", args.out.display()))?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn prepare_out(out: &Path, force: bool) -> anyhow::Result<PathBuf> {
    if out.exists() {
        let non_empty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true);
        if non_empty && !force {
            bail!(
                "output directory {} exists and is not empty (use --force to replace it)",
                out.display()
            );
        }
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let partial = out.with_file_name(format!("{name}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot clear {}", partial.display()))?;
    }
    std::fs::create_dir_all(partial.join("work"))
        .with_context(|| format!("cannot create {}", partial.display()))?;
    Ok(partial)
}

fn run_into(args: &RunArgs, weights: &Weights, out: &Path) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut rejects = BufWriter::new(File::create(out.join("rejects.jsonl"))?);

    let work = out.join("work");
    let partitions = match args.partitions {
        Some(p) => p,
        None => {
            let mut logs = Vec::new();
            for a in &args.activity {
                let len = std::fs::metadata(a)?.len();
                let mut magic = [0u8; 2];
                let gzip = std::io::Read::read_exact(&mut File::open(a)?, &mut magic).is_ok()
                    && magic == [0x1f, 0x8b];
                logs.push((len, gzip));
            }
            auto_partitions(&logs)
        }
    };
    // `--stop-after match` streams: sessions and records are spooled by
    // learner partition and matched a few partitions at a time, so memory
    // does not grow with the input (run_match.rs). The later stages need
    // every record at once and keep them in memory.
    let streamed = args.stop_after == Some(StopAfter::Match);
    // `--stop-after clean` only needs the sessions' counts, rejects and
    // milestone selection: it streams them too (into one spool file that is
    // never read), so its memory does not grow with the sessions file.
    let clean_only = args.stop_after == Some(StopAfter::Clean);

    // Sessions and selection.
    let sessions_file = File::open(&args.sessions)
        .with_context(|| format!("cannot read sessions {}", args.sessions.display()))?;
    let (held, session_rejects, milestone_selection) = if streamed || clean_only {
        let mut s = spool_sessions(
            BufReader::new(sessions_file),
            if clean_only { 1 } else { partitions },
            &work,
            args.milestone.as_deref(),
        )
        .with_context(|| format!("sessions file {}", args.sessions.display()))?;
        summary.sessions = session_counts(s.kept, &s.rejects);
        let rejects = std::mem::take(&mut s.rejects);
        let selected = s.selected.take();
        (HeldSessions::Spooled(s), rejects, selected)
    } else {
        let parsed = read_sessions(BufReader::new(sessions_file))
            .with_context(|| format!("sessions file {}", args.sessions.display()))?;
        summary.sessions = session_counts(parsed.sessions.len(), &parsed.rejects);
        let selected = args
            .milestone
            .as_ref()
            .map(|m| SelectedLearners::from_sessions(parsed.sessions.iter(), m));
        (
            HeldSessions::InMemory(parsed.sessions),
            parsed.rejects,
            selected,
        )
    };
    let selection = if let Some(ids) = &args.users {
        SelectedLearners::from_ids(ids.iter())
    } else if let Some(f) = &args.users_file {
        let file =
            File::open(f).with_context(|| format!("cannot read users file {}", f.display()))?;
        SelectedLearners::from_reader(BufReader::new(file))
            .with_context(|| format!("users file {}", f.display()))?
    } else if let Some(selected) = milestone_selection {
        selected
    } else {
        SelectedLearners::All
    };

    // Clean, into partition files under work/.
    let mut pieces: Vec<Vec<PathBuf>> = Vec::new();
    let mut stats = Vec::new();
    let opts = if streamed {
        // Repeats are dropped per partition by response id anyway (same
        // result, see dedupe in run_match.rs), so clean's per-piece window
        // only needs to catch near repeats: a full 2^20-id window per piece
        // in flight was most of the memory of a 5 GB run.
        CleanOptions {
            dedup_capacity: STREAMED_DEDUP_CAPACITY,
            // Scratch spools read back by this process: binary frames of the
            // matched.csv fields instead of JSON Lines (run_match.rs).
            spool: SpoolFormat::Compact,
            ..CleanOptions::default()
        }
    } else {
        CleanOptions::default()
    };
    // `--stop-after clean` writes its pieces straight into `cleaned.jsonl`
    // in order (ordered_out.rs) instead of spooling them all and copying.
    let direct = if clean_only {
        Some(OrderedFile::create(
            &out.join("cleaned.jsonl"),
            work.clone(),
        )?)
    } else {
        None
    };
    for (i, path) in args.activity.iter().enumerate() {
        let target = match &direct {
            Some(file) => Target::Ordered {
                file,
                first_piece: stats.len(),
            },
            None => Target::Partitions(partitions),
        };
        let (piece_files, piece_stats) = clean_file(
            path,
            i,
            &work,
            target,
            &selection,
            &opts,
            args.segment_bytes,
            &mut rejects,
        )?;
        pieces.extend(piece_files);
        stats.extend(piece_stats);
    }
    for r in &session_rejects {
        serde_json::to_writer(
            &mut rejects,
            &serde_json::json!({"source": "sessions", "row": r.row, "reason": r.reason, "detail": r.detail}),
        )?;
        rejects.write_all(b"\n")?;
    }
    rejects.flush()?;
    for s in &stats {
        summary.activity.merge(&activity_counts(s));
    }
    if let Some(file) = direct {
        file.finish(stats.len()).context("writing cleaned.jsonl")?;
        return finish(out, summary);
    }

    let sessions = match held {
        HeldSessions::Spooled(spooled) => {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            let c = stream_match(&pieces, &spooled, &work, &out.join("matched.csv"), threads)?;
            summary.activity.duplicates += c.duplicates;
            summary.activity.kept = summary.activity.kept.saturating_sub(c.duplicates);
            summary.matched = c.matched;
            summary.unmatched = c.rows - c.matched;
            summary.no_audio = c.no_audio;
            summary.learners = c.learners;
            summary.analyzed = 0;
            summary.failed.clear();
            summary.report_rows = 0;
            return finish(out, summary);
        }
        HeldSessions::InMemory(sessions) => sessions,
    };
    let by_part = partition_sessions(sessions, partitions);

    // Match, partition by partition in parallel, holding every record: the
    // analysis and the report below need them all (only `--stop-after
    // match` is streamed).
    let matched_parts: Vec<Vec<MatchedRecord>> = (0..partitions)
        .into_par_iter()
        .map(|p| -> anyhow::Result<Vec<MatchedRecord>> {
            let mut records = Vec::new();
            for piece in &pieces {
                records.extend(read_records(&piece[p as usize])?);
            }
            let index = SessionIndex::build(by_part.get(&p).cloned().unwrap_or_default());
            Ok(match_records(records, &index, DEFAULT_TOLERANCE_NS).0)
        })
        .collect::<anyhow::Result<_>>()?;
    // A response's repeats share its learner's partition, and each partition
    // lists pieces in file order: keep-first keeps the first occurrence in
    // file order, as the fleet does.
    let (records, cross_dups) = dedupe_first(matched_parts.into_iter().flatten());
    summary.activity.duplicates += cross_dups;
    summary.activity.kept = summary.activity.kept.saturating_sub(cross_dups);

    // Download (validate) and analyze, in parallel, once per distinct audio.
    let outcomes = analyze_all(&records, &args.s3_root, &args.audio_buckets);
    if args.stop_after == Some(StopAfter::Analyze) {
        count_into(&mut summary, &records, &outcomes, &[]);
        let files = render(
            &records,
            &outcomes,
            Vec::new(),
            &summary,
            &RejectExamples::default(),
        )?;
        write_files(
            out,
            files
                .into_iter()
                .filter(|(n, _)| ["matched.csv", "analysis.csv", "summary.json"].contains(n)),
        )?;
        return finish(out, summary);
    }

    let by_id: HashMap<String, AnalysisOutcome> = outcomes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let rows = aggregate_all(&records, &by_id, weights);
    count_into(&mut summary, &records, &outcomes, &rows);
    // report.html shows a few rejects of each reason.
    let examples =
        RejectExamples::from_reader(BufReader::new(File::open(out.join("rejects.jsonl"))?))?;
    write_files(out, render(&records, &outcomes, rows, &summary, &examples)?)?;
    finish(out, summary)
}

fn finish(out: &Path, summary: Summary) -> anyhow::Result<Summary> {
    let mut json = serde_json::to_vec_pretty(&summary)?;
    json.push(b'\n');
    std::fs::write(out.join("summary.json"), json)?;
    std::fs::write(out.join("summary.txt"), summary.render())?;
    std::fs::remove_dir_all(out.join("work"))?;
    Ok(summary)
}

fn write_files<'a>(
    out: &Path,
    files: impl IntoIterator<Item = (&'a str, Vec<u8>)>,
) -> anyhow::Result<()> {
    for (name, bytes) in files {
        std::fs::write(out.join(name), bytes).with_context(|| format!("cannot write {name}"))?;
    }
    Ok(())
}

fn read_records(path: &Path) -> anyhow::Result<Vec<ActivityRecord>> {
    let bytes = std::fs::read(path)?;
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).context("corrupt work file"))
        .collect()
}

/// Where [`clean_file`] writes kept records.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// Per-partition work files.
    Partitions(u32),
    /// Straight into one file, pieces numbered on from `first_piece`.
    Ordered {
        file: &'a OrderedFile,
        first_piece: usize,
    },
}

/// Cleans one activity file into per-partition work files (or the ordered
/// output): big plain JSON Lines files in parallel byte ranges (both cores);
/// into the ordered output, gzip and JSON-array files in segments cut by one
/// thread and cleaned by the others (run_segments.rs); the rest
/// sequentially. Returns each piece's work files (none for the ordered
/// output) and counters.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn clean_file(
    path: &Path,
    file_ix: usize,
    work: &Path,
    target: Target<'_>,
    selection: &SelectedLearners,
    opts: &CleanOptions,
    segment_bytes: u64,
    rejects: &mut impl Write,
) -> anyhow::Result<(Vec<Vec<PathBuf>>, Vec<CleanStats>)> {
    let partitions = match target {
        Target::Partitions(p) => p,
        Target::Ordered { .. } => 1,
    };
    let len = std::fs::metadata(path)?.len();
    let splittable = is_splittable(File::open(path)?)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let part_path =
        |piece: usize, p: u32| work.join(format!("f{file_ix:03}-r{piece:04}-part-{p:04}.spool"));
    let rej_path = |piece: usize| work.join(format!("f{file_ix:03}-r{piece:04}-rejects.jsonl"));
    // Buffered: serde_json writes a reject in many small pieces, each a
    // write(2) on a bare File (most of the CPU time of a log with 1 % bad
    // lines went there).
    let rejects_sink =
        |piece| File::create(rej_path(piece)).map(|f| BufWriter::with_capacity(64 * 1024, f));
    // Appends a piece's rejects (in piece order) and removes its file.
    let take_rejects = |piece, rejects: &mut dyn Write| -> std::io::Result<()> {
        let path = rej_path(piece);
        std::io::copy(&mut File::open(&path)?, rejects)?;
        std::fs::remove_file(&path)
    };
    if splittable && len > 64 * 1024 * 1024 {
        let ranges = split_ranges(len, threads * 4);
        let open = || File::open(path);
        let outputs: Vec<(usize, CleanStats)> = match target {
            Target::Partitions(_) => {
                clean_parallel(&ranges, threads, selection, opts, open, |piece, _| {
                    Ok(PieceSinks {
                        partitions: (0..partitions)
                            .map(|p| File::create(part_path(piece, p)))
                            .collect::<std::io::Result<_>>()?,
                        rejects: rejects_sink(piece)?,
                    })
                })?
                .into_iter()
                .map(|o| (o.piece, o.stats))
                .collect()
            }
            Target::Ordered { file, first_piece } => {
                clean_parallel(&ranges, threads, selection, opts, open, |piece, _| {
                    Ok(PieceSinks {
                        partitions: vec![file.sink(first_piece + piece)],
                        rejects: rejects_sink(piece)?,
                    })
                })?
                .into_iter()
                .map(|o| (o.piece, o.stats))
                .collect()
            }
        };
        let mut files = Vec::new();
        let mut stats = Vec::new();
        for (piece, piece_stats) in outputs {
            take_rejects(piece, rejects)?;
            if let Target::Partitions(_) = target {
                files.push((0..partitions).map(|p| part_path(piece, p)).collect());
            }
            stats.push(piece_stats);
        }
        return Ok((files, stats));
    }
    // Cut into segments cleaned by the other threads: the ordered output
    // only. Partitioned work files would be segments × partitions files
    // (thousands for a big gzip log), whose system time ate the gain;
    // there the log is inflated on one thread and cleaned on another.
    if let (false, true, Target::Ordered { file, first_piece }) = (splittable, threads > 1, target)
    {
        let cleaned = clean_segmented(path, selection, opts, segment_bytes, threads, |piece| {
            Ok(PieceSinks {
                partitions: vec![file.sink(first_piece + piece)],
                rejects: rejects_sink(piece)?,
            })
        })?;
        if let Some(stats) = cleaned {
            for piece in 0..stats.len() {
                take_rejects(piece, rejects)?;
            }
            return Ok((Vec::new(), stats));
        }
    }
    if let Target::Ordered { file, first_piece } = target {
        let stats = clean_sequential(path, opts, selection, vec![file.sink(first_piece)], rejects)?;
        return Ok((Vec::new(), vec![stats]));
    }
    let sinks = (0..partitions)
        .map(|p| File::create(part_path(0, p)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let stats = clean_sequential(path, opts, selection, sinks, rejects)?;
    Ok((
        vec![(0..partitions).map(|p| part_path(0, p)).collect()],
        vec![stats],
    ))
}

/// Cleans a whole file on this thread (gzip inflated on another) into
/// `sinks`, one per partition.
fn clean_sequential<W: Write>(
    path: &Path,
    opts: &CleanOptions,
    selection: &SelectedLearners,
    sinks: Vec<W>,
    rejects: &mut impl Write,
) -> anyhow::Result<CleanStats> {
    let file = File::open(path)?;
    // Gzip is one stream: inflating it on its own thread lets the second
    // core decompress while this one cleans.
    let mut reader = ActivityReader::new_threaded(BufReader::new(file), opts.reader)
        .with_context(|| format!("reading {}", path.display()))?;
    let (stats, ..) = clean_into(&mut reader, selection, opts, sinks, rejects)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(stats)
}

/// Validates and analyzes every matched response with audio, exactly as the
/// download and analyze stages do; identical audio is analyzed once.
fn analyze_all(
    records: &[MatchedRecord],
    s3_root: &Path,
    buckets: &[String],
) -> BTreeMap<String, AnalysisOutcome> {
    let items: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r.session.is_some())
        .filter_map(|r| {
            r.record
                .audio_url
                .as_deref()
                .map(|u| (r.record.response_id.as_str(), u))
        })
        .collect();
    let pb = progress(items.len() as u64, "analyze");
    let cache: Mutex<HashMap<String, AnalysisOutcome>> = Mutex::new(HashMap::new());
    // The workers' default audio memory budget: the same audio fails as
    // `audio_too_large` here and in the fleet, and memory stays bounded
    // whatever the files.
    let budget = AudioBudget::new(DEFAULT_AUDIO_MEMORY_BYTES);
    let out: BTreeMap<String, AnalysisOutcome> = items
        .par_iter()
        .map(|(rid, url)| {
            let o = analyze_one(url, s3_root, buckets, &cache, &budget);
            pb.inc(1);
            (rid.to_string(), o)
        })
        .collect();
    pb.finish_and_clear();
    out
}

fn analyze_one(
    url: &str,
    s3_root: &Path,
    buckets: &[String],
    cache: &Mutex<HashMap<String, AnalysisOutcome>>,
    budget: &AudioBudget,
) -> AnalysisOutcome {
    let failed = |reason: &str, detail: String| AnalysisOutcome::Failed {
        reason: reason.to_string(),
        detail,
    };
    let r = match AudioRef::parse_allowed(url, buckets) {
        Ok(r) => r,
        Err(e) => return failed(e.name(), e.to_string()),
    };
    let AudioRef::S3 { bucket, key } = &r else {
        return failed(
            "unsupported_link",
            "store links need the fleet's store".into(),
        );
    };
    // The fleet's local-store read: regular files only, no symlink below
    // the root, no FIFO or device, the fleet's default size limit; refusals
    // get the same reasons as the download stage gives them.
    let uri = match engage_model::uri::ObjectUri::s3(bucket, key) {
        Ok(u) => u,
        Err(e) => {
            let e = engage_runtime::storage::StorageError::from(e);
            return failed(e.class(), e.to_string());
        }
    };
    let read = || async {
        engage_runtime::storage::read_local(
            s3_root,
            &uri,
            engage_runtime::storage::DEFAULT_MAX_OBJECT_BYTES,
        )
    };
    // Held within the audio budget like a download job's audio (this runs
    // on a rayon thread, never on an async runtime).
    let held = futures::executor::block_on(budget.hold(0, read, memory_need));
    let Held {
        permit: _permit,
        bytes,
    } = match held {
        Ok(h) => h,
        Err(HoldError::Budget(e)) => return failed(e.name(), e.to_string()),
        Err(HoldError::Fetch(e)) if e.is_not_found() => {
            return failed(AUDIO_MISSING, "no object at the audio link".into());
        }
        Err(HoldError::Fetch(e)) => return failed(e.class(), e.to_string()),
        Err(e @ HoldError::Changing(_)) => return failed("io", e.to_string()),
    };
    let probe = match validate(&bytes, key) {
        Ok(p) => p,
        Err(e) => return failed(e.name(), e.to_string()),
    };
    let hash = engage_runtime::storage::content_key(&bytes);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&hash).cloned()) {
        return hit;
    }
    let outcome = analyze_bytes(&bytes, Some(&probe.format));
    if let Ok(mut c) = cache.lock() {
        c.insert(hash, outcome.clone());
    }
    outcome
}
