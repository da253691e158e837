//! Fleet-wide rate limiting: one atomic Redis script shared by every analyze
//! worker, which hands out *reservations*: each permit carries the time its
//! request may be sent.
//!
//! The Gemini quota belongs to the API key, so every analyze worker takes its
//! permits from the same place: one Lua script, run atomically by Redis, that
//! finds the earliest send time at which **all** of these allow one more
//! request, and books it:
//!
//! - requests per minute (RPM), tokens per minute (TPM, the request's estimated
//!   input tokens) and requests per day (RPD), each a *sliding-window log* of
//!   booked send times: no window of the configured length plus the margin
//!   (below) holds more than the limit. A sliding log is used rather than GCRA
//!   or a token bucket because those allow a burst on top of the steady rate
//!   (up to twice the limit inside one window), which is exactly what draws
//!   429s from a per-minute quota;
//! - the fleet pause (`pause_until`, a server-time millisecond timestamp),
//!   set by [`FleetLimiter::pause_fleet`] when Gemini answers 429 with a retry
//!   delay or a per-day quota is exhausted. A pause only ever extends.
//!
//! **Reservations, not a race.** Bookings are first come, first served: a new
//! one is never earlier than the latest booking, and at capacity it goes
//! exactly one window after the booking it displaces. A worker sleeps until
//! its slot and sends; nobody polls, and workers that join or leave change
//! nothing but who holds the next slots. A booking further away than
//! `max_wait` is not made: the caller is told how long to wait instead.
//!
//! **The margin.** Gemini counts a request when it arrives, not when it was
//! booked. Arrival lags the booked time by the Redis round trip, the sleep's
//! overshoot and the network; if those lags differ between two requests by
//! `d`, a window of the server can see one request more than a window of the
//! log. So the log's windows are `margin` longer than the quota's: the margin
//! is the configured transit allowance plus the largest lag this fleet
//! *measured* in the last two minutes (each worker measures booking → send on
//! its own clock and reports it; the script keeps the fleet's maximum for
//! five minutes). At 250 ms on a 60 s window this costs 0.4 % of the quota.
//!
//! Time is Redis server time (`TIME` inside the script), never a worker's
//! clock ([`TimeSource::Server`]; tests drive a [`TimeSource::Manual`] clock
//! by hand, so their assertions do not depend on the machine's speed). All
//! keys of one limiter share the hash tag `{<namespace>:gemini}`, so the
//! script runs on a Redis Cluster too.
//!
//! Per day is a sliding 24 h window, stricter than Google's reset at midnight
//! Pacific: it never admits more than RPD requests in any calendar day either.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use redis::Script;
use redis::aio::ConnectionLike;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
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

/// Window lengths. Real quotas use the defaults (60 s and 24 h); tests may
/// use others.
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

/// What delays or refuses a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Nothing: the request may go now.
    None,
    /// The fleet is paused.
    Pause,
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
    /// Requests per day.
    Rpd,
}

impl Limit {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pause => "pause",
            Self::Rpm => "rpm",
            Self::Tpm => "tpm",
            Self::Rpd => "rpd",
        }
    }

    fn from_script(reason: &str) -> Result<Self, RateLimitError> {
        Ok(match reason {
            "" => Self::None,
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

/// A booked permit: the caller may send one request of `tokens` estimated
/// tokens at `send_at_ms` (server time), i.e. `wait` after it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// Tokens charged to the TPM window.
    pub tokens: u64,
    /// The booking's id in the logs (to cancel it).
    pub id: u64,
    /// Server time of the booked send, in milliseconds since the epoch.
    pub send_at_ms: u64,
    /// From the booking to the send time.
    pub wait: Duration,
    /// What made it wait ([`Limit::None`] when it may go at once).
    pub limit: Limit,
}

/// Answer of [`FleetLimiter::reserve`] and [`FleetLimiter::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Booked: [`FleetLimiter::reserve`] returns at once (send at
    /// `send_at_ms`), [`FleetLimiter::acquire`] once that time has come.
    Granted(Permit),
    /// The earliest slot is more than `max_wait` away: nothing was booked;
    /// release the job for `wait` and ask again.
    NotWithin {
        /// Time until the earliest slot (a lower bound: others may book it first).
        wait: Duration,
        /// What refused.
        limit: Limit,
    },
}

/// The fleet pause in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPause {
    /// Time left.
    pub remaining: Duration,
    /// When it ends (server time, ms since the epoch).
    pub until_ms: u64,
    /// Why: the quota a 429 named (`rpm`, `tpm`, `rpd`, `unknown`).
    pub reason: String,
}

/// What the limiter has booked, fleet-wide, as `engage dashboard` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requests booked in the minute window (the last minute and ahead).
    pub requests_minute: u64,
    /// Estimated tokens booked in the minute window.
    pub tokens_minute: u64,
    /// Requests booked in the day window.
    pub requests_day: u64,
    /// 429 answers the fleet received, by quota (`rpm`, `tpm`, `rpd`,
    /// `unknown`), since the counts were last reset (`engage resume` keeps
    /// them; they expire a day after the last 429).
    pub rate_limited: Vec<(String, u64)>,
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

/// The reserve script. KEYS: 1 request log (minute), 2 token log (minute,
/// members `id:cost`), 3 request log (day), 4 pause-until, 5 sequence,
/// 6 fleet margin. ARGV: 1 rpm, 2 tpm, 3 rpd (−1 = unlimited), 4 minute ms,
/// 5 day ms, 6 cost, 7 now ms (−1 = Redis `TIME`), 8 max wait ms, 9 this
/// worker's margin ms.
/// Returns `{booked (1/0/−1 too big), wait_ms, reason, now_ms, id, margin_ms}`.
const RESERVE_LUA: &str = r#"
local now = tonumber(ARGV[7])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local rpm, tpm, rpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local minute, day, cost = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local max_wait, margin = tonumber(ARGV[8]), tonumber(ARGV[9])

