//! `fake-gemini`: the fake Gemini server as a standalone process, for benchmarks
//! and manual runs (test support; never an analyzer).
//!
//! ```text
//! fake-gemini --port 8089 --rpm 600 --tpm 1000000 --latency-ms 200 --latency-max-ms 800 --p503 0.01
//! ```
//! It prints `listening on http://127.0.0.1:PORT` and serves until Ctrl-C or
//! SIGTERM, then prints its stats as JSON.
#![forbid(unsafe_code)]

use clap::Parser;
use fake_gemini::{Behaviour, FakeConfig, FakeGemini, Fault, Latency, QuotaKind};
use std::time::Duration;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "fake-gemini",
    about = "A Gemini-REST-compatible fake server (test support)"
)]
struct Args {
    /// Loopback port (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Accepted API key.
    #[arg(long, env = "FAKE_GEMINI_API_KEY", default_value = "fake-gemini-key")]
    api_key: String,
    /// Known models (repeatable).
    #[arg(long = "model", default_values_t = vec!["gemini-2.5-flash".to_owned()])]
    models: Vec<String>,
    /// Requests per minute (sliding window).
    #[arg(long)]
    rpm: Option<u32>,
    /// Input tokens per minute (sliding window).
    #[arg(long)]
    tpm: Option<u64>,
    /// Requests per day (sliding window).
    #[arg(long)]
    rpd: Option<u32>,
    /// Service time in ms (minimum when --latency-max-ms is given).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Upper bound of a uniform service time in ms.
    #[arg(long)]
    latency_max_ms: Option<u64>,
    /// Probability of a 500 per call.
    #[arg(long, default_value_t = 0.0)]
    p500: f64,
    /// Probability of a 503 per call.
    #[arg(long, default_value_t = 0.0)]
    p503: f64,
    /// Probability of an injected 429 (RetryInfo 1s) per call.
    #[arg(long, default_value_t = 0.0)]
    p429: f64,
    /// Probability of a truncated JSON answer per call.
    #[arg(long, default_value_t = 0.0)]
    ptruncated: f64,
    /// `GET file` polls answering PROCESSING before ACTIVE.
    #[arg(long, default_value_t = 1)]
    file_polls: u32,
    /// Seed of random draws.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let latency = match (args.latency_ms, args.latency_max_ms) {
        (0, None) => Latency::None,
        (ms, None) => Latency::Fixed(Duration::from_millis(ms)),
        (min, Some(max)) => Latency::Uniform {
            min: Duration::from_millis(min),
            max: Duration::from_millis(max),
        },
    };
    let mut probabilities = Vec::new();
    for (p, f) in [
        (args.p500, Fault::Status(500)),
        (args.p503, Fault::Status(503)),
        (
            args.p429,
            Fault::RateLimited {
                quota: QuotaKind::Rpm,
                retry_delay: Some("1s".to_owned()),
                retry_info_first: false,
            },
        ),
        (args.ptruncated, Fault::TruncatedJson),
    ] {
        if p > 0.0 {
            probabilities.push((p, f));
        }
    }
    let mut behaviour = Behaviour {
        latency,
        rpm: args.rpm,
        tpm: args.tpm,
        rpd: args.rpd,
        fault_probabilities: probabilities,
        ..Behaviour::default()
    };
    behaviour.files.polls_before_active = args.file_polls;
    let fake = FakeGemini::start(FakeConfig {
        api_key: args.api_key,
        models: args.models,
        behaviour,
        seed: args.seed,
        port: args.port,
        ..FakeConfig::default()
    })
    .await?;
    println!("listening on {}", fake.base_url());
    wait_for_signal().await;
    let stats = fake.stats();
    fake.shutdown().await;
    println!(
        "{{\"generate_calls\":{},\"successes\":{},\"rate_limited\":{},\"max_concurrent\":{},\"max_calls_per_audio\":{},\"max_successes_per_audio\":{},\"distinct_audio\":{}}}",
        stats.generate_calls,
        stats.successes,
        stats.rate_limited,
        stats.max_concurrent,
        stats.max_calls_per_audio(),
        stats.successes_by_hash.values().max().copied().unwrap_or(0),
        stats.calls_by_hash.len()
    );
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
