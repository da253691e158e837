//! Gemini rate-limit and cost benchmark: the fleet-wide limiter against the
//! seed system (one call at a time, no limiter) and a naive per-worker
//! limiter, on the `fake-gemini` server with a real sliding-window quota.
//!
//! ```text
//! cargo run --release -p engage-analyze --example ratelimit_bench -- [--quick]
//! ```
//!
//! Needs Redis at `--redis` (default `redis://127.0.0.1:6379`); every row uses
//! a fresh `bench-<uuid>` key namespace whose keys expire after one window.
//!
//! Time is compressed: a quota window of 60 s becomes `60 / compression` s
//! (6 s in the full run, 3 s with `--quick`), and Gemini's 1–8 s latency and
//! retry delays shrink by the same factor, so a row of five windows
//! reproduces five minutes of traffic at `Q` requests per minute. Every
//! simulated worker is an independent tokio task with its own Redis
//! connection, its own [`FleetLimiter`] (or local governor) and its own
//! [`GeminiClient`], as separate processes would have, and runs the worker's
//! loop: permit → `analyze(distinct audio)` → on error the
//! [`GeminiError::disposition`] (pause the fleet, or back off with jitter).
//!
//! Rows: (1) the seed baseline; (2) the fleet limiter with 4 and 8 workers
//! (and 8 with a 1% safety margin on the window);
//! (3) the fleet limiter with a burst of injected 429s carrying `RetryInfo`;
//! (4) workers scaling 1 → 4 mid-run under a naive static per-worker split
//! (Q/4 each, and Q each) versus the fleet limiter. Request counts come from
//! the fake (arrival times of admitted requests), so they are what Google
//! would have counted. The table is printed and written to
//! `bench/gemini/RESULTS.md` (or `--results PATH`).
#![forbid(unsafe_code)]

use backon::{BackoffBuilder, ExponentialBuilder};
use clap::Parser;
use engage_analyze::gemini::{Disposition, GeminiClient, GeminiConfig, GeminiError};
use engage_analyze::ratelimit::{Acquired, FleetLimiter, Quota, RateLimitError, Windows};
use engage_runtime::redis_conn::{RedisConn, RedisConnError};
use engage_runtime::secret::Secret;
use fake_gemini::{Behaviour, FakeConfig, FakeGemini, Fault, Latency, Stats};
use governor::{DefaultDirectRateLimiter, Quota as GovernorQuota, RateLimiter};
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Seed of the fake's latency draws, the same for every row so that rows see
/// the same service times in the same order.
const FAKE_SEED: u64 = 7;

/// Errors that stop the benchmark.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// Redis did not answer.
    #[error(
        "redis at {url}: {source} (start one: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no)"
    )]
    Redis {
        /// The URL tried.
        url: String,
        /// The connection error.
        source: RedisConnError,
    },
    /// The fleet limiter failed (Redis error, bad setting).
    #[error("fleet limiter: {0}")]
    Limiter(#[from] RateLimitError),
    /// The Gemini client refused its configuration or got a fatal answer.
    #[error("gemini client: {0}")]
    Gemini(#[from] GeminiError),
    /// The fake server could not bind.
    #[error("fake gemini: {0}")]
    Fake(std::io::Error),
    /// The results file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The results path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A worker task panicked or was cancelled.
    #[error("worker task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A benchmark setting that cannot be represented.
    #[error("invalid setting: {0}")]
    Setting(String),
}

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Gemini fleet rate-limit benchmark on the fake Gemini server")]
struct Args {
    /// About one minute: time compressed 20x (3 s windows) and fewer windows per row.
    #[arg(long)]
    quick: bool,
    /// Redis for the fleet limiter.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Where to write the markdown results (default bench/gemini/RESULTS.md).
    #[arg(long)]
    results: Option<PathBuf>,
}

/// The scenario parameters, all in compressed time.
#[derive(Debug, Clone)]
struct Settings {
    /// Real seconds per benchmark second.
    compression: u32,
    /// The quota window (the fake's and the limiter's): 60 s / compression.
    window: Duration,
    /// Requests allowed per window (the "RPM" Q).
    quota: u32,
    /// Fake service time, uniform: 1–8 s / compression.
    latency: (Duration, Duration),
    /// `RetryInfo.retryDelay` of the injected 429s: 30 s / compression.
    retry_delay: Duration,
    /// Injected 429s in the burst row.
    burst_len: usize,
    /// Windows measured by the baseline row.
    baseline_windows: u32,
    /// Windows measured by the steady fleet rows.
    steady_windows: u32,
    /// Windows of the burst row.
    burst_windows: u32,
    /// Burst injected after this many windows.
    burst_after_windows: f64,
    /// Windows with 1 worker, then with 4, in the scaling rows.
    scale_windows: (u32, u32),
    /// Audio seconds per item (sets the token count).
    audio_secs: u32,
}

impl Settings {
    fn new(quick: bool) -> Self {
        let compression: u32 = if quick { 20 } else { 10 };
        let real = |secs: f64| Duration::from_secs_f64(secs / f64::from(compression));
        Self {
            compression,
            window: real(60.0),
            quota: 30,
            latency: (real(1.0), real(8.0)),
            retry_delay: real(30.0),
            burst_len: 4,
            baseline_windows: if quick { 2 } else { 4 },
            steady_windows: if quick { 3 } else { 5 },
            burst_windows: if quick { 4 } else { 5 },
            burst_after_windows: if quick { 1.5 } else { 2.0 },
            scale_windows: if quick { (1, 2) } else { (2, 3) },
            audio_secs: 1,
        }
    }

    /// Exponential backoff with jitter for `Retry` dispositions: 1 s to 30 s real.
    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.window / 60)
            .with_max_delay(self.window / 2)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// How a row's workers pace their calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pacing {
    /// No limiter at all (the seed system).
    Unpaced,
    /// One [`FleetLimiter`] per worker, all on the same Redis keys, whose
    /// window is the quota's window lengthened by this fraction (0 = as deployed).
    Fleet(f64),
    /// A local governor per worker allowing this many requests per window.
    Local(f64),
}