if tpm >= 0 and cost > tpm then return {-1, 0, 'tpm', now, 0, 0} end

-- The fleet's margin: the largest any worker reported in the last 5 minutes.
local m = tonumber(redis.call('GET', KEYS[6]) or '0')
if margin >= m then
  redis.call('SET', KEYS[6], margin, 'PX', 300000)
  m = margin
end
local win, dwin = minute + m, day + m

-- Entries no window ending at or after now can hold.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - win)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - dwin)

local t, reason = now, ''
local function not_before(at, why)
  if at > t then t, reason = at, why end
end
local pause = tonumber(redis.call('GET', KEYS[4]) or '0')
not_before(pause, 'pause')

-- First come, first served: never before the latest booking, so only the
-- window that ends at the new booking needs checking.
local function latest(key, why)
  local e = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if e[2] then not_before(tonumber(e[2]), why) end
end
local function count_limit(key, limit, len, why)
  latest(key, why)
  local n = redis.call('ZCARD', key)
  if n >= limit then
    if limit <= 0 then
      not_before(now + len, why)
    else
      -- The limit-th latest booking must leave the window first.
      local e = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
      not_before(tonumber(e[2]) + len, why)
    end
  end
end
if rpd >= 0 then count_limit(KEYS[3], rpd, dwin, 'rpd') end
if rpm >= 0 then count_limit(KEYS[1], rpm, win, 'rpm') end
if tpm >= 0 then
  latest(KEYS[2], 'tpm')
  -- Newest first, in pages, until the tokens no longer fit: that booking
  -- must leave the window first.
  local sum, start, found = cost, 0, false
  while not found do
    local page = redis.call('ZREVRANGE', KEYS[2], start, start + 99, 'WITHSCORES')
    if #page == 0 then break end
    for i = 1, #page, 2 do
      sum = sum + (tonumber(string.match(page[i], ':(%d+)$')) or 0)
      if sum > tpm then
        not_before(tonumber(page[i + 1]) + win, 'tpm')
        found = true
        break
      end
    end
    start = start + 100
  end
end

local wait = t - now
if wait > max_wait then return {0, wait, reason, now, 0, m} end

local id = redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], dwin + wait)
if rpm >= 0 then
  redis.call('ZADD', KEYS[1], t, id)
  redis.call('PEXPIRE', KEYS[1], win + wait)
end
if tpm >= 0 then
  redis.call('ZADD', KEYS[2], t, id .. ':' .. cost)
  redis.call('PEXPIRE', KEYS[2], win + wait)
end
if rpd >= 0 then
  redis.call('ZADD', KEYS[3], t, id)
  redis.call('PEXPIRE', KEYS[3], dwin + wait)
end
return {1, wait, reason, now, id, m}
"#;

/// Cancels a booking whose request will not be sent. KEYS: the three logs.
/// ARGV: id, cost. Returns 1 if it was there.
const CANCEL_LUA: &str = r#"
local n = redis.call('ZREM', KEYS[1], ARGV[1])
n = n + redis.call('ZREM', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
n = n + redis.call('ZREM', KEYS[3], ARGV[1])
if n > 0 then return 1 end
return 0
"#;

/// Extends the pause to now + ARGV[1] ms unless it already ends later, with
/// reason ARGV[3]; ARGV[2] is now in ms (−1 = Redis `TIME`). KEYS: pause-until,
/// pause reason, then the three logs: bookings inside the pause are dropped
/// (their holders will not send; they park when they wake), so their slots
/// serve the requests after it. Returns `{remaining ms, until ms}`.
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
  redis.call('SET', KEYS[2], ARGV[3], 'PX', tonumber(ARGV[1]))
  for i = 3, 5 do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '(' .. now, target)
  end
  return {target - now, target}
end
return {cur - now, cur}
"#;

/// The pause in force: `{remaining ms (0 = none), until ms, reason}`; ARGV[1]
/// is now in ms (−1 = Redis `TIME`). KEYS: pause-until, pause reason.
const PAUSED_LUA: &str = r#"
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur > now then return {cur - now, cur, redis.call('GET', KEYS[2]) or 'unknown'} end
return {0, 0, ''}
"#;

/// KEYS: 1 request log (minute), 2 token log (minute), 3 request log (day),
/// 4 the 429 counts. ARGV: 1 now (−1: server time), 2 minute window ms,
/// 3 day window ms. Answers `{requests, tokens, requests_day, {quota, n, ...}}`.
const USAGE_LUA: &str = r#"
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local from = now - tonumber(ARGV[2])
local tokens = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], from, '+inf')) do
  local c = tonumber(string.match(m, ':(%d+)$'))
  if c then tokens = tokens + c end
end
return {redis.call('ZCOUNT', KEYS[1], from, '+inf'), tokens,
        redis.call('ZCOUNT', KEYS[3], now - tonumber(ARGV[3]), '+inf'),
        redis.call('HGETALL', KEYS[4])}
"#;

/// How long the fleet's 429 counts live after the last 429.
const RATE_LIMITED_TTL_SECS: i64 = 24 * 3600;

