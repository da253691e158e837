//! `engage`: the producer and operator command-line tool of the fleet.
//!
//! It lives in its own crate (`cli/`) because it is the one binary
//! that links every stage's domain logic: `engage run` executes the whole
//! pipeline in one process, while the workers each link only their own stage.
#![forbid(unsafe_code)]

mod batch_control;
mod batch_ops;
mod config_show;
mod dashboard;
mod demo;
mod fleet;
mod gen_data;
mod global;
mod ops_cmd;
mod ordered_out;
mod purge;
mod quota;
mod run;
mod run_match;
mod run_segments;

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use engage_runtime::batch_control::Changed;

/// Learner-audio engagement analysis: the pipeline in one process (`run`), or a
/// RabbitMQ worker fleet (`enqueue`, `status`, `report`, `dlq`, `pause`,
/// `resume`, `cancel`, `retry`, `demo`).
#[derive(Debug, Parser)]
#[command(name = "engage", version, about)]
struct Cli {
    #[command(flatten)]
    global: global::GlobalArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Generate a synthetic dataset (activity log, sessions, audio).
    GenData(gen_data::GenDataArgs),
    /// Run the whole pipeline in this process.
    Run(run::RunArgs),
    /// Start a batch on the fleet; prints the batch id.
    Enqueue(fleet::EnqueueArgs),
    /// Show a batch's progress (or list recent batches).
    Status(fleet::StatusArgs),
    /// List the namespace's batches, newest first (state, items, learners).
    Batches(ops_cmd::BatchesArgs),
    /// Show a batch's plan and progress, a learner's items, or one item's
    /// path through the stages (outcome, analyzer, answer source, dead letters).
    Inspect(ops_cmd::InspectArgs),
    /// Copy a complete batch's outputs to a directory.
    Report(fleet::ReportArgs),
    /// Inspect or replay dead-lettered messages.
    #[command(subcommand)]
    Dlq(fleet::DlqCmd),
    /// Tear the namespace down: its queues (with their messages), exchanges
    /// and Redis keys, after a confirmation (`--yes` to skip it). The store
    /// is left alone.
    Purge(purge::PurgeArgs),
    /// Without BATCH: end a Gemini fleet pause now (the quota was raised or
    /// reset early): clears the pause and the fleet's daily count, and sends
    /// every job parked on the wait ladder back to its work queue. With
    /// BATCH: resume a batch paused with `engage pause` (its parked jobs
    /// come back at once).
    Resume(ResumeArgs),
    /// Pause a batch: workers park its jobs (no attempt spent) until
    /// `engage resume BATCH`; other batches keep flowing.
    Pause(BatchArg),
    /// Cancel a batch: it ends as cancelled, its open items final as
    /// `cancelled`, its queued jobs dropped, no report written. Final.
    Cancel(BatchArg),
    /// Re-run an ended batch's failed items (all, or one reason's): they are
    /// reopened, downloaded and analyzed again, and the report is rewritten.
    Retry(RetryArgs),
    /// Generate data, start the five workers, run a batch, print the report.
    Demo(demo::DemoArgs),
    /// Serve a web dashboard of the fleet (batches, queues, dead letters, replay).
    Dashboard(dashboard::DashboardArgs),
    /// Print the metrics contract (`deploy/metrics.txt`): every family the
    /// workers export, its type and the values of its labels.
    #[command(hide = true)]
    MetricsContract,
    /// Inspect the configuration (`show`: effective values and their origins).
    #[command(subcommand)]
    Config(config_show::ConfigCmd),
    /// Print a shell completion script (`engage completions bash >
    /// /etc/bash_completion.d/engage`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The command line's definition, with the configuration variables listed
/// in `--help`.
fn command() -> clap::Command {
    Cli::command().after_long_help(global::variables_help())
}

/// `engage resume [BATCH]`.
#[derive(Debug, clap::Args)]
struct ResumeArgs {
    /// The batch to resume (omit to end the fleet-wide Gemini pause).
    batch: Option<String>,
}

/// A batch id argument.
#[derive(Debug, clap::Args)]
struct BatchArg {
    /// The batch id.
    batch: String,
}

/// `engage retry BATCH [--reason R]`.
#[derive(Debug, clap::Args)]
struct RetryArgs {
    /// The batch id.
    batch: String,
    /// Only items failed with this reason (e.g. `audio_missing`); a reason
    /// ending with `:` covers a family (`dead_lettered:`).
    #[arg(long)]
    reason: Option<String>,
}

/// The metrics contract of every worker: the runtime's families and the
/// Gemini limiter's.
fn metrics_contract() -> anyhow::Result<String> {
    let runtime = engage_runtime::metrics_contract::runtime_families();
    let limiter = engage_analyze::ratelimit::LimiterMetrics::contract_registry()?;
    Ok(engage_runtime::metrics_contract::render(&[
        &runtime.registry,
        &limiter,
    ]))
}

fn main() -> ExitCode {
    engage_runtime::redact::install_panic_hook();
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match dispatch(&cli.global, cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("engage: {}", engage_runtime::redact::redact_error(&e));
            ExitCode::from(batch_control::exit_code(&e))
        }
    }
}

