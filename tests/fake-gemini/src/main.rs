//! `fake-gemini`: the fake Gemini server as a standalone process, for benchmarks
//! and manual runs (test support; never an analyzer).
//!
//! ```text
//! fake-gemini --port 8089 --rpm 600 --tpm 1000000 --latency-ms 200 --latency-max-ms 800 --p503 0.01
//! ```
//! It prints `listening on http://127.0.0.1:PORT` and serves until Ctrl-C or
//! SIGTERM, then prints its stats as JSON.
//!
//! For benchmarks (bench/gemini/quota_bench.py): `--log-requests PATH` writes
//! one JSON line per `generateContent` request (arrival and admission times,
//! status, cause, audio hash; see `fake_gemini::RequestLog`); `--day-secs`
//! shortens the per-day window of `--rpd` and `--rpd-retry-info` puts
//! `RetryInfo` on per-day 429s; on SIGUSR1 the fake queues `--burst-429` injected
//! 429s with `RetryInfo.retryDelay` = `--burst-retry-delay` for its next calls.
#![forbid(unsafe_code)]

use clap::Parser;
use fake_gemini::{Behaviour, FakeConfig, FakeGemini, Fault, Latency, QuotaKind, RequestLog};
use std::path::PathBuf;
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
    /// Length of the per-minute quota window in seconds.
    #[arg(long, default_value_t = 60.0)]
    window_secs: f64,
    /// Length of the per-day quota window (`--rpd`) in seconds.
    #[arg(long, default_value_t = 86_400.0)]
    day_secs: f64,
    /// Answer per-day quota 429s with `RetryInfo` (the wait until the day window has room).
    #[arg(long)]
    rpd_retry_info: bool,
    /// Write one JSON line per `generateContent` request to this file.
    #[arg(long)]
    log_requests: Option<PathBuf>,
    /// Injected 429s queued on each SIGUSR1.
    #[arg(long, default_value_t = 4)]
    burst_429: usize,
    /// `RetryInfo.retryDelay` of the SIGUSR1 burst (proto-JSON duration, e.g. `10s`).
    #[arg(long, default_value = "10s")]
    burst_retry_delay: String,
}

/// A positive, finite number of seconds.
fn secs(name: &str, v: f64) -> std::io::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("--{name} must be a positive number of seconds, got {v}"),
            )
        })
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
        window: secs("window-secs", args.window_secs)?,
        day: secs("day-secs", args.day_secs)?,
        rpd_retry_info: args.rpd_retry_info,
        request_log: match &args.log_requests {
            Some(p) => Some(RequestLog::create(p).map_err(|e| {
                std::io::Error::new(e.kind(), format!("--log-requests {}: {e}", p.display()))
            })?),
            None => None,
        },
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
    let burst = || {
        fake.push_faults(Fault::burst_429(args.burst_429, &args.burst_retry_delay));
        eprintln!(
            "fake-gemini: SIGUSR1: queued {} injected 429s (retryDelay {})",
            args.burst_429, args.burst_retry_delay
        );
    };
    wait_for_signal(burst).await;
    let stats = fake.stats();
    fake.shutdown().await;
    let json = serde_json::json!({
        "generate_calls": stats.generate_calls,
        "successes": stats.successes,
        "rate_limited": stats.rate_limited,
        "rate_limited_by_quota": stats.rate_limited_by_quota,
        "faults_injected": stats.faults_injected,
        "max_concurrent": stats.max_concurrent,
        "max_calls_per_audio": stats.max_calls_per_audio(),
        "max_successes_per_audio": stats.successes_by_hash.values().max().copied().unwrap_or(0),
        "distinct_audio": stats.calls_by_hash.len(),
    });
    println!("{json}");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM; runs `on_usr1` on every SIGUSR1.
async fn wait_for_signal(on_usr1: impl Fn()) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(mut term), Ok(mut usr1)) => loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = usr1.recv() => on_usr1(),
                }
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = &on_usr1;
        let _ = tokio::signal::ctrl_c().await;
    }
}