static USAGE: LazyLock<Script> = LazyLock::new(|| Script::new(USAGE_LUA));
static RESERVE: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE_LUA));
static CANCEL: LazyLock<Script> = LazyLock::new(|| Script::new(CANCEL_LUA));
static PAUSE: LazyLock<Script> = LazyLock::new(|| Script::new(PAUSE_LUA));
static PAUSED: LazyLock<Script> = LazyLock::new(|| Script::new(PAUSED_LUA));

/// The Redis keys of one limiter (one hash tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Request log of the minute window.
    pub requests_minute: String,
    /// Token log of the minute window (members `id:cost`).
    pub tokens_minute: String,
    /// Request log of the day window.
    pub requests_day: String,
    /// The fleet pause (server-time ms).
    pub pause_until: String,
    /// Why the fleet is paused.
    pub pause_reason: String,
    /// Booking ids.
    pub seq: String,
    /// The fleet's margin (ms): the largest any worker reported lately.
    pub margin: String,
    /// 429s the fleet received, by quota (a hash).
    pub rate_limited: String,
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
            requests_day: k("rpd"),
            pause_until: k("pause_until"),
            pause_reason: k("pause_reason"),
            seq: k("seq"),
            margin: k("margin"),
            rate_limited: k("429s"),
        })
    }

    fn reserve_keys(&self) -> [&str; 6] {
        [
            &self.requests_minute,
            &self.tokens_minute,
            &self.requests_day,
            &self.pause_until,
            &self.seq,
            &self.margin,
        ]
    }

    #[cfg(test)]
    fn all(&self) -> [&str; 8] {
        [
            &self.rate_limited,
            &self.requests_minute,
            &self.tokens_minute,
            &self.requests_day,
            &self.pause_until,
            &self.pause_reason,
            &self.seq,
            &self.margin,
        ]
    }
}

/// The limiter's Prometheus metrics (bounded labels only).
#[derive(Clone)]
pub struct LimiterMetrics {
    /// `engage_ratelimit_permits_total`
    pub permits: IntCounter,
    /// `engage_ratelimit_refusals_total{limit}`: bookings refused (further
    /// than `max_wait`), by what refused.
    pub refusals: IntCounterVec,
    /// `engage_ratelimit_wait_seconds`: from asking to the booked send time.
    pub wait_seconds: Histogram,
    /// `engage_ratelimit_not_within_total`: bookings refused at `max_wait`.
    pub not_within: IntCounter,
    /// `engage_ratelimit_fleet_pauses_total`: pauses requested by this process.
    pub pauses: IntCounter,
    /// `engage_ratelimit_margin_seconds`: the fleet margin the last booking used.
    pub margin_seconds: Gauge,
    /// `engage_ratelimit_send_lag_seconds`: booked send time → request sent,
    /// measured by this process (what the margin must cover).
    pub send_lag_seconds: Histogram,
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
                "Fleet rate-limit permits booked by this process.",
            )?,
            refusals: IntCounterVec::new(
                Opts::new(
                    "engage_ratelimit_refusals_total",
                    "Bookings refused because the earliest slot was too far, by the limit that refused.",
                ),
                &["limit"],
            )?,
            wait_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "engage_ratelimit_wait_seconds",
                    "Time from asking for a fleet permit to its booked send time.",
                )
                .buckets(vec![
                    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                ]),
            )?,
            not_within: IntCounter::new(
                "engage_ratelimit_not_within_total",
                "Bookings refused at max_wait (job released for the predicted wait).",
            )?,
            pauses: IntCounter::new(
                "engage_ratelimit_fleet_pauses_total",
                "Fleet pauses requested by this process.",
            )?,
            margin_seconds: Gauge::new(
                "engage_ratelimit_margin_seconds",
                "The fleet margin added to every quota window (transit allowance plus the largest measured send lag).",
            )?,
            send_lag_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "engage_ratelimit_send_lag_seconds",
                    "From a permit's booked send time to the request being sent, measured by this process.",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
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
        for l in ["pause", "rpm", "tpm", "rpd"] {
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

    /// A registry holding a fresh set of the limiter's families, every
    /// label value set: the limiter's part of the metrics contract
    /// (`engage_runtime::metrics_contract`).
    pub fn contract_registry() -> Result<Registry, prometheus::Error> {
        let registry = Registry::new();
        Self::new()?.register(&registry)?;
        Ok(registry)
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.permits.clone()))?;
        registry.register(Box::new(self.refusals.clone()))?;
        registry.register(Box::new(self.wait_seconds.clone()))?;
        registry.register(Box::new(self.not_within.clone()))?;
        registry.register(Box::new(self.pauses.clone()))?;
        registry.register(Box::new(self.margin_seconds.clone()))?;
        registry.register(Box::new(self.send_lag_seconds.clone()))?;
        registry.register(Box::new(self.rate_limited.clone()))?;
        registry.register(Box::new(self.tokens.clone()))?;
        Ok(())
    }
}

/// How long a measured send lag counts toward this worker's margin.
const LAG_MEMORY: Duration = Duration::from_secs(120);

/// The send lags this process measured lately; their maximum is its share of
/// the fleet margin.
#[derive(Debug, Default)]
struct LagLog(Mutex<VecDeque<(Instant, Duration)>>);

impl LagLog {
    fn observe(&self, lag: Duration) {
        let now = Instant::now();
        let Ok(mut log) = self.0.lock() else { return };
        while log
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > LAG_MEMORY)
        {
            log.pop_front();
        }
        // Keep only what can still be the maximum: older, smaller lags never will.
        while log.back().is_some_and(|(_, l)| *l <= lag) {
            log.pop_back();
        }
        log.push_back((now, lag));
    }

    fn max(&self) -> Duration {
        let now = Instant::now();
        let Ok(log) = self.0.lock() else {
            return Duration::ZERO;
        };
        log.iter()
            .filter(|(at, _)| now.duration_since(*at) <= LAG_MEMORY)
            .map(|(_, l)| *l)
            .max()
            .unwrap_or_default()
    }
}

