//! Benchmark driver for the clean domain: cleans one activity file with the
//! parallel byte-range fast path (or one sequential piece for gzip / JSON
//! array input), writes partitions and rejects to a directory, and prints one
//! JSON summary line (bytes, seconds, MB/s, counters).
//!
//! ```text
//! cargo run --release --example clean_bench -p engage-clean -- FILE \
//!     [--threads N] [--partitions P] [--piece-mb M] [--out DIR]
//! ```
//! Without `--out` the output goes to a temporary directory that is removed.
#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use engage_clean::domain::{
    ActivityReader, CleanOptions, CleanStats, PartitionWriter, PieceSinks, clean_parallel,
    clean_piece, is_splittable, split_ranges_by_size,
};
use engage_model::selection::SelectedLearners;

struct Args {
    file: PathBuf,
    threads: usize,
    partitions: usize,
    piece_bytes: u64,
    out: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut a = Args {
        file: PathBuf::new(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        partitions: 16,
        piece_bytes: 64 << 20,
        out: None,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--threads" => a.threads = value("--threads")?.parse()?,
            "--partitions" => a.partitions = value("--partitions")?.parse()?,
            "--piece-mb" => a.piece_bytes = value("--piece-mb")?.parse::<u64>()? << 20,
            "--out" => a.out = Some(value("--out")?.into()),
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => file = Some(PathBuf::from(s)),
        }
    }
    a.file = file.context(
        "usage: clean_bench FILE [--threads N] [--partitions P] [--piece-mb M] [--out DIR]",
    )?;
    Ok(a)
}

fn piece_dir(out: &Path, piece: usize) -> std::io::Result<PathBuf> {
    let dir = out.join(format!("piece-{piece:05}"));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let tmp;
    let out = match &args.out {
        Some(d) => {
            fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let bytes = fs::metadata(&args.file)?.len();
    let selection = SelectedLearners::All;
    let opts = CleanOptions::default();
    let started = Instant::now();

    let (stats, pieces) = if is_splittable(File::open(&args.file)?)? {
        let ranges = split_ranges_by_size(bytes, args.piece_bytes);
        let outputs = clean_parallel(
            &ranges,
            args.threads,
            &selection,
            &opts,
            || File::open(&args.file),
            |piece, _range| {
                let dir = piece_dir(&out, piece)?;
                let partitions = (0..args.partitions)
                    .map(|p| File::create(dir.join(format!("part-{p:03}.jsonl"))))
                    .collect::<std::io::Result<Vec<_>>>()?;
                let rejects = BufWriter::new(File::create(dir.join("rejects.jsonl"))?);
                Ok(PieceSinks {
                    partitions,
                    rejects,
                })
            },
        )?;
        (
            CleanStats::merged(outputs.iter().map(|o| &o.stats)),
            outputs.len(),
        )
    } else {
        let dir = piece_dir(&out, 0)?;
        let mut reader = ActivityReader::new(File::open(&args.file)?, opts.reader)?;
        let sinks = (0..args.partitions)
            .map(|p| File::create(dir.join(format!("part-{p:03}.jsonl"))))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut writer = PartitionWriter::new(sinks)?;
        let mut rejects = BufWriter::new(File::create(dir.join("rejects.jsonl"))?);
        let stats = clean_piece(&mut reader, &selection, &opts, &mut writer, &mut rejects)?;
        writer.finish()?;
        (stats, 1)
    };

    let secs = started.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "file": args.file,
        "bytes": bytes,
        "seconds": secs,
        "mb_per_s": bytes as f64 / 1e6 / secs,
        "threads": args.threads,
        "pieces": pieces,
        "partitions": args.partitions,
        "consistent": stats.is_consistent(),
        "stats": stats,
    });
    println!("{summary}");
    Ok(())
}