impl Pacing {
    fn label(self) -> String {
        match self {
            Self::Unpaced => "none".to_owned(),
            Self::Fleet(margin) if margin > 0.0 => {
                format!("fleet (Redis), window +{:.0}%", margin * 100.0)
            }
            Self::Fleet(_) => "fleet (Redis)".to_owned(),
            Self::Local(per) => format!("local governor, {per:.1} per window each"),
        }
    }
}

/// One stretch of a row with a fixed number of workers.
#[derive(Debug, Clone, Copy)]
struct Phase {
    workers: usize,
    windows: u32,
}

/// A benchmark row (one fake server, one Redis namespace).
#[derive(Debug, Clone)]
struct RowSpec {
    id: &'static str,
    name: String,
    pacing: Pacing,
    phases: Vec<Phase>,
    /// Inject the 429 burst after this many windows.
    burst_after: Option<f64>,
}

/// What one call ended with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// Answered; Google's token counts.
    Answered { input: u64, output: u64 },
    /// HTTP 429, with the `RetryInfo` delay when it had one.
    RateLimited { retry: Option<Duration> },
    /// Any other error (class).
    Failed(&'static str),
}

/// One `generateContent` call as the worker saw it (bench clock).
#[derive(Debug, Clone, Copy)]
struct Call {
    /// When the permit was granted and the request sent (the same instant).
    sent: Duration,
    /// Redis server time of the fleet permit (ms since the epoch), fleet rows only.
    granted_ms: Option<u64>,
    done: Duration,
    outcome: Outcome,
}

/// A fleet pause one worker set (bench clock). Redis applied it somewhere
/// in `[requested, answered]`; it lasts `remaining` from then.
#[derive(Debug, Clone, Copy)]
struct PauseSet {
    requested: Duration,
    answered: Duration,
    remaining: Duration,
    /// Redis `TIME` just before and just after the pause script (ms since the
    /// epoch): Redis runs scripts one at a time, so a permit granted after
    /// `redis_after_ms` and before `redis_before_ms + remaining` was granted
    /// while this pause was in force.
    redis_before_ms: u64,
    redis_after_ms: u64,
}

impl PauseSet {
    /// The span in which the pause was certainly in force.
    fn surely_paused(&self) -> (Duration, Duration) {
        (self.answered, self.requested + self.remaining)
    }

    /// The span in which the pause may have been in force.
    fn maybe_paused(&self) -> (Duration, Duration) {
        (self.requested, self.answered + self.remaining)
    }

    /// Whether a permit granted at Redis time `ms` certainly came while this pause was in force.
    fn covers_grant(&self, ms: u64) -> bool {
        let remaining = u64::try_from(self.remaining.as_millis()).unwrap_or(u64::MAX);
        ms > self.redis_after_ms && ms < self.redis_before_ms.saturating_add(remaining)
    }

    /// Whether a permit granted at Redis time `ms` may have raced the pause script.
    fn raced_by_grant(&self, ms: u64) -> bool {
        (self.redis_before_ms..=self.redis_after_ms).contains(&ms)
    }
}

/// Redis server time in milliseconds since the epoch.
async fn redis_ms(conn: &RedisConn) -> Result<u64, BenchError> {
    let mut conn = conn.clone();
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .map_err(RateLimitError::from)?;
    Ok(secs * 1_000 + micros / 1_000)
}

/// Answer of [`Pacer::ready`].
enum Ready {
    /// Send now; the fleet permit's Redis time, if any.
    Go(Option<u64>),
    /// The row ended first.
    Stop,
}

/// Everything one worker observed.
#[derive(Debug, Default)]
struct WorkerReport {
    calls: Vec<Call>,
    pauses: Vec<PauseSet>,
    estimated_tokens: u64,
}