/// The fleet-wide limiter of one API key. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct FleetLimiter<C> {
    conn: C,
    keys: Keys,
    quota: Quota,
    windows: Windows,
    transit: Duration,
    lags: Arc<LagLog>,
    metrics: LimiterMetrics,
    time: TimeSource,
}

impl<C> std::fmt::Debug for FleetLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLimiter")
            .field("keys", &self.keys)
            .field("quota", &self.quota)
            .field("windows", &self.windows)
            .field("transit", &self.transit)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn limit_arg<T: Into<u64>>(v: Option<T>) -> i64 {
    v.map_or(-1, |n| i64::try_from(n.into()).unwrap_or(i64::MAX))
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

impl<C: ConnectionLike + Clone + Send + Sync> FleetLimiter<C> {
    /// A limiter for `quota` on `conn` (a `ConnectionManager`, a cluster
    /// connection or [`engage_runtime::redis_conn::RedisConn`]), with keys
    /// under `{<namespace>:gemini}`, the real 60 s / 24 h windows and no
    /// transit allowance (see [`Self::with_transit_margin`]).
    pub fn new(conn: C, namespace: &str, quota: Quota) -> Result<Self, RateLimitError> {
        Self::with_windows(conn, namespace, quota, Windows::default())
    }

    /// Like [`Self::new`] with other window lengths.
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
        Ok(Self {
            conn,
            keys: Keys::new(namespace)?,
            quota,
            windows,
            transit: Duration::ZERO,
            lags: Arc::default(),
            metrics: LimiterMetrics::new()?,
            time: TimeSource::Server,
        })
    }

    /// The same limiter with a transit allowance: the part of the margin
    /// that covers what this process cannot measure (the network between it
    /// and Gemini, and how that varies).
    pub fn with_transit_margin(mut self, transit: Duration) -> Self {
        self.transit = transit;
        self
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

    /// This process's margin: the transit allowance plus the largest send
    /// lag it measured in the last two minutes.
    pub fn margin(&self) -> Duration {
        self.transit + self.lags.max()
    }

    /// Books the earliest slot for a request of `tokens` estimated tokens, if
    /// it is at most `max_wait` away (`Duration::ZERO`: only if it may go now).
    /// Returns at once; the caller sends at [`Permit::send_at_ms`].
    pub async fn reserve(
        &self,
        tokens: u64,
        max_wait: Duration,
    ) -> Result<Reservation, RateLimitError> {
        let mut conn = self.conn.clone();
        let mut invocation = RESERVE.prepare_invoke();
        for key in self.keys.reserve_keys() {
            invocation.key(key);
        }
        invocation
            .arg(limit_arg(self.quota.rpm))
            .arg(limit_arg(self.quota.tpm))
            .arg(limit_arg(self.quota.rpd))
            .arg(millis(self.windows.minute))
            .arg(millis(self.windows.day))
            .arg(tokens)
            .arg(self.time.arg())
            .arg(millis(max_wait))
            .arg(millis(self.margin()));
        let (booked, wait_ms, reason, now_ms, id, margin_ms): (i64, i64, String, i64, i64, i64) =
            invocation.invoke_async(&mut conn).await?;
        self.metrics.margin_seconds.set(ms(margin_ms).as_secs_f64());
        let limit = Limit::from_script(&reason)?;
        match booked {
            1 => {
                self.metrics.permits.inc();
                self.metrics
                    .tokens
                    .with_label_values(&["estimated"])
                    .inc_by(tokens);
                let wait = ms(wait_ms);
                self.metrics.wait_seconds.observe(wait.as_secs_f64());
                Ok(Reservation::Granted(Permit {
                    tokens,
                    id: u64::try_from(id).unwrap_or(0),
                    send_at_ms: u64::try_from(now_ms + wait_ms).unwrap_or(0),
                    wait,
                    limit,
                }))
            }
            0 => {
                self.metrics.not_within.inc();
                self.metrics
                    .refusals
                    .with_label_values(&[limit.as_str()])
                    .inc();
                Ok(Reservation::NotWithin {
                    wait: ms(wait_ms.max(1)),
                    limit,
                })
            }
            -1 => Err(RateLimitError::CostExceedsQuota {
                cost: tokens,
                tpm: self.quota.tpm.unwrap_or(0),
            }),
            other => Err(RateLimitError::UnexpectedReply(format!("booked = {other}"))),
        }
    }

    /// Books a slot at most `max_wait` away and sleeps until it, so the
    /// caller sends as soon as this returns [`Reservation::Granted`]. The
    /// sleep is measured: how late it woke (plus the booking's round trip)
    /// is this process's send lag, which widens the fleet margin. If a fleet
    /// pause began while it slept, the booking is cancelled and the pause
    /// returned as [`Reservation::NotWithin`].
    pub async fn acquire(
        &self,
        tokens: u64,
        max_wait: Duration,
    ) -> Result<Reservation, RateLimitError> {
        let asked = Instant::now();
        let permit = match self.reserve(tokens, max_wait).await? {
            Reservation::Granted(p) => p,
            refused => return Ok(refused),
        };
        // The script ran between `asked` and now: sleeping from now sends
        // no earlier than the booked time, and at most one round trip late.
        tokio::time::sleep(permit.wait).await;
        if !permit.wait.is_zero()
            && let Some(pause) = self.paused().await?
        {
            let _ = self.cancel(&permit).await;
            return Ok(Reservation::NotWithin {
                wait: pause.remaining,
                limit: Limit::Pause,
            });
        }
        let lag = asked.elapsed().saturating_sub(permit.wait);
        self.lags.observe(lag);
        self.metrics.send_lag_seconds.observe(lag.as_secs_f64());
        Ok(Reservation::Granted(permit))
    }

    /// Gives back a booking whose request will not be sent, so its slot
    /// serves someone else. `false` if it was not there (a fleet pause
    /// dropped it already).
    pub async fn cancel(&self, permit: &Permit) -> Result<bool, RateLimitError> {
        let mut conn = self.conn.clone();
        let removed: i64 = CANCEL
            .key(&self.keys.requests_minute)
            .key(&self.keys.tokens_minute)
            .key(&self.keys.requests_day)
            .arg(permit.id)
            .arg(permit.tokens)
            .invoke_async(&mut conn)
            .await?;
        Ok(removed == 1)
    }

    /// Pauses every worker of the fleet for `duration` (extends, never
    /// shortens, a pause in force), naming the quota that caused it.
    /// Returns the remaining pause.
    pub async fn pause_fleet(
        &self,
        duration: Duration,
        reason: QuotaKind,
    ) -> Result<Duration, RateLimitError> {
        let mut conn = self.conn.clone();
        let (remaining, _until): (i64, i64) = PAUSE
            .key(&self.keys.pause_until)
            .key(&self.keys.pause_reason)
            .key(&self.keys.requests_minute)
            .key(&self.keys.tokens_minute)
            .key(&self.keys.requests_day)
            .arg(millis(duration).max(1))
            .arg(self.time.arg())
            .arg(reason.as_str())
            .invoke_async(&mut conn)
            .await?;
        self.metrics.pauses.inc();
        Ok(ms(remaining))
    }

    /// The fleet pause in force, if any.
    pub async fn paused(&self) -> Result<Option<FleetPause>, RateLimitError> {
        let mut conn = self.conn.clone();
        let (remaining, until, reason): (i64, i64, String) = PAUSED
            .key(&self.keys.pause_until)
            .key(&self.keys.pause_reason)
            .arg(self.time.arg())
            .invoke_async(&mut conn)
            .await?;
        Ok((remaining > 0).then(|| FleetPause {
            remaining: ms(remaining),
            until_ms: u64::try_from(until).unwrap_or(0),
            reason,
        }))
    }

    /// Counts a 429 from Gemini by quota type: in this process's metrics
    /// and in the fleet's count the dashboard shows (best effort: a Redis
    /// failure here is logged, the job goes on).
    pub async fn record_429(&self, quota: QuotaKind) {
        self.metrics
            .rate_limited
            .with_label_values(&[quota.as_str()])
            .inc();
        let mut conn = self.conn.clone();
        let counted: Result<(), redis::RedisError> = redis::pipe()
            .hincr(&self.keys.rate_limited, quota.as_str(), 1)
            .ignore()
            .expire(&self.keys.rate_limited, RATE_LIMITED_TTL_SECS)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = counted {
            tracing::debug!(error = %e, "counting a 429 in Redis failed");
        }
    }

    /// What the fleet has booked in the current windows, and its 429s.
    pub async fn usage(&self) -> Result<Usage, RateLimitError> {
        let mut conn = self.conn.clone();
        let (requests_minute, tokens_minute, requests_day, flat): (u64, u64, u64, Vec<String>) =
            USAGE
                .key(&self.keys.requests_minute)
                .key(&self.keys.tokens_minute)
                .key(&self.keys.requests_day)
                .key(&self.keys.rate_limited)
                .arg(self.time.arg())
                .arg(millis(self.windows.minute))
                .arg(millis(self.windows.day))
                .invoke_async(&mut conn)
                .await?;
        let rate_limited = flat
            .chunks_exact(2)
            .filter_map(|p| Some((p[0].clone(), p[1].parse().ok()?)))
            .collect();
        Ok(Usage {
            requests_minute,
            tokens_minute,
            requests_day,
            rate_limited,
        })
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
    use rand::{Rng, SeedableRng};
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
    const NOW: Duration = Duration::ZERO;
    const LONG: Duration = Duration::from_secs(3_600);

    /// The most entries inside any half-open window `[t, t + len)`.
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

    fn granted(r: Reservation) -> Permit {
        match r {
            Reservation::Granted(p) => p,
            other => panic!("expected a permit, got {other:?}"),
        }
    }

    fn refused(r: Reservation) -> (Duration, Limit) {
        match r {
            Reservation::NotWithin { wait, limit } => (wait, limit),
            other => panic!("expected a refusal, got {other:?}"),
        }
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
        // race for permits that may go now.
        let mut times = Vec::new();
        for _ in 0..84 {
            let mut tasks = tokio::task::JoinSet::new();
            for l in &limiters {
                for _ in 0..4 {
                    let l = l.clone();
                    tasks.spawn(async move {
                        let mut sent = Vec::new();
                        for _ in 0..2 {
                            match l.reserve(1, NOW).await.unwrap() {
                                Reservation::Granted(p) => sent.push(p.send_at_ms),
                                Reservation::NotWithin { wait, limit } => {
                                    assert_eq!(limit, Limit::Rpm);
                                    assert!(
                                        wait > Duration::ZERO && wait <= Duration::from_secs(60)
                                    );
                                }
                            }
                        }
                        sent
                    });
                }
            }
            while let Some(r) = tasks.join_next().await {
                times.extend(r.unwrap());
            }
            time.advance(2_500);
        }
        let max = max_in_window(&mut times, MINUTE);
        assert_eq!(max, 20, "the most sends inside one 60 s window");
        assert_eq!(times.len(), 80, "sends over 3.5 minutes at 20 per minute");
    }

    #[tokio::test]
    async fn bookings_queue_first_come_first_served_one_window_apart() {
        let ns = namespace();
        let quota = Quota {
            rpm: Some(20),
            ..Quota::default()
        };
        let time = VirtualTime::new();
        let start = time.now();
        let a = virtual_limiter(&ns, quota, &time).await;
        let b = virtual_limiter(&ns, quota, &time).await;
        // 60 requests asked at once, alternating between two workers: the
        // first 20 go now, the next 20 exactly one window later, and so on.
        let mut sends = Vec::new();
        for i in 0..60 {
            let l = if i % 2 == 0 { &a } else { &b };
            let p = granted(l.reserve(1, LONG).await.unwrap());
            assert_eq!(p.wait, Duration::from_millis(p.send_at_ms - start));
            sends.push(p.send_at_ms - start);
        }
        let expected: Vec<u64> = (0..60).map(|i| (i / 20) * MINUTE).collect();
        assert_eq!(sends, expected);
        // Beyond max_wait nothing is booked; the answer is the wait.
        let (wait, limit) = refused(a.reserve(1, Duration::from_secs(150)).await.unwrap());
        assert_eq!((wait, limit), (Duration::from_secs(180), Limit::Rpm));
        let p = granted(a.reserve(1, Duration::from_secs(180)).await.unwrap());
        assert_eq!(p.send_at_ms - start, 3 * MINUTE);
        // Time passing changes nothing for bookings already queued: the next
        // one still follows them.
        time.advance(30_000);
        let p = granted(b.reserve(1, LONG).await.unwrap());
        assert_eq!(p.send_at_ms - start, 3 * MINUTE);
    }

    #[tokio::test]
    async fn the_margin_is_the_fleets_largest_and_widens_every_window() {
        let ns = namespace();
        let quota = Quota {
            rpm: Some(10),
            ..Quota::default()
        };
        let time = VirtualTime::new();
        let start = time.now();
        let careful = virtual_limiter(&ns, quota, &time)
            .await
            .with_transit_margin(Duration::from_millis(700));
        let eager = virtual_limiter(&ns, quota, &time).await;
        assert_eq!(careful.margin(), Duration::from_millis(700));
        for _ in 0..10 {
            granted(careful.reserve(1, LONG).await.unwrap());
        }
        // The eager worker's own margin is zero, but the fleet's is 700 ms:
        // its booking waits a window plus the margin.
        let p = granted(eager.reserve(1, LONG).await.unwrap());
        assert_eq!(p.send_at_ms - start, MINUTE + 700);
        assert!((eager.metrics().margin_seconds.get() - 0.7).abs() < 1e-9);
    }

    /// Simulates `workers` workers that join and leave at random against
    /// `quota` for about four windows, each request arriving at the server
    /// up to `margin_ms` after its booked time; returns the arrivals (time,
    /// tokens) and the bookings.
    async fn simulate(
        quota: Quota,
        workers: usize,
        margin_ms: u64,
        seed: u64,
    ) -> (Vec<(u64, u64)>, Vec<u64>) {
        let ns = namespace();
        let time = VirtualTime::new();
        let mut pool = Vec::new();
        for _ in 0..workers {
            pool.push(
                virtual_limiter(&ns, quota, &time)
                    .await
                    .with_transit_margin(Duration::from_millis(margin_ms)),
            );
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut arrivals, mut booked) = (Vec::new(), Vec::new());
        // Enough demand to keep every window full: each step, each present
        // worker asks for a few requests; steps are 0–2 s apart.
        let per_step = (quota.rpm.unwrap_or(60) as usize / (10 * workers)).max(1);
        let start = time.now();
        while time.now() - start < 4 * MINUTE {
            for w in &pool {
                if !rng.random_bool(0.7) {
                    continue; // this worker is away this step
                }
                for _ in 0..per_step {
                    let tokens = rng.random_range(100..2_000);
                    if let Reservation::Granted(p) =
                        w.reserve(tokens, Duration::from_secs(90)).await.unwrap()
                    {
                        booked.push(p.send_at_ms);
                        arrivals.push((p.send_at_ms + rng.random_range(0..margin_ms), tokens));
                    }
                }
            }
            time.advance(rng.random_range(0..2_000));
        }
        (arrivals, booked)
    }

    /// The most tokens inside any half-open window `[t, t + len)`.
    fn max_tokens_in_window(arrivals: &mut [(u64, u64)], len: u64) -> u64 {
        arrivals.sort_unstable();
        let (mut best, mut sum, mut start) = (0, 0, 0);
        for end in 0..arrivals.len() {
            sum += arrivals[end].1;
            while arrivals[end].0 - arrivals[start].0 >= len {
                sum -= arrivals[start].1;
                start += 1;
            }
            best = best.max(sum);
        }
        best
    }

    /// Whatever each request's lag between its booked time and its arrival,
    /// as long as lags differ by less than the margin, the server never sees
    /// more than the quota inside one of its own windows: at every quota from
    /// 10 to 4,000 RPM, with 1 to 16 workers joining and leaving.
    #[tokio::test]
    async fn arrivals_late_by_up_to_the_margin_never_overfill_a_server_window() {
        for (rpm, workers, margin) in [
            (10, 1, 250),
            (40, 4, 400),
            (120, 8, 250),
            (1_000, 16, 300),
            (4_000, 16, 250),
        ] {
            let quota = Quota {
                rpm: Some(rpm),
                ..Quota::default()
            };
            let (arrivals, mut booked) = simulate(quota, workers, margin, u64::from(rpm)).await;
            let mut times: Vec<u64> = arrivals.iter().map(|a| a.0).collect();
            let most = max_in_window(&mut times, MINUTE);
            assert!(
                most <= rpm as usize,
                "{rpm} RPM, {workers} workers: {most} in a window"
            );
            // And the quota was used: at capacity every window plus margin
            // holds exactly the quota.
            assert!(
                booked.len() > 3 * rpm as usize,
                "{rpm} RPM: {} bookings",
                booked.len()
            );
            assert_eq!(max_in_window(&mut booked, MINUTE + margin), rpm as usize);
        }
    }

    /// The same for tokens per minute, with requests of random cost.
    #[tokio::test]
    async fn tokens_per_minute_are_never_overfilled_either() {
        let tpm = 50_000;
        let quota = Quota {
            tpm: Some(tpm),
            ..Quota::default()
        };
        let (mut arrivals, _) = simulate(quota, 6, 300, 11).await;
        assert!(max_tokens_in_window(&mut arrivals, MINUTE) <= tpm);
        let total: u64 = arrivals.iter().map(|a| a.1).sum();
        assert!(total > 3 * tpm, "{total} tokens booked");
    }

    #[tokio::test]
    async fn a_cancelled_booking_frees_its_slot() {
        let ns = namespace();
        let quota = Quota {
            rpm: Some(2),
            tpm: Some(100),
            rpd: Some(100),
        };
        let time = VirtualTime::new();
        let start = time.now();
        let l = virtual_limiter(&ns, quota, &time).await;
        granted(l.reserve(10, LONG).await.unwrap());
        granted(l.reserve(10, LONG).await.unwrap());
        let third = granted(l.reserve(10, LONG).await.unwrap());
        assert_eq!(third.send_at_ms - start, MINUTE);
        assert!(l.cancel(&third).await.unwrap());
        assert!(!l.cancel(&third).await.unwrap(), "cancelled twice");
        let again = granted(l.reserve(10, LONG).await.unwrap());
        assert_eq!(again.send_at_ms - start, MINUTE, "the slot was free again");
    }

    #[tokio::test]
    async fn a_pause_drops_the_bookings_inside_it_so_their_slots_serve_after_it() {
        let ns = namespace();
        let quota = Quota {
            rpm: Some(4),
            ..Quota::default()
        };
        let time = VirtualTime::new();
        let start = time.now();
        let l = virtual_limiter(&ns, quota, &time).await;
        // Eight requests: four now, four one window later.
        for _ in 0..8 {
            granted(l.reserve(1, LONG).await.unwrap());
        }
        // The first four went out; a 429 pauses the fleet for 70 s, which
        // covers the four booked at +60 s: none of them will be sent.
        time.advance(1_000);
        l.pause_fleet(Duration::from_secs(70), QuotaKind::Rpm)
            .await
            .unwrap();
        // After the pause the whole quota is free again: four at its end.
        for _ in 0..4 {
            let p = granted(l.reserve(1, LONG).await.unwrap());
            assert_eq!(p.send_at_ms - start, 71_000);
        }
        let p = granted(l.reserve(1, LONG).await.unwrap());
        assert_eq!(p.send_at_ms - start, 71_000 + MINUTE);
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
        assert_eq!(b.paused().await.unwrap(), None);
        let remaining = a
            .pause_fleet(Duration::from_secs(120), QuotaKind::Rpm)
            .await
            .unwrap();
        assert_eq!(remaining, Duration::from_secs(120));
        // A shorter pause does not shorten it.
        time.advance(10_000);
        let remaining = b
            .pause_fleet(Duration::from_millis(50), QuotaKind::Tpm)
            .await
            .unwrap();
        assert_eq!(remaining, Duration::from_secs(110));
        // A longer one extends it, and names its cause.
        let remaining = b
            .pause_fleet(Duration::from_secs(115), QuotaKind::Rpd)
            .await
            .unwrap();
        assert_eq!(remaining, Duration::from_secs(115));
        time.advance(15_000);
        let pause = a.paused().await.unwrap().unwrap();
        assert_eq!(pause.remaining, Duration::from_secs(100));
        assert_eq!(pause.until_ms, time.now() + 100_000);
        assert_eq!(pause.reason, "rpd");
        assert_eq!(
            refused(b.reserve(1, Duration::from_secs(10)).await.unwrap()),
            (Duration::from_secs(100), Limit::Pause)
        );
        // A booking may be made for the end of the pause.
        let p = granted(b.reserve(1, Duration::from_secs(100)).await.unwrap());
        assert_eq!((p.wait, p.limit), (Duration::from_secs(100), Limit::Pause));
        // One millisecond before the end the pause still holds; at the end it is over.
        time.advance(99_999);
        assert_eq!(
            a.paused().await.unwrap().map(|p| p.remaining),
            Some(Duration::from_millis(1))
        );
        time.advance(1);
        assert_eq!(a.paused().await.unwrap(), None);
        let p = granted(a.acquire(1, Duration::from_secs(3)).await.unwrap());
        assert_eq!((p.send_at_ms, p.limit), (time.now(), Limit::None));
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
            granted(l.reserve(1, NOW).await.unwrap());
            time.advance(3_600_000);
        }
        // Three hours in: the first permit leaves the day window in 21 hours.
        assert_eq!(
            refused(l.reserve(1, Duration::from_secs(60)).await.unwrap()),
            (Duration::from_millis(first + DAY - time.now()), Limit::Rpd)
        );
        assert_eq!(l.metrics().not_within.get(), 1);
        // 24 h after the first permit there is room for exactly one more.
        time.advance(first + DAY - time.now());
        granted(l.reserve(1, NOW).await.unwrap());
        let (_, limit) = refused(l.reserve(1, NOW).await.unwrap());
        assert_eq!(limit, Limit::Rpd);
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
        granted(l.reserve(60, NOW).await.unwrap());
        time.advance(10_000);
        granted(l.reserve(30, NOW).await.unwrap());
        time.advance(5_000);
        // 20 more need the 60-token entry gone: 45 s from now.
        assert_eq!(
            refused(l.reserve(20, NOW).await.unwrap()),
            (
                Duration::from_millis(first + MINUTE - time.now()),
                Limit::Tpm
            )
        );
        // A small request still fits.
        granted(l.reserve(10, NOW).await.unwrap());
        assert!(matches!(
            l.reserve(101, NOW).await,
            Err(RateLimitError::CostExceedsQuota {
                cost: 101,
                tpm: 100
            })
        ));
        // Booked for when the first entry leaves its window.
        let p = granted(l.reserve(60, LONG).await.unwrap());
        assert_eq!((p.tokens, p.send_at_ms), (60, first + MINUTE));
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
            granted(l.reserve(4, NOW).await.unwrap());
        }
        time.advance(300);
        for _ in 0..100 {
            granted(l.reserve(4, NOW).await.unwrap());
        }
        // 600 more tokens need the 150 oldest entries gone (the second page
        // of the log, newest first, holds the one that overflows).
        assert_eq!(
            refused(l.reserve(600, NOW).await.unwrap()),
            (
                Duration::from_millis(first + MINUTE - time.now()),
                Limit::Tpm
            )
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
        granted(l.reserve(1, NOW).await.unwrap());
        time.advance(1_000);
        granted(l.reserve(1, NOW).await.unwrap());
        time.advance(1_000);
        assert_eq!(
            refused(l.reserve(1, NOW).await.unwrap()),
            (Duration::from_secs(58), Limit::Rpm)
        );
        // The refused request booked nothing.
        let mut c = conn().await;
        for key in [&l.keys().tokens_minute, &l.keys().requests_day] {
            let n: u64 = redis::cmd("ZCARD")
                .arg(key)
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(n, 2, "{key}");
        }
    }

    #[tokio::test]
    async fn server_time_is_the_default_clock() {
        // No timing assertion: only that the script's `TIME` path answers
        // with a plausible server time.
        let l = limiter(&namespace(), Quota::default(), Windows::default()).await;
        let before = chrono::Utc::now().timestamp_millis() as u64;
        let p = granted(l.acquire(1, NOW).await.unwrap());
        assert!(
            p.send_at_ms.abs_diff(before) < 3_600_000,
            "server time {} vs local {before}",
            p.send_at_ms
        );
        assert_eq!(l.paused().await.unwrap(), None);
        let paused = l
            .pause_fleet(Duration::from_secs(60), QuotaKind::Unknown)
            .await
            .unwrap();
        assert!(paused > Duration::from_secs(50));
        assert!(l.paused().await.unwrap().is_some());
    }

    #[tokio::test]
    async fn usage_counts_bookings_and_the_fleets_429s() {
        let quota = Quota {
            rpm: Some(10),
            tpm: Some(1_000),
            rpd: Some(100),
        };
        let l = limiter(&namespace(), quota, Windows::default()).await;
        assert_eq!(l.usage().await.unwrap(), Usage::default());
        granted(l.acquire(5, NOW).await.unwrap());
        granted(l.acquire(7, NOW).await.unwrap());
        l.record_429(QuotaKind::Tpm).await;
        l.record_429(QuotaKind::Tpm).await;
        l.record_429(QuotaKind::Rpm).await;
        let mut u = l.usage().await.unwrap();
        u.rate_limited.sort();
        assert_eq!(
            u,
            Usage {
                requests_minute: 2,
                tokens_minute: 12,
                requests_day: 2,
                rate_limited: vec![("rpm".into(), 1), ("tpm".into(), 2)],
            }
        );
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
        l.record_429(QuotaKind::Tpm).await;
        l.record_actual_tokens(42);
        granted(l.acquire(5, NOW).await.unwrap());
        let families = registry.gather();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        assert!(names.contains(&"engage_gemini_429_total"), "{names:?}");
        assert!(
            names.contains(&"engage_ratelimit_send_lag_seconds"),
            "{names:?}"
        );
        assert_eq!(l.metrics().permits.get(), 1);
        assert_eq!(l.metrics().send_lag_seconds.get_sample_count(), 1);
        assert_eq!(
            l.metrics().rate_limited.with_label_values(&["tpm"]).get(),
            1
        );
        assert_eq!(l.metrics().tokens.with_label_values(&["actual"]).get(), 42);
    }

    #[test]
    fn the_lag_log_keeps_the_recent_maximum() {
        let log = LagLog::default();
        assert_eq!(log.max(), Duration::ZERO);
        log.observe(Duration::from_millis(30));
        log.observe(Duration::from_millis(10));
        assert_eq!(log.max(), Duration::from_millis(30));
        log.observe(Duration::from_millis(50));
        assert_eq!(log.max(), Duration::from_millis(50));
        // Smaller, older entries were dropped: they can never be the maximum.
        assert_eq!(log.0.lock().unwrap().len(), 1);
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
