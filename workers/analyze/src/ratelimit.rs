//! Fleet-wide rate limiting: one atomic Redis script shared by every analyze worker, plus governor smoothing per process.
//!
//! The Gemini quota belongs to the API key, so every analyze worker takes its
//! permits from the same place: one Lua script, run atomically by Redis, that
//! grants a request only if **all** of these allow it at once:
//!
//! - requests per minute (RPM), tokens per minute (TPM, the request's estimated
//!   input tokens) and requests per day (RPD), each a *sliding-window log*:
//!   a permit is granted only if, counting it, no window of the configured
//!   length holds more than the limit. A sliding log is used rather than GCRA
//!   or a token bucket because those allow a burst on top of the steady rate
//!   (up to twice the limit inside one window), which is exactly what draws
//!   429s from a per-minute quota; the log's cost is one sorted-set entry per
//!   permit in the window and O(log n) per call;
//! - the fleet pause (`pause_until`, a server-time millisecond timestamp),
//!   set by [`FleetLimiter::pause_fleet`] when Gemini answers 429 with a retry
//!   delay or a per-day quota is exhausted. A pause only ever extends.
//!
//! Time is Redis server time (`TIME` inside the script), never a worker's
//! clock ([`TimeSource::Server`]; tests drive a [`TimeSource::Manual`] clock
//! by hand, so their assertions do not depend on the machine's speed). All keys of one limiter share the hash tag `{<namespace>:gemini}`,
//! so the script runs on a Redis Cluster too. When a permit is refused the
//! script returns how long until the blocking entry leaves its window.
//!
//! Per day is a sliding 24 h window, stricter than Google's reset at midnight
//! Pacific: it never admits more than RPD requests in any calendar day either.
//!
//! [`FleetLimiter::acquire`] first passes a per-process `governor` limiter
//! (the fleet rate, with a burst of a sixth of a window) so that one process's
//! concurrent jobs do not all hit Redis in the same instant, then waits for a
//! fleet permit — but never past `max_wait`: it answers [`Acquired::NotWithin`]
//! so the caller can release the message with a delay instead of holding it
//! past the broker's acknowledgement timeout.

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota as GovernorQuota, RateLimiter};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use rand::Rng;
use redis::Script;
use redis::aio::ConnectionLike;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// Which Gemini quota a limit or a 429 concerns (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKind {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
    /// Requests per day.
    Rpd,
    /// A 429 that names no known quota.
    Unknown,
}

impl QuotaKind {
    /// Every kind, in label order.
    pub const ALL: [QuotaKind; 4] = [Self::Rpm, Self::Tpm, Self::Rpd, Self::Unknown];

    /// The metric label: `rpm`, `tpm`, `rpd` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Tpm => "tpm",
            Self::Rpd => "rpd",
            Self::Unknown => "unknown",
        }
    }
}

/// The quota of one API key (and model). `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Input tokens per minute.
    pub tpm: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u32>,
}

/// Window lengths. Real quotas use the defaults (60 s and 24 h); the
/// benchmark scales them down to run in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// The RPM and TPM window.
    pub minute: Duration,
    /// The RPD window.
    pub day: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            minute: Duration::from_secs(60),
            day: Duration::from_secs(24 * 3600),
        }
    }
}

/// What refused a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// The fleet is paused.
    Pause,
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
    /// Requests per day.
    Rpd,
    /// This process's smoothing limiter.
    Local,
}

impl Limit {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Rpm => "rpm",
            Self::Tpm => "tpm",
            Self::Rpd => "rpd",
            Self::Local => "local",
        }
    }

    fn from_script(reason: &str) -> Result<Self, RateLimitError> {
        Ok(match reason {
            "pause" => Self::Pause,
            "rpm" => Self::Rpm,
            "tpm" => Self::Tpm,
            "rpd" => Self::Rpd,
            other => {
                return Err(RateLimitError::UnexpectedReply(format!(
                    "unknown limit {other:?}"
                )));
            }
        })
    }
}

/// Where the limiter's scripts take "now" from.
#[derive(Debug, Clone, Default)]
pub enum TimeSource {
    /// Redis server time (`TIME`): one clock for the whole fleet.
    #[default]
    Server,
    /// Milliseconds since the epoch, as the caller sets them: tests move time
    /// by hand instead of sleeping. Redis still expires keys in real time, so
    /// use windows and pauses longer than the test runs.
    Manual(Arc<AtomicU64>),
}

impl TimeSource {
    /// The script argument: the manual time, or −1 for server time.
    fn arg(&self) -> i64 {
        match self {
            Self::Server => -1,
            Self::Manual(ms) => i64::try_from(ms.load(Ordering::SeqCst)).unwrap_or(i64::MAX),
        }
    }
}