/// What paces one worker.
enum Pacer {
    Unpaced,
    Fleet {
        limiter: Box<FleetLimiter<RedisConn>>,
        conn: RedisConn,
    },
    Local(DefaultDirectRateLimiter),
}

impl Pacer {
    /// Waits for permission to send one request.
    async fn ready(
        &self,
        tokens: u64,
        stop_at: Instant,
        window: Duration,
    ) -> Result<Ready, BenchError> {
        loop {
            let left = stop_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Ready::Stop);
            }
            match self {
                Self::Unpaced => return Ok(Ready::Go(None)),
                Self::Local(g) => {
                    return Ok(match tokio::time::timeout(left, g.until_ready()).await {
                        Ok(_) => Ready::Go(None),
                        Err(_) => Ready::Stop,
                    });
                }
                Self::Fleet { limiter, .. } => match limiter
                    .acquire(tokens, left.min(window))
                    .await?
                {
                    Acquired::Granted(p) => return Ok(Ready::Go(Some(p.granted_at_ms))),
                    // The worker would release the job with this delay; here it
                    // just waits and asks again.
                    Acquired::NotWithin { wait, .. } => tokio::time::sleep(wait.min(left)).await,
                },
            }
        }
    }
}

/// State shared by the workers of one row.
struct RowCtx {
    t0: Instant,
    stop_at: Instant,
    next_item: AtomicU64,
    row_tag: u64,
    settings: Settings,
}

impl RowCtx {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }
}

/// A mono 16 kHz 16-bit WAV of `secs` seconds whose samples encode `tag` and
/// `item`, so every item is a distinct audio (distinct SHA-256).
fn wav(secs: u32, tag: u64, item: u64) -> Vec<u8> {
    const RATE: u32 = 16_000;
    let mut samples = vec![0i16; (RATE * secs) as usize];
    for (i, v) in [tag, item].into_iter().enumerate() {
        for (j, w) in v.to_le_bytes().chunks_exact(2).enumerate() {
            if let Some(s) = samples.get_mut(i * 4 + j) {
                *s = i16::from_le_bytes([w[0], w[1]]);
            }
        }
    }
    engage_audio::wav::encode_pcm16_mono(RATE, &samples).expect("a short clip encodes")
}

/// One simulated analyze worker: permit → call → disposition, until the row ends.
async fn worker(
    ctx: Arc<RowCtx>,
    pacer: Pacer,
    client: GeminiClient,
) -> Result<WorkerReport, BenchError> {
    let s = &ctx.settings;
    let tokens = GeminiClient::estimate_tokens(f64::from(s.audio_secs));
    let mut report = WorkerReport::default();
    'items: while Instant::now() < ctx.stop_at {
        let item = ctx.next_item.fetch_add(1, Ordering::Relaxed);
        let audio = wav(s.audio_secs, ctx.row_tag, item);
        let mut backoff = s.backoff();
        loop {
            let granted_ms = match pacer.ready(tokens, ctx.stop_at, s.window).await? {
                Ready::Go(ms) => ms,
                Ready::Stop => break 'items,
            };
            let sent = ctx.now();
            let result = client.analyze(&audio, "audio/wav").await;
            let done = ctx.now();
            let error = match result {
                Ok(answer) => {
                    report.calls.push(Call {
                        sent,
                        granted_ms,
                        done,
                        outcome: Outcome::Answered {
                            input: answer.usage.prompt_token_count,
                            output: answer.usage.candidates_token_count,
                        },
                    });
                    continue 'items;
                }
                Err(e) => e,
            };
            let outcome = if error.quota_kind().is_some() {
                Outcome::RateLimited {
                    retry: match error.disposition() {
                        Disposition::PauseFleet { pause } => Some(pause),
                        Disposition::Retry { after } => after,
                        Disposition::Fatal | Disposition::FailItem => None,
                    },
                }
            } else {
                Outcome::Failed(error.class())
            };
            report.calls.push(Call {
                sent,
                granted_ms,
                done,
                outcome,
            });
            let left = ctx.stop_at.saturating_duration_since(Instant::now());
            match error.disposition() {
                Disposition::PauseFleet { pause } => match &pacer {
                    Pacer::Fleet { limiter, conn } => {
                        if let Some(q) = error.quota_kind() {
                            limiter.record_429(q);
                        }
                        let requested = ctx.now();
                        let redis_before_ms = redis_ms(conn).await?;
                        let remaining = limiter.pause_fleet(pause).await?;
                        let redis_after_ms = redis_ms(conn).await?;
                        report.pauses.push(PauseSet {
                            redis_before_ms,
                            redis_after_ms,
                            requested,
                            answered: ctx.now(),
                            remaining,
                        });
                    }
                    // Without shared state a worker can only pause itself.
                    Pacer::Unpaced | Pacer::Local(_) => tokio::time::sleep(pause.min(left)).await,
                },
                Disposition::Retry { after } => {
                    let delay = after.or_else(|| backoff.next()).unwrap_or(s.window / 2);
                    tokio::time::sleep(delay.min(left)).await;
                }
                Disposition::FailItem => continue 'items,
                Disposition::Fatal => return Err(error.into()),
            }
        }
    }
    if let Pacer::Fleet { limiter, .. } = &pacer {
        report.estimated_tokens = limiter
            .metrics()
            .tokens
            .with_label_values(&["estimated"])
            .get();
    }
    Ok(report)
}

