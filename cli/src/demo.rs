//! `engage demo`: the README's first command. Generates a small dataset,
//! starts the five workers as child processes in a namespace of their own,
//! enqueues the batch, shows progress and prints where the report is.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use clap::Args;
use engage_model::envelope::StageName;
use engage_runtime::config::FleetConfig;

use crate::fleet::{self, EnqueueArgs, ReportArgs, StatusArgs};
use crate::gen_data::{self, GenDataArgs};

/// Arguments of `engage demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Working directory for data, store, logs and the report.
    #[arg(long, default_value = "engage-demo")]
    pub dir: PathBuf,
    /// Learners to generate.
    #[arg(long, default_value_t = 20)]
    pub learners: usize,
    /// Responses per learner.
    #[arg(long, default_value_t = 10)]
    pub responses: usize,
    /// Seconds to wait for the batch.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Keep the demo's namespace (queues and Redis keys) afterwards; by
    /// default it is purged once the report is written.
    #[arg(long)]
    pub keep: bool,
}

/// Child worker processes, stopped with SIGTERM (and reaped) on drop.
struct Workers(Vec<(StageName, Child)>);

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, c) in &self.0 {
            terminate(c.id());
        }
        for (_, c) in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Sends SIGTERM to a process (the workers drain on it).
pub(crate) fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// The directory holding the worker binaries (next to this executable).
pub(crate) fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the engage executable")?;
    let dir = exe
        .parent()
        .context("engage executable has no directory")?
        .to_path_buf();
    for s in StageName::ALL {
        if !dir.join(format!("engage-{s}")).exists() {
            bail!(
                "worker binary engage-{s} not found next to {} (build them all: cargo build --release)",
                exe.display()
            );
        }
    }
    Ok(dir)
}

/// Runs the demo with the fleet settings `cfg` (its namespace, store and
/// inputs are the demo's own); returns the report directory.
pub(crate) async fn demo(mut cfg: FleetConfig, a: &DemoArgs) -> anyhow::Result<PathBuf> {
    fleet::redis(&cfg).await?;
    drop(fleet::publisher(&cfg).await?);
    let bins = bin_dir()?;
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let dir = std::path::absolute(&a.dir)?;
    let data = dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    eprintln!(
        "generating {} learners x {} responses in {}",
        a.learners,
        a.responses,
        data.display()
    );
    let mut gen_args = GenDataArgs::new(&data);
    gen_args.learners = a.learners;
    gen_args.responses = a.responses;
    let generated = tokio::task::spawn_blocking(move || gen_data::run(&gen_args)).await??;

    cfg.fleet.namespace = format!("demo-{:04x}", rand::random::<u16>());
    cfg.store.root = format!("file://{}", dir.join("store").display());
    // The demo's generated inputs are the only ones its batch may name.
    cfg.fleet.input_prefixes = vec![format!("file://{}", data.display())];
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut workers = Workers(Vec::new());
    for s in StageName::ALL {
        let log = std::fs::File::create(logs.join(format!("{s}.log")))?;
        let mut cmd = Command::new(bins.join(format!("engage-{s}")));
        if let Some(file) = &cfg.source_file {
            // `engage --config FILE demo`: the workers read the same file.
            cmd.env(engage_runtime::config::env::FILE_VAR, file);
        }
        let child = cmd
            .env("ENGAGE_NAMESPACE", &cfg.fleet.namespace)
            .env("ENGAGE_STORE", &cfg.store.root)
            .env("ENGAGE_S3_ROOT", &generated.audio_root)
            .env("ENGAGE_AUDIO_BUCKETS", "learner-audio")
            .env("ENGAGE_INPUT_PREFIXES", cfg.fleet.input_prefixes.join(","))
            .env("ENGAGE_METRICS_ADDR", "127.0.0.1:0")
            .env("ENGAGE_CONCURRENCY", "8")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start engage-{s}"))?;
        workers.0.push((s, child));
    }
    eprintln!(
        "started 5 workers in namespace {} (logs in {})",
        cfg.fleet.namespace,
        logs.display()
    );
    let batch = fleet::enqueue(
        &cfg,
        &EnqueueArgs {
            activity: vec![generated.activity_path.display().to_string()],
            sessions: generated.sessions_path.display().to_string(),
            users: None,
            users_file: None,
            milestone: None,
            batch_id: None,
        },
    )
    .await?;
    eprintln!("enqueued batch {batch}");
    let done = fleet::status(
        &cfg,
        &StatusArgs {
            batch: Some(batch.clone()),
            wait: true,
            timeout: a.timeout,
            json: false,
        },
    )
    .await?;
    if done != fleet::BatchEnd::Complete {
        bail!(
            "batch {batch} did not complete in {}s; see the logs in {}",
            a.timeout,
            logs.display()
        );
    }
    let out = dir.join("report");
    fleet::report(
        &cfg,
        &ReportArgs {
            batch,
            out: out.clone(),
        },
    )
    .await?;
    drop(workers);
    if !a.keep {
        crate::purge::delete(&cfg)
            .await
            .context("cleaning up the demo's namespace (use --keep to leave it)")?;
    }
    if let Ok(s) = std::fs::read_to_string(out.join("summary.json"))
        && let Ok(sum) = serde_json::from_str::<engage_model::summary::Summary>(&s)
    {
        print!("{}", sum.render());
    }
    Ok(out)
}