/// A granted permit: the caller may make one request of `tokens` estimated tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// Tokens charged to the TPM window.
    pub tokens: u64,
    /// Redis server time of the grant, in milliseconds since the epoch.
    pub granted_at_ms: u64,
    /// Time spent waiting in [`FleetLimiter::acquire`] (zero for `try_acquire`).
    pub waited: Duration,
}

/// Answer of [`FleetLimiter::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryAcquire {
    /// Granted.
    Permit(Permit),
    /// Refused: try again after `wait`.
    Wait {
        /// Time until the blocking limit has room (a lower bound: others may take it first).
        wait: Duration,
        /// What refused.
        limit: Limit,
    },
}

/// Answer of [`FleetLimiter::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Granted within `max_wait`.
    Granted(Permit),
    /// No permit before `max_wait`: release the job with (at least) this delay.
    NotWithin {
        /// The wait the limiter predicted when it gave up.
        wait: Duration,
        /// What refused.
        limit: Limit,
    },
}

/// Errors of the fleet limiter.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// Redis failed or was unreachable (transient for the job).
    #[error("rate limiter redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// The request's cost can never fit the TPM quota.
    #[error("request of {cost} tokens exceeds the whole TPM quota of {tpm}")]
    CostExceedsQuota {
        /// The request's estimated tokens.
        cost: u64,
        /// The TPM quota.
        tpm: u64,
    },
    /// The namespace is empty or contains characters that would break the hash tag.
    #[error("invalid rate limiter namespace {0:?}")]
    InvalidNamespace(String),
    /// A quota or window value that cannot be enforced (zero window, ...).
    #[error("invalid rate limiter setting: {0}")]
    InvalidSetting(String),
    /// Registering the metrics failed (e.g. registered twice in one registry).
    #[error("rate limiter metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The script answered something this code does not understand.
    #[error("unexpected rate limiter reply: {0}")]
    UnexpectedReply(String),
}

/// The acquire script. KEYS: 1 request log (minute), 2 token log (minute,
/// members `seq:cost`), 3 token sum, 4 request log (day), 5 pause-until,
/// 6 sequence. ARGV: rpm, tpm, rpd (−1 = unlimited), minute ms, day ms, cost,
/// now ms (−1 = Redis `TIME`).
/// Returns `{granted (1/0/−1 too big), wait_ms, reason, now_ms}`.
const ACQUIRE_LUA: &str = r#"
local now = tonumber(ARGV[7])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local rpm, tpm, rpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local win, day, cost = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

if tpm >= 0 and cost > tpm then return {-1, 0, 'tpm', now} end

local pause = tonumber(redis.call('GET', KEYS[5]) or '0')
if pause > now then return {0, pause - now, 'pause', now} end

local function cost_of(member) return tonumber(string.match(member, ':(%d+)$')) or 0 end

-- Drop entries that left their window: a window is (now - len, now].
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - win)
if #old > 0 then
  local freed = 0
  for _, m in ipairs(old) do freed = freed + cost_of(m) end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - win)
  redis.call('DECRBY', KEYS[3], freed)
end
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[3]) end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - day)

local wait, reason = 0, ''
local function blocked_by_count(key, limit, len, name)
  local n = redis.call('ZCARD', key)
  if n >= limit then
    local w = len
    if limit > 0 then
      local e = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
      if e[2] then w = tonumber(e[2]) + len - now end
    end
    if w > wait then wait, reason = w, name end
  end
end
if rpd >= 0 then blocked_by_count(KEYS[4], rpd, day, 'rpd') end
if rpm >= 0 then blocked_by_count(KEYS[1], rpm, win, 'rpm') end
if tpm >= 0 then
  local used = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), 0)
  if used + cost > tpm then
    -- Oldest entries first, in pages, until enough tokens would be freed.
    local excess = used + cost - tpm
    local w, start, found = win, 0, false
    while not found do
      local entries = redis.call('ZRANGE', KEYS[2], start, start + 99, 'WITHSCORES')
      if #entries == 0 then break end
      for i = 1, #entries, 2 do
        excess = excess - cost_of(entries[i])
        if excess <= 0 then
          w, found = tonumber(entries[i + 1]) + win - now, true
          break
        end
      end
      start = start + 100
    end
    if w > wait then wait, reason = w, 'tpm' end
  end
end
if wait > 0 then return {0, wait, reason, now} end