/// Builds one worker's pacer and client (its own connection, as a process would).
async fn build_worker(
    settings: &Settings,
    args: &Args,
    fake: &FakeGemini,
    pacing: Pacing,
    namespace: &str,
) -> Result<(Pacer, GeminiClient), BenchError> {
    let pacer = match pacing {
        Pacing::Unpaced => Pacer::Unpaced,
        Pacing::Fleet(margin) => {
            let conn = RedisConn::connect(&args.redis, false)
                .await
                .map_err(|source| BenchError::Redis {
                    url: args.redis.clone(),
                    source,
                })?;
            let quota = Quota {
                rpm: Some(settings.quota),
                ..Quota::default()
            };
            let windows = Windows {
                minute: settings.window.mul_f64(1.0 + margin),
                day: settings.window,
            };
            Pacer::Fleet {
                limiter: Box::new(FleetLimiter::with_windows(
                    conn.clone(),
                    namespace,
                    quota,
                    windows,
                )?),
                conn,
            }
        }
        Pacing::Local(per_window) => {
            let period = settings.window.div_f64(per_window);
            let quota = GovernorQuota::with_period(period)
                .ok_or_else(|| BenchError::Setting(format!("governor period {period:?}")))?
                .allow_burst(NonZeroU32::MIN);
            Pacer::Local(RateLimiter::direct(quota))
        }
    };
    let client = GeminiClient::new(GeminiConfig {
        base_url: fake.base_url().to_owned(),
        api_key: Secret::new(fake.api_key().to_owned()),
        ..GeminiConfig::default()
    })?;
    Ok((pacer, client))
}

/// A row's raw observations.
struct RowRun {
    spec: RowSpec,
    /// Phase intervals on the bench clock.
    phases: Vec<(Phase, Duration, Duration)>,
    stats: Stats,
    calls: Vec<Call>,
    pauses: Vec<PauseSet>,
    estimated_tokens: u64,
    burst_at: Option<Duration>,
}

async fn run_row(
    settings: &Settings,
    args: &Args,
    spec: RowSpec,
    row: u64,
) -> Result<RowRun, BenchError> {
    let t0 = Instant::now();
    // The fake's clock starts within microseconds of t0: its times are bench times.
    let fake = FakeGemini::start(FakeConfig {
        behaviour: Behaviour {
            latency: Latency::Uniform {
                min: settings.latency.0,
                max: settings.latency.1,
            },
            rpm: Some(settings.quota),
            window: settings.window,
            ..Behaviour::default()
        },
        seed: FAKE_SEED,
        ..FakeConfig::default()
    })
    .await
    .map_err(BenchError::Fake)?;
    let namespace = format!("bench-{}", uuid::Uuid::new_v4());
    let max_workers = spec.phases.iter().map(|p| p.workers).max().unwrap_or(0);
    let mut idle = Vec::with_capacity(max_workers);
    for _ in 0..max_workers {
        idle.push(build_worker(settings, args, &fake, spec.pacing, &namespace).await?);
    }
    let total_windows: u32 = spec.phases.iter().map(|p| p.windows).sum();
    let start = Instant::now();
    let ctx = Arc::new(RowCtx {
        t0,
        stop_at: start + settings.window * total_windows,
        next_item: AtomicU64::new(0),
        row_tag: row,
        settings: settings.clone(),
    });
    let mut tasks = JoinSet::new();
    let mut phases = Vec::new();
    let mut running = 0;
    let mut phase_start = start;
    let mut burst_at = None;
    for phase in &spec.phases {
        while running < phase.workers {
            let Some((pacer, client)) = idle.pop() else {
                break;
            };
            tasks.spawn(worker(ctx.clone(), pacer, client));
            running += 1;
        }
        let phase_end = phase_start + settings.window * phase.windows;
        if let Some(after) = spec.burst_after {
            let at = start + settings.window.mul_f64(after);
            if at >= phase_start && at < phase_end {
                tokio::time::sleep_until(at.into()).await;
                fake.push_faults(Fault::burst_429(
                    settings.burst_len,
                    &format!("{:.3}s", settings.retry_delay.as_secs_f64()),
                ));
                burst_at = Some(at - t0);
            }
        }
        tokio::time::sleep_until(phase_end.into()).await;
        phases.push((*phase, phase_start - t0, phase_end - t0));
        phase_start = phase_end;
    }
    let mut calls = Vec::new();
    let mut pauses = Vec::new();
    let mut estimated_tokens = 0;
    while let Some(report) = tasks.join_next().await {
        let report = report??;
        calls.extend(report.calls);
        pauses.extend(report.pauses);
        estimated_tokens += report.estimated_tokens;
    }
    let stats = fake.stats();
    fake.shutdown().await;
    calls.sort_by_key(|c| c.sent);
    pauses.sort_by_key(|p| p.requested);
    Ok(RowRun {
        spec,
        phases,
        stats,
        calls,
        pauses,
        estimated_tokens,
        burst_at,
    })
}