fn dispatch(g: &global::GlobalArgs, cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::GenData(a) => {
            let s = gen_data::run(&a)?;
            println!("activity: {}", s.activity_path.display());
            println!("sessions: {}", s.sessions_path.display());
            println!(
                "audio:    {} ({} files)",
                s.audio_root.display(),
                s.audio_files
            );
            println!("records:  {}", s.records);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config(c) => config_show::run(&c, &g.layers()?),
        Cmd::Completions { shell } => {
            // Into a buffer first: `generate` panics when its writer fails
            // (a closed pipe); writing the buffer is an error instead.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "engage", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .context("writing the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::MetricsContract => {
            print!("{}", metrics_contract()?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run(a) => {
            let summary = run::run(&a)?;
            print!("{}", summary.render());
            println!("outputs in {}", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        other => {
            engage_runtime::telemetry::init(engage_runtime::config::LogFormat::Text);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(fleet_cmd(g, other))
        }
    }
}

async fn fleet_cmd(g: &global::GlobalArgs, cmd: Cmd) -> anyhow::Result<ExitCode> {
    let cfg = || {
        let cfg = g.config()?;
        engage_runtime::redact::register_url(cfg.broker.amqp_url.expose());
        engage_runtime::redact::register_url(cfg.redis.url.expose());
        anyhow::Ok(cfg)
    };
    match cmd {
        Cmd::Demo(a) => println!("report: {}", demo::demo(cfg()?, &a).await?.display()),
        Cmd::Enqueue(a) => println!("{}", fleet::enqueue(&cfg()?, &a).await?),
        Cmd::Status(a) if a.json => {
            let timeout = std::time::Duration::from_secs(a.timeout);
            match ops_cmd::status_json(&cfg()?, a.batch.as_deref(), a.wait, timeout).await? {
                fleet::BatchEnd::Halted if a.wait => return Ok(ExitCode::from(3)),
                fleet::BatchEnd::Open if a.wait => return Ok(ExitCode::from(2)),
                fleet::BatchEnd::Cancelled if a.wait => return Ok(ExitCode::from(4)),
                _ => {}
            }
        }
        Cmd::Batches(a) => ops_cmd::batches(&cfg()?, &a).await?,
        Cmd::Inspect(a) => ops_cmd::inspect(&cfg()?, &a).await?,
        Cmd::Status(a) => match fleet::status(&cfg()?, &a).await? {
            fleet::BatchEnd::Halted if a.wait => return Ok(ExitCode::from(3)),
            fleet::BatchEnd::Open if a.wait => return Ok(ExitCode::from(2)),
            fleet::BatchEnd::Cancelled if a.wait => return Ok(ExitCode::from(4)),
            _ => {}
        },
        Cmd::Report(a) => {
            for p in fleet::report(&cfg()?, &a).await? {
                println!("{}", p.display());
            }
        }
        Cmd::Dlq(c) => fleet::dlq(&cfg()?, &c).await?,
        Cmd::Dashboard(a) => dashboard::run(cfg()?, &a).await?,
        Cmd::Purge(a) => {
            let p = purge::purge(&cfg()?, &a).await?;
            println!(
                "purged: {} queues ({} messages), {} Redis keys",
                p.queues, p.messages, p.keys
            );
        }
        Cmd::Resume(ResumeArgs { batch: None }) => {
            let moved = quota::resume(&cfg()?).await?;
            println!("fleet pause cleared; {moved} parked jobs sent back to their queues");
        }
        Cmd::Resume(ResumeArgs { batch: Some(b) }) => {
            let r = batch_control::resume(&cfg()?, &b).await?;
            match r.changed {
                Changed::Yes => println!(
                    "{b} resumed; {} parked jobs sent back to their queues",
                    r.sent_back
                ),
                Changed::Already => println!("{b} is not paused; nothing to resume"),
            }
        }
        Cmd::Pause(BatchArg { batch: b }) => match batch_control::pause(&cfg()?, &b).await? {
            Changed::Yes => {
                println!("{b} paused; its jobs are parked until `engage resume {b}`");
            }
            Changed::Already => println!("{b} is paused already"),
        },
        Cmd::Cancel(BatchArg { batch: b }) => {
            let c = batch_control::cancel(&cfg()?, &b).await?;
            if c.changed == Changed::Already {
                println!("{b} was cancelled already");
            } else {
                println!("{b} cancelled");
            }
            if c.items_cancelled > 0 || c.jobs_dropped > 0 {
                println!(
                    "{b}: {} items final as cancelled; {} waiting jobs dropped (queued ones are dropped by the workers)",
                    c.items_cancelled, c.jobs_dropped
                );
            }
        }
        Cmd::Retry(a) => {
            let r = batch_control::retry(&cfg()?, &a.batch, a.reason.as_deref()).await?;
            println!(
                "{}: retried {} items ({} failed items matched{}; {} not retriable)",
                a.batch,
                r.retried,
                r.matched,
                a.reason
                    .as_deref()
                    .map(|x| format!(" reason {x:?}"))
                    .unwrap_or_default(),
                r.not_retriable
            );
            if r.retried > 0 {
                println!(
                    "{}: the report is rewritten when they finish (`engage status {} --wait`)",
                    a.batch, a.batch
                );
            }
        }
        c @ (Cmd::GenData(_)
        | Cmd::Run(_)
        | Cmd::Config(_)
        | Cmd::MetricsContract
        | Cmd::Completions { .. }) => return dispatch(g, c),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    /// `deploy/metrics.txt` is what the code exports: regenerate it with
    /// `engage metrics-contract > deploy/metrics.txt` when this fails.
    #[test]
    fn deploy_metrics_txt_is_the_generated_contract() {
        let committed = include_str!("../../deploy/metrics.txt");
        let generated = super::metrics_contract().unwrap_or_default();
        assert_eq!(
            committed, generated,
            "deploy/metrics.txt is stale: run `engage metrics-contract > deploy/metrics.txt`"
        );
    }
}