local id = redis.call('INCR', KEYS[6])
redis.call('PEXPIRE', KEYS[6], math.max(win, day))
if rpm >= 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], win)
end
if tpm >= 0 then
  redis.call('ZADD', KEYS[2], now, id .. ':' .. cost)
  redis.call('INCRBY', KEYS[3], cost)
  redis.call('PEXPIRE', KEYS[2], win)
  redis.call('PEXPIRE', KEYS[3], win)
end
if rpd >= 0 then
  redis.call('ZADD', KEYS[4], now, id)
  redis.call('PEXPIRE', KEYS[4], day)
end
return {1, 0, '', now}
"#;

/// Extends the pause to now + ARGV[1] ms unless it already ends later; ARGV[2]
/// is now in ms (−1 = Redis `TIME`). Returns the remaining pause in ms.
const PAUSE_LUA: &str = r#"
local now = tonumber(ARGV[2])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local target = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if target > cur then
  redis.call('SET', KEYS[1], target, 'PX', tonumber(ARGV[1]))
  return target - now
end
return cur - now
"#;

/// Remaining pause in ms (0 when not paused); ARGV[1] is now in ms (−1 = Redis `TIME`).
const PAUSED_FOR_LUA: &str = r#"
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur > now then return cur - now end
return 0
"#;

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_LUA));
static PAUSE: LazyLock<Script> = LazyLock::new(|| Script::new(PAUSE_LUA));
static PAUSED_FOR: LazyLock<Script> = LazyLock::new(|| Script::new(PAUSED_FOR_LUA));

/// The Redis keys of one limiter (one hash tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Request log of the minute window.
    pub requests_minute: String,
    /// Token log of the minute window.
    pub tokens_minute: String,
    /// Sum of the token log.
    pub tokens_sum: String,
    /// Request log of the day window.
    pub requests_day: String,
    /// The fleet pause (server-time ms).
    pub pause_until: String,
    /// Member sequence.
    pub seq: String,
}

impl Keys {
    /// Keys under `{<namespace>:gemini}`; the namespace may not contain braces or whitespace.
    pub fn new(namespace: &str) -> Result<Self, RateLimitError> {
        if namespace.is_empty()
            || namespace
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
        {
            return Err(RateLimitError::InvalidNamespace(namespace.to_owned()));
        }
        let k = |suffix: &str| format!("{{{namespace}:gemini}}:{suffix}");
        Ok(Self {
            requests_minute: k("rpm"),
            tokens_minute: k("tpm"),
            tokens_sum: k("tpm_sum"),
            requests_day: k("rpd"),
            pause_until: k("pause_until"),
            seq: k("seq"),
        })
    }

    fn all(&self) -> [&str; 6] {
        [
            &self.requests_minute,
            &self.tokens_minute,
            &self.tokens_sum,
            &self.requests_day,
            &self.pause_until,
            &self.seq,
        ]
    }
}

/// The limiter's Prometheus metrics (bounded labels only).
#[derive(Clone)]
pub struct LimiterMetrics {
    /// `engage_ratelimit_permits_total`
    pub permits: IntCounter,
    /// `engage_ratelimit_refusals_total{limit}`: refusals by what refused.
    pub refusals: IntCounterVec,
    /// `engage_ratelimit_wait_seconds`: time `acquire` waited (granted or not).
    pub wait_seconds: Histogram,
    /// `engage_ratelimit_not_within_total`: `acquire` calls that gave up at `max_wait`.
    pub not_within: IntCounter,
    /// `engage_ratelimit_fleet_pauses_total`: pauses requested by this process.
    pub pauses: IntCounter,
    /// `engage_gemini_429_total{quota}`: 429s received, by quota (`rpm|tpm|rpd|unknown`).
    pub rate_limited: IntCounterVec,
    /// `engage_gemini_tokens_total{kind}`: `estimated` tokens charged, `actual` tokens reported.
    pub tokens: IntCounterVec,
}