/// One line of the main table.
struct Line {
    id: String,
    name: String,
    workers: usize,
    pacing: String,
    windows: u32,
    per_window: f64,
    max_in_window: usize,
    rate_limited: RateLimitedCount,
    max_in_flight: usize,
}

/// 429s received in a phase: from the quota (our pacing) and injected.
struct RateLimitedCount {
    quota: usize,
    /// Longest `retryDelay` among the quota's 429s: how far past the window edge we were.
    quota_max_delay: Duration,
    injected: usize,
}

impl RateLimitedCount {
    /// Counts `calls`; a 429 whose delay is exactly `injected_delay` was injected.
    fn of<'a>(calls: impl Iterator<Item = &'a Call>, injected_delay: Option<Duration>) -> Self {
        let mut n = Self {
            quota: 0,
            quota_max_delay: Duration::ZERO,
            injected: 0,
        };
        for c in calls {
            if let Outcome::RateLimited { retry } = c.outcome {
                if injected_delay.is_some() && retry == injected_delay {
                    n.injected += 1;
                } else {
                    n.quota += 1;
                    n.quota_max_delay = n.quota_max_delay.max(retry.unwrap_or_default());
                }
            }
        }
        n
    }
}

impl std::fmt::Display for RateLimitedCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.quota + self.injected)?;
        if self.quota > 0 {
            let ms = self.quota_max_delay.as_secs_f64() * 1e3;
            write!(f, " (retryDelay ≤ {ms:.0} ms)")?;
        }
        if self.injected > 0 {
            write!(f, " ({} injected)", self.injected)?;
        }
        Ok(())
    }
}

fn in_range(t: Duration, from: Duration, to: Duration) -> bool {
    t >= from && t < to
}

/// Most calls in flight at once (client side) among calls sent in `[from, to)`.
fn max_in_flight(calls: &[Call], from: Duration, to: Duration) -> usize {
    let mut edges: Vec<(Duration, i64)> = calls
        .iter()
        .filter(|c| in_range(c.sent, from, to))
        .flat_map(|c| [(c.sent, 1), (c.done, -1)])
        .collect();
    // Ends before starts at the same instant.
    edges.sort_unstable();
    let (mut now, mut best) = (0i64, 0i64);
    for (_, d) in edges {
        now += d;
        best = best.max(now);
    }
    usize::try_from(best).unwrap_or(0)
}

fn lines(run: &RowRun, settings: &Settings) -> Vec<Line> {
    let many = run.phases.len() > 1;
    run.phases
        .iter()
        .map(|(phase, from, to)| {
            let admitted: Vec<Duration> = run
                .stats
                .admitted_times
                .iter()
                .copied()
                .filter(|t| in_range(*t, *from, *to))
                .collect();
            Line {
                id: run.spec.id.to_owned(),
                name: if many {
                    format!("{} — {} worker phase", run.spec.name, phase.workers)
                } else {
                    run.spec.name.clone()
                },
                workers: phase.workers,
                pacing: run.spec.pacing.label(),
                windows: phase.windows,
                per_window: admitted.len() as f64 / f64::from(phase.windows),
                max_in_window: Stats::max_in_window(&admitted, settings.window),
                rate_limited: RateLimitedCount::of(
                    run.calls.iter().filter(|c| in_range(c.sent, *from, *to)),
                    run.burst_at.map(|_| settings.retry_delay),
                ),
                max_in_flight: max_in_flight(&run.calls, *from, *to),
            }
        })
        .collect()
}

/// The burst row's recovery figures.
struct Recovery {
    /// 429s the fake injected.
    injected: u64,
    /// 429s the fake's quota answered (caused by our pacing).
    quota_429s: u64,
    /// From the injection to the first 429 answered.
    first_429: Duration,
    /// Distinct fleet pauses (overlapping ones merged).
    pauses: usize,
    /// Total time the fleet may have been paused.
    paused_for: Duration,
    /// Permits granted while a pause was in force, by Redis time (a retry storm would show here).
    granted_while_paused: usize,
    /// Permits granted while a pause script was being run (may have preceded it).
    granted_while_pausing: usize,
    /// Calls sent (bench clock) inside a pause's certain span, whatever their permit's time.
    sent_while_paused: usize,
    /// Calls already on the wire when a pause was requested.
    in_flight_at_pause: usize,
    /// Per pause: from its earliest possible end to the next call sent.
    resume_lags: Vec<Duration>,
    /// From the first 429 to the answer of the first call sent after the last pause.
    disruption: Option<Duration>,
    /// Calls received minus calls answered.
    extra_calls: u64,
}

