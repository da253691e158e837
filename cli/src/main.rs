//! `engage`: the producer and operator command-line tool of the fleet.
//!
//! It lives in its own crate (`cli/`) because it is the one binary
//! that links every stage's domain logic: `engage run` executes the whole
//! pipeline in one process, while the workers each link only their own stage.
#![forbid(unsafe_code)]

mod config_show;
mod dashboard;
mod demo;
mod fleet;
mod gen_data;
mod purge;
mod quota;
mod run;
mod run_match;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use engage_runtime::config::FleetConfig;

/// Learner-audio engagement analysis: the pipeline in one process (`run`), or a
/// RabbitMQ worker fleet (`enqueue`, `status`, `report`, `dlq`, `demo`).
#[derive(Debug, Parser)]
#[command(name = "engage", version, about)]
struct Cli {
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
    /// Copy a complete batch's outputs to a directory.
    Report(fleet::ReportArgs),
    /// Inspect or replay dead-lettered messages.
    #[command(subcommand)]
    Dlq(fleet::DlqCmd),
    /// Tear the namespace down: its queues (with their messages), exchanges
    /// and Redis keys, after a confirmation (`--yes` to skip it). The store
    /// is left alone.
    Purge(purge::PurgeArgs),
    /// End a Gemini fleet pause now (the quota was raised or reset early):
    /// clears the pause and the fleet's daily count, and sends every job
    /// parked on the wait ladder back to its work queue.
    Resume,
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
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("engage: {}", engage_runtime::redact::redact_error(&e));
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> anyhow::Result<ExitCode> {
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
        Cmd::Config(c) => config_show::run(&c),
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
            rt.block_on(fleet_cmd(other))
        }
    }
}

async fn fleet_cmd(cmd: Cmd) -> anyhow::Result<ExitCode> {
    let cfg = || {
        let cfg = FleetConfig::load()?;
        engage_runtime::redact::register_url(cfg.broker.amqp_url.expose());
        engage_runtime::redact::register_url(cfg.redis.url.expose());
        anyhow::Ok(cfg)
    };
    match cmd {
        Cmd::Demo(a) => println!("report: {}", demo::demo(&a).await?.display()),
        Cmd::Enqueue(a) => println!("{}", fleet::enqueue(&cfg()?, &a).await?),
        Cmd::Status(a) => match fleet::status(&cfg()?, &a).await? {
            fleet::BatchEnd::Halted if a.wait => return Ok(ExitCode::from(3)),
            fleet::BatchEnd::Open if a.wait => return Ok(ExitCode::from(2)),
            _ => {}
        },
        Cmd::Report(a) => {
            for p in fleet::report(&cfg()?, &a).await? {
                println!("{}", p.display());
            }
        }
        Cmd::Dlq(c) => fleet::dlq(&cfg()?, &c).await?,
        Cmd::Dashboard(a) => dashboard::run(&a).await?,
        Cmd::Purge(a) => {
            let p = purge::purge(&cfg()?, &a).await?;
            println!(
                "purged: {} queues ({} messages), {} Redis keys",
                p.queues, p.messages, p.keys
            );
        }
        Cmd::Resume => {
            let moved = quota::resume(&cfg()?).await?;
            println!("fleet pause cleared; {moved} parked jobs sent back to their queues");
        }
        Cmd::GenData(a) => return dispatch(Cmd::GenData(a)),
        Cmd::Run(a) => return dispatch(Cmd::Run(a)),
        Cmd::Config(c) => return dispatch(Cmd::Config(c)),
        Cmd::MetricsContract => return dispatch(Cmd::MetricsContract),
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