impl LimiterMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let m = Self {
            permits: IntCounter::new(
                "engage_ratelimit_permits_total",
                "Fleet rate-limit permits granted to this process.",
            )?,
            refusals: IntCounterVec::new(
                Opts::new(
                    "engage_ratelimit_refusals_total",
                    "Permit requests refused, by the limit that refused.",
                ),
                &["limit"],
            )?,
            wait_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "engage_ratelimit_wait_seconds",
                    "Time spent waiting for a fleet permit.",
                )
                .buckets(vec![
                    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
            )?,
            not_within: IntCounter::new(
                "engage_ratelimit_not_within_total",
                "Permit waits given up at max_wait (job released with a delay).",
            )?,
            pauses: IntCounter::new(
                "engage_ratelimit_fleet_pauses_total",
                "Fleet pauses requested by this process.",
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "engage_gemini_429_total",
                    "Gemini 429 answers, by quota type.",
                ),
                &["quota"],
            )?,
            tokens: IntCounterVec::new(
                Opts::new(
                    "engage_gemini_tokens_total",
                    "Gemini input tokens: estimated (charged to the limiter) and actual (reported).",
                ),
                &["kind"],
            )?,
        };
        // Create every label value up front so dashboards see zeros.
        for l in ["pause", "rpm", "tpm", "rpd", "local"] {
            m.refusals.with_label_values(&[l]);
        }
        for q in QuotaKind::ALL {
            m.rate_limited.with_label_values(&[q.as_str()]);
        }
        for k in ["estimated", "actual"] {
            m.tokens.with_label_values(&[k]);
        }
        Ok(m)
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.permits.clone()))?;
        registry.register(Box::new(self.refusals.clone()))?;
        registry.register(Box::new(self.wait_seconds.clone()))?;
        registry.register(Box::new(self.not_within.clone()))?;
        registry.register(Box::new(self.pauses.clone()))?;
        registry.register(Box::new(self.rate_limited.clone()))?;
        registry.register(Box::new(self.tokens.clone()))?;
        Ok(())
    }
}

/// The fleet-wide limiter of one API key. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct FleetLimiter<C> {
    conn: C,
    keys: Keys,
    quota: Quota,
    windows: Windows,
    local: Option<Arc<DefaultDirectRateLimiter>>,
    metrics: LimiterMetrics,
    time: TimeSource,
}

impl<C> std::fmt::Debug for FleetLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLimiter")
            .field("keys", &self.keys)
            .field("quota", &self.quota)
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn limit_arg<T: Into<u64>>(v: Option<T>) -> i64 {
    v.map_or(-1, |n| i64::try_from(n.into()).unwrap_or(i64::MAX))
}

impl<C: ConnectionLike + Clone + Send + Sync> FleetLimiter<C> {
    /// A limiter for `quota` on `conn` (a `ConnectionManager`, a cluster
    /// connection or [`crate::redis_conn::RedisConn`]), with keys under
    /// `{<namespace>:gemini}` and the real 60 s / 24 h windows.
    pub fn new(conn: C, namespace: &str, quota: Quota) -> Result<Self, RateLimitError> {
        Self::with_windows(conn, namespace, quota, Windows::default())
    }

    /// Like [`Self::new`] with other window lengths (the benchmark scales time down).
    pub fn with_windows(
        conn: C,
        namespace: &str,
        quota: Quota,
        windows: Windows,
    ) -> Result<Self, RateLimitError> {
        if windows.minute < Duration::from_millis(1) || windows.day < Duration::from_millis(1) {
            return Err(RateLimitError::InvalidSetting(
                "windows must be at least 1 ms".to_owned(),
            ));
        }
        let local = match quota.rpm {
            Some(rpm) if rpm > 0 => {
                let period = windows.minute / rpm;
                let burst = NonZeroU32::new((rpm / 6).max(1)).unwrap_or(NonZeroU32::MIN);
                GovernorQuota::with_period(period.max(Duration::from_nanos(1)))
                    .map(|q| Arc::new(RateLimiter::direct(q.allow_burst(burst))))
            }
            _ => None,
        };
        Ok(Self {
            conn,
            keys: Keys::new(namespace)?,
            quota,
            windows,
            local,
            metrics: LimiterMetrics::new()?,
            time: TimeSource::Server,
        })
    }

    /// The same limiter with another time source (tests: [`TimeSource::Manual`]).
    pub fn with_time_source(mut self, time: TimeSource) -> Self {
        self.time = time;
        self
    }

    /// Registers this limiter's metrics into `registry` (once per registry).
    pub fn register_metrics(&self, registry: &Registry) -> Result<(), RateLimitError> {
        Ok(self.metrics.register(registry)?)
    }

    /// The metrics, e.g. to read counters in tests.
    pub fn metrics(&self) -> &LimiterMetrics {
        &self.metrics
    }