fn recovery(run: &RowRun) -> Option<Recovery> {
    let burst_at = run.burst_at?;
    let limited: Vec<&Call> = run
        .calls
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::RateLimited { .. }) && c.sent >= burst_at)
        .collect();
    let first_429 = limited.first()?.done;
    // Group overlapping pauses: (maybe-from, maybe-to, surely-to).
    let mut groups: Vec<(Duration, Duration, Duration)> = Vec::new();
    for p in &run.pauses {
        let ((from, to), (_, surely_to)) = (p.maybe_paused(), p.surely_paused());
        match groups.last_mut() {
            Some(g) if from <= g.1 => {
                g.1 = g.1.max(to);
                g.2 = g.2.max(surely_to);
            }
            _ => groups.push((from, to, surely_to)),
        }
    }
    let count = |pred: &dyn Fn(&Call) -> bool| run.calls.iter().filter(|c| pred(c)).count();
    let surely = |t: Duration| {
        run.pauses.iter().any(|p| {
            let (a, b) = p.surely_paused();
            in_range(t, a, b)
        })
    };
    // The earliest the last pause could have ended.
    let resumed = groups.last().map_or(first_429, |g| g.2);
    let resume_lags = groups
        .iter()
        .filter_map(|&(_, _, end)| {
            run.calls
                .iter()
                .find(|c| c.sent >= end)
                .map(|c| c.sent - end)
        })
        .collect();
    Some(Recovery {
        injected: run.stats.faults_injected,
        quota_429s: run
            .stats
            .rate_limited
            .saturating_sub(run.stats.faults_injected),
        first_429: first_429 - burst_at,
        pauses: groups.len(),
        paused_for: groups.iter().map(|g| g.1 - g.0).sum(),
        granted_while_paused: count(&|c| {
            c.granted_ms
                .is_some_and(|ms| run.pauses.iter().any(|p| p.covers_grant(ms)))
        }),
        granted_while_pausing: count(&|c| {
            c.granted_ms
                .is_some_and(|ms| run.pauses.iter().any(|p| p.raced_by_grant(ms)))
        }),
        sent_while_paused: count(&|c| surely(c.sent)),
        in_flight_at_pause: count(&|c| {
            run.pauses
                .iter()
                .any(|p| c.sent < p.requested && c.done > p.requested)
        }),
        resume_lags,
        disruption: run
            .calls
            .iter()
            .find(|c| c.sent >= resumed && matches!(c.outcome, Outcome::Answered { .. }))
            .map(|c| c.done - first_429),
        extra_calls: run.stats.generate_calls.saturating_sub(run.stats.successes),
    })
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Headline comparisons computed from the lines (so they never go stale).
fn summary(out: &mut String, settings: &Settings, all: &[Line], runs: &[RowRun]) {
    let q = f64::from(settings.quota);
    let find = |id: &str, workers: usize| all.iter().find(|l| l.id == id && l.workers == workers);
    let pct = |l: &Line| 100.0 * l.per_window / q;
    let _ = writeln!(out, "\n## Summary\n");
    for (id, workers) in [("2a", 4), ("2b", 8), ("2c", 8)] {
        if let Some(l) = find(id, workers) {
            let _ = writeln!(
                out,
                "- {}: {:.1}% of Q (target ≥ 97%), 429s from the quota: {}, never more than {} in a window.",
                l.name,
                pct(l),
                l.rate_limited.quota,
                l.max_in_window,
            );
        }
    }
    if let (Some(naive), Some(fleet)) = (find("4a", 1), find("4c", 1)) {
        let _ = writeln!(
            out,
            "- One worker alone: the static Q/4 split caps it at {:.1} requests per window ({:.1}% of Q); \
             the fleet limiter lets it use what it can ({:.1}, {:.1}% of Q, {:.2}x).",
            naive.per_window,
            pct(naive),
            fleet.per_window,
            pct(fleet),
            fleet.per_window / naive.per_window.max(f64::MIN_POSITIVE),
        );
    }
    if let (Some(naive), Some(fleet)) = (find("4b", 4), find("4c", 4)) {
        let _ = writeln!(
            out,
            "- Scaled to 4 workers: the static split sized for one worker (Q each) drew {} 429s \
             ({:.1} per window, {:.1} per admitted request); the fleet limiter drew {} with {:.1}% of Q.",
            naive.rate_limited.quota,
            naive.rate_limited.quota as f64 / f64::from(naive.windows),
            naive.rate_limited.quota as f64
                / (naive.per_window * f64::from(naive.windows)).max(1.0),
            fleet.rate_limited.quota,
            pct(fleet),
        );
    }
    if let Some(naive) = find("4a", 4) {
        let _ = writeln!(
            out,
            "- Even the Q/4 split with 4 workers drew 429s ({}): four independently paced workers \
             can put more than Q in one sliding window.",
            naive.rate_limited.quota,
        );
    }
    let fleet: Vec<&RowRun> = runs
        .iter()
        .filter(|r| matches!(r.spec.pacing, Pacing::Fleet(_)))
        .collect();
    let max_per_audio = fleet
        .iter()
        .map(|r| r.stats.max_calls_per_audio())
        .max()
        .unwrap_or(0);
    let (counted, calls) = fleet.iter().fold((0, 0), |(c, n), r| {
        let paid: u64 = r.stats.calls_by_hash.values().sum();
        (c + r.stats.input_tokens, n + paid)
    });
    let per_call = counted as f64 / (calls as f64).max(1.0);
    let estimate = GeminiClient::estimate_tokens(f64::from(settings.audio_secs)) as f64;
    let _ = writeln!(
        out,
        "- Fleet rows: max calls paid per audio = {max_per_audio}; {per_call:.0} input tokens counted per \
         paid call ({}-s clip), the limiter charges {estimate:.0} per permit ({:+.0}%).",
        settings.audio_secs,
        100.0 * (estimate / per_call.max(1.0) - 1.0),
    );
}