    /// The Redis keys in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The enforced quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// One atomic attempt to take a permit for a request of `tokens` estimated tokens.
    pub async fn try_acquire(&self, tokens: u64) -> Result<TryAcquire, RateLimitError> {
        let mut conn = self.conn.clone();
        let mut invocation = ACQUIRE.prepare_invoke();
        for key in self.keys.all() {
            invocation.key(key);
        }
        invocation
            .arg(limit_arg(self.quota.rpm))
            .arg(limit_arg(self.quota.tpm))
            .arg(limit_arg(self.quota.rpd))
            .arg(millis(self.windows.minute))
            .arg(millis(self.windows.day))
            .arg(tokens)
            .arg(self.time.arg());
        let (granted, wait_ms, reason, now_ms): (i64, i64, String, i64) =
            invocation.invoke_async(&mut conn).await?;
        match granted {
            1 => {
                self.metrics.permits.inc();
                self.metrics
                    .tokens
                    .with_label_values(&["estimated"])
                    .inc_by(tokens);
                Ok(TryAcquire::Permit(Permit {
                    tokens,
                    granted_at_ms: u64::try_from(now_ms).unwrap_or(0),
                    waited: Duration::ZERO,
                }))
            }
            0 => {
                let limit = Limit::from_script(&reason)?;
                self.metrics
                    .refusals
                    .with_label_values(&[limit.as_str()])
                    .inc();
                Ok(TryAcquire::Wait {
                    wait: Duration::from_millis(u64::try_from(wait_ms.max(1)).unwrap_or(1)),
                    limit,
                })
            }
            -1 => Err(RateLimitError::CostExceedsQuota {
                cost: tokens,
                tpm: self.quota.tpm.unwrap_or(0),
            }),
            other => Err(RateLimitError::UnexpectedReply(format!(
                "granted = {other}"
            ))),
        }
    }

    /// Waits for a permit (local smoothing, then the fleet), at most `max_wait`.
    ///
    /// Returns [`Acquired::NotWithin`] as soon as the predicted wait would pass
    /// `max_wait`, without sleeping it out.
    pub async fn acquire(
        &self,
        tokens: u64,
        max_wait: Duration,
    ) -> Result<Acquired, RateLimitError> {
        let started = Instant::now();
        let deadline = started + max_wait;
        let gave_up = |wait: Duration, limit: Limit| {
            self.metrics.not_within.inc();
            self.metrics
                .wait_seconds
                .observe(started.elapsed().as_secs_f64());
            Ok(Acquired::NotWithin { wait, limit })
        };
        if let Some(local) = &self.local {
            while let Err(not_until) = local.check() {
                let wait = not_until.wait_time_from(local.clock().now());
                if Instant::now() + wait > deadline {
                    self.metrics
                        .refusals
                        .with_label_values(&[Limit::Local.as_str()])
                        .inc();
                    return gave_up(wait, Limit::Local);
                }
                tokio::time::sleep(wait).await;
            }
        }
        loop {
            match self.try_acquire(tokens).await? {
                TryAcquire::Permit(mut permit) => {
                    permit.waited = started.elapsed();
                    self.metrics
                        .wait_seconds
                        .observe(permit.waited.as_secs_f64());
                    return Ok(Acquired::Granted(permit));
                }
                TryAcquire::Wait { wait, limit } => {
                    if Instant::now() + wait > deadline {
                        return gave_up(wait, limit);
                    }
                    // Spread the waiters so they do not all retry in the same millisecond.
                    let spread = millis(wait / 10).clamp(1, 50);
                    let jitter = Duration::from_millis(rand::rng().random_range(0..=spread));
                    let sleep =
                        (wait + jitter).min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(sleep).await;
                }
            }
        }
    }

    /// Pauses every worker of the fleet for `duration` (extends, never
    /// shortens, a pause in force). Returns the remaining pause.
    pub async fn pause_fleet(&self, duration: Duration) -> Result<Duration, RateLimitError> {
        let mut conn = self.conn.clone();
        let remaining: i64 = PAUSE
            .key(&self.keys.pause_until)
            .arg(millis(duration).max(1))
            .arg(self.time.arg())
            .invoke_async(&mut conn)
            .await?;
        self.metrics.pauses.inc();
        Ok(Duration::from_millis(u64::try_from(remaining).unwrap_or(0)))
    }

    /// The remaining fleet pause, if one is in force.
    pub async fn paused_for(&self) -> Result<Option<Duration>, RateLimitError> {
        let mut conn = self.conn.clone();
        let remaining: i64 = PAUSED_FOR
            .key(&self.keys.pause_until)
            .arg(self.time.arg())
            .invoke_async(&mut conn)
            .await?;
        Ok((remaining > 0).then(|| Duration::from_millis(u64::try_from(remaining).unwrap_or(0))))
    }

    /// Counts a 429 from Gemini by quota type.
    pub fn record_429(&self, quota: QuotaKind) {
        self.metrics
            .rate_limited
            .with_label_values(&[quota.as_str()])
            .inc();
    }