/// The markdown report.
fn report(settings: &Settings, runs: &[RowRun], command: &str, elapsed: Duration) -> String {
    let q = f64::from(settings.quota);
    let all: Vec<Line> = runs.iter().flat_map(|r| lines(r, settings)).collect();
    let baseline = all
        .first()
        .map_or(1.0, |l| l.per_window.max(f64::MIN_POSITIVE));
    let mut out = String::new();
    let w = settings.window.as_secs_f64();
    let c = f64::from(settings.compression);
    let _ = writeln!(out, "# Gemini rate-limit benchmark\n");
    let _ = writeln!(
        out,
        "`{command}` — {}, {} cores, {:.0} s wall (compile excluded).\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(0, usize::from),
        elapsed.as_secs_f64(),
    );
    let _ = writeln!(
        out,
        "Fake Gemini on loopback with a sliding-window quota of **Q = {} requests per {w:.0} s window** \
         (time compressed {c:.0}x: the window stands for 60 s, so Q is {} RPM in real time); service time \
         uniform {:.0}–{:.0} ms (Gemini's 1–8 s, compressed); {} s of audio per item (distinct bytes). \
         Each worker is an independent task with its own Redis connection, limiter and HTTP client. \
         Requests per window are the requests the fake admitted during the phase, divided by its windows; \
         \"max in any window\" is the most admitted requests inside any sliding window (must stay ≤ Q); \
         429s are the ones the workers received; for 429s from the quota, the longest `retryDelay` \
         the fake gave says how close to the window's edge the request came.\n",
        settings.quota,
        settings.quota,
        settings.latency.0.as_secs_f64() * 1e3,
        settings.latency.1.as_secs_f64() * 1e3,
        settings.audio_secs,
    );
    let _ = writeln!(
        out,
        "| # | row | workers | pacing | windows | req / window | % of Q | ÷ baseline | 429s | max in any window | max in flight |"
    );
    let _ = writeln!(out, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &all {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} | {:.1}% | {:.2} | {} | {} | {} |",
            l.id,
            l.name,
            l.workers,
            l.pacing,
            l.windows,
            l.per_window,
            100.0 * l.per_window / q,
            l.per_window / baseline,
            l.rate_limited,
            l.max_in_window,
            l.max_in_flight,
        );
    }
    summary(&mut out, settings, &all, runs);
    let _ = writeln!(out, "\n## Calls and tokens (whole row, fake's counters)\n");
    let _ = writeln!(
        out,
        "| # | calls received | 429 answered (quota / injected) | paid calls | distinct audios | max calls per audio | input tokens counted | input tokens reported | tokens estimated by limiter | output tokens | max in flight (fake) |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let s = &r.stats;
        let (input, output) = r.calls.iter().fold((0, 0), |(i, o), c| match c.outcome {
            Outcome::Answered { input, output } => (i + input, o + output),
            _ => (i, o),
        });
        let paid: u64 = s.calls_by_hash.values().sum();
        let estimated = if matches!(r.spec.pacing, Pacing::Fleet(_)) {
            r.estimated_tokens.to_string()
        } else {
            "—".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.spec.id,
            s.generate_calls,
            s.rate_limited.saturating_sub(s.faults_injected),
            s.faults_injected,
            paid,
            s.calls_by_hash.len(),
            s.max_calls_per_audio(),
            s.input_tokens,
            input,
            estimated,
            output,
            s.max_concurrent,
        );
    }
    for r in runs {
        if let Some(rec) = recovery(r) {
            let _ = writeln!(out, "\n## 429 burst (row {})\n", r.spec.id);
            let max_lag = rec.resume_lags.iter().max().copied().unwrap_or_default();
            let _ = writeln!(
                out,
                "- injected: {} consecutive 429s (`Fault::burst_429`) with `RetryInfo.retryDelay` = {} \
                 (30 s real), {} after the row started; the first was answered {} later. The fake \
                 applies them to its next {} calls, so each 429 that arrives after a pause starts a new one.\n\
                 - fleet pauses set by the workers from `RetryInfo` (overlapping ones merged, the \
                 quota's own 429s included): {} (paused {} in all)\n\
                 - permits granted while a pause was in force (Redis clock): **{}** (no retry storm); \
                 granted while a pause script was running (raced it): {}; calls sent inside a pause by \
                 the workers' clock: {}; calls already in flight when a pause was requested: {}\n\
                 - resume: first call after each pause's earliest end: max {:.0} ms later\n\
                 - disruption (first 429 → answer of the first call sent after the last pause): **{}**\n\
                 - extra calls (received − answered): **{}** = {} injected + {} answered 429 by the quota",
                rec.injected,
                secs(settings.retry_delay),
                secs(settings.window.mul_f64(settings.burst_after_windows)),
                secs(rec.first_429),
                settings.burst_len,
                rec.pauses,
                secs(rec.paused_for),
                rec.granted_while_paused,
                rec.granted_while_pausing,
                rec.sent_while_paused,
                rec.in_flight_at_pause,
                max_lag.as_secs_f64() * 1e3,
                rec.disruption
                    .map_or_else(|| "not recovered".to_owned(), secs),
                rec.extra_calls,
                rec.injected,
                rec.quota_429s,
            );
        }
    }
    out
}