    /// Counts the input tokens Gemini reported for a call (`usageMetadata.promptTokenCount`).
    pub fn record_actual_tokens(&self, tokens: u64) {
        self.metrics
            .tokens
            .with_label_values(&["actual"])
            .inc_by(tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redis::aio::ConnectionManager;

    async fn conn() -> ConnectionManager {
        let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        ConnectionManager::new(client).await.unwrap()
    }

    fn namespace() -> String {
        format!("test-{}", uuid::Uuid::new_v4())
    }

    async fn limiter(ns: &str, quota: Quota, windows: Windows) -> FleetLimiter<ConnectionManager> {
        FleetLimiter::with_windows(conn().await, ns, quota, windows).unwrap()
    }

    /// A hand-driven clock (ms since the epoch) for the limiter's scripts.
    #[derive(Clone)]
    struct VirtualTime(Arc<AtomicU64>);

    impl VirtualTime {
        fn new() -> Self {
            Self(Arc::new(AtomicU64::new(1_700_000_000_000)))
        }
        fn now(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn advance(&self, ms: u64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
        fn source(&self) -> TimeSource {
            TimeSource::Manual(self.0.clone())
        }
    }

    /// A limiter with the real 60 s / 24 h windows on virtual time: the
    /// assertions below are exact and independent of the machine's speed
    /// (no real window can pass, nor any key expire, while a test runs).
    async fn virtual_limiter(
        ns: &str,
        quota: Quota,
        time: &VirtualTime,
    ) -> FleetLimiter<ConnectionManager> {
        limiter(ns, quota, Windows::default())
            .await
            .with_time_source(time.source())
    }

    const MINUTE: u64 = 60_000;
    const DAY: u64 = 24 * 3_600_000;

    /// The most grants inside any half-open window `[t, t + len)` of limiter time.
    fn max_in_window(times: &mut [u64], len: u64) -> usize {
        times.sort_unstable();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= len {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[tokio::test]
    async fn concurrent_limiters_never_exceed_rpm_in_any_window() {
        let ns = namespace();
        let quota = Quota {
            rpm: Some(20),
            ..Quota::default()
        };
        let time = VirtualTime::new();
        // Each "process" has its own connection and limiter, like a worker.
        let mut limiters = Vec::new();
        for _ in 0..4 {
            limiters.push(virtual_limiter(&ns, quota, &time).await);
        }
        // Three and a half minutes in steps of 2.5 s (not a divisor of the
        // window, so windows start between steps); at every step 16 tasks
        // race for permits at once.
        let mut times = Vec::new();
        for _ in 0..84 {
            let mut tasks = tokio::task::JoinSet::new();
            for l in &limiters {
                for _ in 0..4 {
                    let l = l.clone();
                    tasks.spawn(async move {
                        let mut granted = Vec::new();
                        for _ in 0..2 {
                            match l.try_acquire(1).await.unwrap() {
                                TryAcquire::Permit(p) => granted.push(p.granted_at_ms),
                                TryAcquire::Wait { wait, limit } => {
                                    assert_eq!(limit, Limit::Rpm);
                                    assert!(
                                        wait > Duration::ZERO && wait <= Duration::from_secs(60)
                                    );
                                }
                            }
                        }
                        granted
                    });
                }
            }
            while let Some(r) = tasks.join_next().await {
                times.extend(r.unwrap());
            }
            time.advance(2_500);
        }
        let max = max_in_window(&mut times, MINUTE);
        assert_eq!(max, 20, "the most grants inside one 60 s window");
        // The quota is fully used: every window [k·60 s, (k+1)·60 s) of the run
        // (0 ≤ k < 3) is full, and the last half minute holds the rest.
        assert_eq!(times.len(), 80, "grants over 3.5 minutes at 20 per minute");
    }

    #[tokio::test]
    async fn pause_blocks_every_limiter_and_only_extends() {
        let ns = namespace();
        let quota = Quota {
            rpm: Some(1_000),
            ..Quota::default()
        };
        let time = VirtualTime::new();
        let a = virtual_limiter(&ns, quota, &time).await;
        let b = virtual_limiter(&ns, quota, &time).await;
        assert_eq!(b.paused_for().await.unwrap(), None);
        let remaining = a.pause_fleet(Duration::from_secs(120)).await.unwrap();
        assert_eq!(remaining, Duration::from_secs(120));
        // A shorter pause does not shorten it.
        time.advance(10_000);
        let remaining = b.pause_fleet(Duration::from_millis(50)).await.unwrap();
        assert_eq!(remaining, Duration::from_secs(110));
        // A longer one extends it.
        let remaining = b.pause_fleet(Duration::from_secs(115)).await.unwrap();
        assert_eq!(remaining, Duration::from_secs(115));
        time.advance(15_000);
        assert_eq!(
            a.paused_for().await.unwrap(),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            b.try_acquire(1).await.unwrap(),
            TryAcquire::Wait {
                wait: Duration::from_secs(100),
                limit: Limit::Pause
            }
        );
        let not_within = b.acquire(1, Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            not_within,
            Acquired::NotWithin {
                wait: Duration::from_secs(100),
                limit: Limit::Pause
            }
        );
        // One millisecond before the end the pause still holds; at the end it is over.
        time.advance(99_999);
        assert_eq!(
            a.paused_for().await.unwrap(),
            Some(Duration::from_millis(1))
        );
        time.advance(1);
        assert_eq!(a.paused_for().await.unwrap(), None);
        match a.acquire(1, Duration::from_secs(3)).await.unwrap() {
            Acquired::Granted(p) => assert_eq!(p.granted_at_ms, time.now()),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.metrics().pauses.get(), 1);
        assert_eq!(b.metrics().pauses.get(), 2);
    }

    #[tokio::test]
    async fn requests_per_day_exhaust_and_report_the_wait() {
        let ns = namespace();
        let quota = Quota {
            rpd: Some(3),
            ..Quota::default()
        };
        let time = VirtualTime::new();
        let l = virtual_limiter(&ns, quota, &time).await;
        let first = time.now();
        for _ in 0..3 {
            assert!(matches!(
                l.try_acquire(1).await.unwrap(),
                TryAcquire::Permit(_)
            ));
            time.advance(3_600_000);
        }
        // Three hours in: the first permit leaves the day window in 21 hours.
        assert_eq!(
            l.try_acquire(1).await.unwrap(),
            TryAcquire::Wait {
                wait: Duration::from_millis(first + DAY - time.now()),
                limit: Limit::Rpd
            }
        );
        let r = l.acquire(1, Duration::from_secs(60)).await.unwrap();
        assert!(matches!(
            r,
            Acquired::NotWithin {
                limit: Limit::Rpd,
                ..
            }
        ));
        assert_eq!(l.metrics().not_within.get(), 1);
        // 24 h after the first permit there is room for exactly one more.
        time.advance(first + DAY - time.now());
        assert!(matches!(
            l.try_acquire(1).await.unwrap(),
            TryAcquire::Permit(_)
        ));
        assert!(matches!(
            l.try_acquire(1).await.unwrap(),
            TryAcquire::Wait {
                limit: Limit::Rpd,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn tokens_per_minute_count_costs() {
        let ns = namespace();
        let quota = Quota {
            tpm: Some(100),
            ..Quota::default()
        };
        let time = VirtualTime::new();
        let l = virtual_limiter(&ns, quota, &time).await;
        let first = time.now();
        assert!(matches!(
            l.try_acquire(60).await.unwrap(),
            TryAcquire::Permit(_)
        ));
        time.advance(10_000);
        assert!(matches!(
            l.try_acquire(30).await.unwrap(),
            TryAcquire::Permit(_)
        ));
        time.advance(5_000);
        // 20 more need the 60-token entry gone: 45 s from now.
        assert_eq!(
            l.try_acquire(20).await.unwrap(),
            TryAcquire::Wait {
                wait: Duration::from_millis(first + MINUTE - time.now()),
                limit: Limit::Tpm
            }
        );
        // A small request still fits.
        assert!(matches!(
            l.try_acquire(10).await.unwrap(),
            TryAcquire::Permit(_)
        ));
        assert!(matches!(
            l.try_acquire(101).await,
            Err(RateLimitError::CostExceedsQuota {
                cost: 101,
                tpm: 100
            })
        ));
        // Once the first entry leaves its window, its tokens are free again.
        time.advance(first + MINUTE - time.now());
        match l.acquire(60, Duration::from_secs(2)).await.unwrap() {
            Acquired::Granted(p) => assert_eq!((p.tokens, p.granted_at_ms), (60, time.now())),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            l.try_acquire(1).await.unwrap(),
            TryAcquire::Wait {
                limit: Limit::Tpm,
                ..
            }
        ));
        assert_eq!(
            l.metrics().tokens.with_label_values(&["estimated"]).get(),
            60 + 30 + 10 + 60
        );
    }

    #[tokio::test]
    async fn tpm_wait_scans_the_token_log_past_its_first_page() {
        let ns = namespace();
        let quota = Quota {
            tpm: Some(1_000),
            ..Quota::default()
        };
        let time = VirtualTime::new();
        let l = virtual_limiter(&ns, quota, &time).await;
        let first = time.now();
        for _ in 0..150 {
            assert!(matches!(
                l.try_acquire(4).await.unwrap(),
                TryAcquire::Permit(_)
            ));
        }
        time.advance(300);
        for _ in 0..100 {
            assert!(matches!(
                l.try_acquire(4).await.unwrap(),
                TryAcquire::Permit(_)
            ));
        }
        // 600 more tokens need the 150 oldest entries gone (the second page
        // of the log holds the 150th): the first batch leaves the window.
        assert_eq!(
            l.try_acquire(600).await.unwrap(),
            TryAcquire::Wait {
                wait: Duration::from_millis(first + MINUTE - time.now()),
                limit: Limit::Tpm
            }
        );
    }

    #[tokio::test]
    async fn all_limits_must_allow() {
        let ns = namespace();
        let quota = Quota {
            rpm: Some(2),
            tpm: Some(1_000),
            rpd: Some(100),
        };
        let time = VirtualTime::new();
        let l = virtual_limiter(&ns, quota, &time).await;
        assert!(matches!(
            l.try_acquire(1).await.unwrap(),
            TryAcquire::Permit(_)
        ));
        time.advance(1_000);
        assert!(matches!(
            l.try_acquire(1).await.unwrap(),
            TryAcquire::Permit(_)
        ));
        time.advance(1_000);
        assert_eq!(
            l.try_acquire(1).await.unwrap(),
            TryAcquire::Wait {
                wait: Duration::from_secs(58),
                limit: Limit::Rpm
            }
        );
        // The refused request charged nothing.
        let mut c = conn().await;
        let sum: Option<u64> = redis::cmd("GET")
            .arg(&l.keys().tokens_sum)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(sum, Some(2));
        let day: u64 = redis::cmd("ZCARD")
            .arg(&l.keys().requests_day)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(day, 2);
    }

    #[tokio::test]
    async fn server_time_is_the_default_clock() {
        // No timing assertion: only that the script's `TIME` path answers
        // with a plausible server time.
        let l = limiter(&namespace(), Quota::default(), Windows::default()).await;
        let before = chrono::Utc::now().timestamp_millis() as u64;
        match l.try_acquire(1).await.unwrap() {
            TryAcquire::Permit(p) => assert!(
                p.granted_at_ms.abs_diff(before) < 3_600_000,
                "server time {} vs local {before}",
                p.granted_at_ms
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(l.paused_for().await.unwrap(), None);
        assert!(l.pause_fleet(Duration::from_secs(60)).await.unwrap() > Duration::from_secs(50));
        assert!(l.paused_for().await.unwrap().is_some());
    }

    #[tokio::test]
    async fn metrics_register_once_per_registry() {
        let l = limiter(&namespace(), Quota::default(), Windows::default()).await;
        let registry = Registry::new();
        l.register_metrics(&registry).unwrap();
        assert!(matches!(
            l.register_metrics(&registry),
            Err(RateLimitError::Metrics(_))
        ));
        l.record_429(QuotaKind::Tpm);
        l.record_actual_tokens(42);
        assert!(matches!(
            l.try_acquire(5).await.unwrap(),
            TryAcquire::Permit(_)
        ));
        let families = registry.gather();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        assert!(names.contains(&"engage_gemini_429_total"), "{names:?}");
        assert_eq!(l.metrics().permits.get(), 1);
        assert_eq!(
            l.metrics().rate_limited.with_label_values(&["tpm"]).get(),
            1
        );
        assert_eq!(l.metrics().tokens.with_label_values(&["actual"]).get(), 42);
    }

    #[test]
    fn namespaces_are_validated_and_keys_share_one_hash_tag() {
        for bad in ["", "a{b", "a}b", "a b", "a\nb"] {
            assert!(
                matches!(Keys::new(bad), Err(RateLimitError::InvalidNamespace(n)) if n == bad),
                "{bad:?}"
            );
        }
        let keys = Keys::new("engage").unwrap();
        for k in keys.all() {
            assert!(k.starts_with("{engage:gemini}:"), "{k}");
        }
    }

    proptest! {
        #[test]
        fn any_valid_namespace_gives_one_slot(ns in "[a-zA-Z0-9:_.-]{1,40}") {
            let keys = Keys::new(&ns).unwrap();
            let tag = format!("{{{ns}:gemini}}");
            for k in keys.all() {
                prop_assert!(k.starts_with(&tag));
                // Cluster hashing uses the first {...}: the tag, for every key.
                let open = k.find('{').unwrap();
                let close = k[open..].find('}').unwrap() + open;
                prop_assert_eq!(&k[open..=close], tag.as_str());
            }
        }
    }
}