fn specs(s: &Settings) -> Vec<RowSpec> {
    let q = f64::from(s.quota);
    let one = |workers, windows| vec![Phase { workers, windows }];
    let scale = vec![
        Phase {
            workers: 1,
            windows: s.scale_windows.0,
        },
        Phase {
            workers: 4,
            windows: s.scale_windows.1,
        },
    ];
    vec![
        RowSpec {
            id: "1",
            name: "seed baseline: one call at a time, no limiter".to_owned(),
            pacing: Pacing::Unpaced,
            phases: one(1, s.baseline_windows),
            burst_after: None,
        },
        RowSpec {
            id: "2a",
            name: "fleet limiter, 4 workers".to_owned(),
            pacing: Pacing::Fleet(0.0),
            phases: one(4, s.steady_windows),
            burst_after: None,
        },
        RowSpec {
            id: "2b",
            name: "fleet limiter, 8 workers".to_owned(),
            pacing: Pacing::Fleet(0.0),
            phases: one(8, s.steady_windows),
            burst_after: None,
        },
        RowSpec {
            id: "2c",
            name: "fleet limiter, 8 workers, limiter window 1% longer than the quota's".to_owned(),
            pacing: Pacing::Fleet(0.01),
            phases: one(8, s.steady_windows),
            burst_after: None,
        },
        RowSpec {
            id: "3",
            name: format!(
                "fleet limiter, 4 workers, burst of {} injected 429s",
                s.burst_len
            ),
            pacing: Pacing::Fleet(0.0),
            phases: one(4, s.burst_windows),
            burst_after: Some(s.burst_after_windows),
        },
        RowSpec {
            id: "4a",
            name: "naive static split Q/4 per worker, 1 → 4".to_owned(),
            pacing: Pacing::Local(q / 4.0),
            phases: scale.clone(),
            burst_after: None,
        },
        RowSpec {
            id: "4b",
            name: "naive static split Q per worker, 1 → 4".to_owned(),
            pacing: Pacing::Local(q),
            phases: scale.clone(),
            burst_after: None,
        },
        RowSpec {
            id: "4c",
            name: "fleet limiter, 1 → 4".to_owned(),
            pacing: Pacing::Fleet(0.0),
            phases: scale,
            burst_after: None,
        },
    ]
}

async fn run(args: Args) -> Result<(), BenchError> {
    let settings = Settings::new(args.quick);
    RedisConn::connect(&args.redis, false)
        .await
        .map_err(|source| BenchError::Redis {
            url: args.redis.clone(),
            source,
        })?
        .ping()
        .await
        .map_err(|e| BenchError::Redis {
            url: args.redis.clone(),
            source: RedisConnError::Unavailable(e),
        })?;
    let started = Instant::now();
    let mut runs = Vec::new();
    for (i, spec) in specs(&settings).into_iter().enumerate() {
        let row_started = Instant::now();
        eprintln!("row {} ({}) ...", spec.id, spec.name);
        let run = run_row(&settings, &args, spec, 1_000 + i as u64).await?;
        eprintln!("  done in {:.1} s", row_started.elapsed().as_secs_f64());
        runs.push(run);
    }
    let mut command =
        "cargo run --release -p engage-analyze --example ratelimit_bench --".to_owned();
    for a in std::env::args().skip(1) {
        command.push(' ');
        command.push_str(&a);
    }
    let table = report(
        &settings,
        &runs,
        command.trim_end_matches(" --"),
        started.elapsed(),
    );
    println!("{table}");
    let path = args.results.clone().unwrap_or_else(|| {
        // workers/analyze → the workspace root.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .unwrap_or(Path::new("."));
        root.join("bench/gemini/RESULTS.md")
    });
    std::fs::write(&path, &table).map_err(|source| BenchError::Write {
        path: path.clone(),
        source,
    })?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ratelimit_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
