//! Which workers are alive, and how many jobs each stage finishes per
//! minute: a heartbeat every worker process writes to Redis, read by
//! `engage dashboard`.
//!
//! Every [`HEARTBEAT`] a worker process runs one script that
//!
//! - sets its entry in the namespace's sorted set `{NS:fleet}:workers`
//!   (member `STAGE/HOST/PID`, score the Redis server time in ms): no
//!   secret, no learner id, only where the process runs; entries older
//!   than [`FORGET`] are pruned by every heartbeat, and a process that
//!   stops cleanly removes its own;
//! - adds the jobs it finished since the last heartbeat (its own
//!   `engage_jobs_total{outcome="ok"|"failed_item"}`) to the minute's field
//!   of the hash `{NS:fleet}:done:STAGE` (field: minutes since the epoch,
//!   server time), keeping [`MINUTES_KEPT`] minutes.
//!
//! Time is Redis server time, so workers' clocks do not matter. One hash tag
//! per namespace keeps the keys on one Redis Cluster slot. A failed
//! heartbeat is only logged: the counts it carried go with the next one.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::redis_conn::RedisConn;
use engage_model::envelope::StageName;

/// How often a worker process writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A worker not heard from for this long is shown as gone.
pub const LIVE: Duration = Duration::from_secs(60);
/// A worker not heard from for this long is forgotten.
pub const FORGET: Duration = Duration::from_secs(600);
/// Minutes of per-stage throughput kept.
pub const MINUTES_KEPT: u64 = 60;

/// Presence failures (Redis only; a heartbeat never fails a job).
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// Redis did not answer or refused the script.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The read script answered something unexpected.
    #[error("unexpected presence answer: {0}")]
    Protocol(&'static str),
}

/// KEYS: 1 workers, 2 the stage's done hash. ARGV: 1 member, 2 forget ms,
/// 3 jobs done since the last beat, 4 minutes kept, 5 `1` to leave.
const BEAT_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local forget = tonumber(ARGV[2])
if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - forget)
redis.call('PEXPIRE', KEYS[1], forget)
local d = tonumber(ARGV[3])
if d > 0 then
  local minute = math.floor(now / 60000)
  local kept = tonumber(ARGV[4])
  redis.call('HINCRBY', KEYS[2], minute, d)
  for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
    local m = tonumber(f)
    if m == nil or m <= minute - kept then redis.call('HDEL', KEYS[2], f) end
  end
  redis.call('PEXPIRE', KEYS[2], kept * 60000)
end
return now
"#;

/// KEYS: 1 workers, 2.. the done hash of every stage. Answers
/// `{now_ms, {member, score, ...}, {minute, n, ...}, ...}`.
const READ_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
for i = 2, #KEYS do out[#out + 1] = redis.call('HGETALL', KEYS[i]) end
return out
"#;

static BEAT: LazyLock<Script> = LazyLock::new(|| Script::new(BEAT_LUA));
static READ: LazyLock<Script> = LazyLock::new(|| Script::new(READ_LUA));

fn workers_key(ns: &str) -> String {
    format!("{{{ns}:fleet}}:workers")
}

fn done_key(ns: &str, stage: StageName) -> String {
    format!("{{{ns}:fleet}}:done:{stage}")
}

/// This process's member: `STAGE/HOST/PID`, the host name reduced to
/// `[A-Za-z0-9._-]` (at most 63 characters).
pub fn worker_id(stage: StageName) -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    format!("{stage}/{}/{}", clean_host(&raw), std::process::id())
}

fn clean_host(raw: &str) -> String {
    let h: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(63)
        .collect();
    if h.is_empty() { "unknown".into() } else { h }
}

/// One worker process's heartbeat.
#[derive(Debug, Clone)]
pub struct Presence {
    conn: RedisConn,
    ns: String,
    stage: StageName,
    id: String,
}

impl Presence {
    /// The heartbeat of this process, a worker of `stage` in namespace `ns`.
    pub fn new(conn: RedisConn, ns: &str, stage: StageName) -> Self {
        Self {
            conn,
            ns: ns.to_string(),
            stage,
            id: worker_id(stage),
        }
    }

    /// Its member in the workers set.
    pub fn id(&self) -> &str {
        &self.id
    }

    async fn beat_with(&self, done: u64, leave: bool) -> Result<i64, PresenceError> {
        let mut c = self.conn.clone();
        Ok(BEAT
            .key(workers_key(&self.ns))
            .key(done_key(&self.ns, self.stage))
            .arg(&self.id)
            .arg(u64::try_from(FORGET.as_millis()).unwrap_or(u64::MAX))
            .arg(done)
            .arg(MINUTES_KEPT)
            .arg(if leave { "1" } else { "0" })
            .invoke_async(&mut c)
            .await?)
    }

    /// Says "alive", adding `done` finished jobs to this minute. Answers
    /// the server time (ms).
    pub async fn beat(&self, done: u64) -> Result<i64, PresenceError> {
        self.beat_with(done, false).await
    }

    /// Removes this process's entry, adding its last `done` jobs.
    pub async fn leave(&self, done: u64) -> Result<(), PresenceError> {
        self.beat_with(done, true).await.map(|_| ())
    }
}

/// Jobs of `stage` this process finished (successfully or with a failed
/// item), as `engage_jobs_total` counts them.
fn finished(metrics: &Metrics, stage: StageName) -> u64 {
    ["ok", "failed_item"]
        .iter()
        .map(|o| metrics.jobs.with_label_values(&[stage.as_str(), o]).get())
        .sum()
}

/// Beats every [`HEARTBEAT`] until `shutdown`, then leaves.
pub async fn run(presence: Presence, metrics: Metrics, shutdown: CancellationToken) {
    let mut sent = finished(&metrics, presence.stage);
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let now = finished(&metrics, presence.stage);
        match presence.beat(now.saturating_sub(sent)).await {
            Ok(_) => sent = now,
            Err(e) => tracing::debug!(error = %e, "presence heartbeat failed"),
        }
    }
    let now = finished(&metrics, presence.stage);
    if let Err(e) = presence.leave(now.saturating_sub(sent)).await {
        tracing::debug!(error = %e, "presence leave failed");
    }
}

/// A worker process as the fleet last heard of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSeen {
    /// Its stage.
    pub stage: StageName,
    /// Its host (already reduced to `[A-Za-z0-9._-]`).
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Time since its last heartbeat.
    pub age: Duration,
}

impl WorkerSeen {
    /// Whether it was heard from within [`LIVE`].
    pub fn live(&self) -> bool {
        self.age < LIVE
    }
}

/// The fleet's presence: its workers and per-stage throughput.
#[derive(Debug, Clone, Default)]
pub struct FleetPresence {
    /// Every worker heard from within [`FORGET`], by stage then host/pid.
    pub workers: Vec<WorkerSeen>,
    /// Per stage in pipeline order: jobs finished in each of the last
    /// `minutes` minutes, oldest first, the current (partial) minute last.
    pub done_per_minute: Vec<(StageName, Vec<u64>)>,
}

/// Reads the fleet's presence of namespace `ns`, with `minutes` of throughput.
pub async fn read(
    conn: &RedisConn,
    ns: &str,
    minutes: usize,
) -> Result<FleetPresence, PresenceError> {
    let mut c = conn.clone();
    let mut script = READ.key(workers_key(ns));
    for s in StageName::ALL {
        script.key(done_key(ns, s));
    }
    let v: redis::Value = script.invoke_async(&mut c).await?;
    parse_read(v, minutes)
}

fn strings(v: &redis::Value) -> Result<Vec<String>, PresenceError> {
    redis::from_redis_value(v.clone()).map_err(|_| PresenceError::Protocol("not a list of strings"))
}

fn parse_read(v: redis::Value, minutes: usize) -> Result<FleetPresence, PresenceError> {
    let redis::Value::Array(parts) = v else {
        return Err(PresenceError::Protocol("not an array"));
    };
    let now: i64 = parts
        .first()
        .and_then(|n| redis::from_redis_value(n.clone()).ok())
        .ok_or(PresenceError::Protocol("no time"))?;
    let members = strings(parts.get(1).ok_or(PresenceError::Protocol("no workers"))?)?;
    let mut workers: Vec<WorkerSeen> = members
        .chunks_exact(2)
        .filter_map(|p| parse_member(&p[0], p[1].parse::<f64>().ok()?, now))
        .collect();
    workers.sort_by(|a, b| (order(a.stage), &a.host, a.pid).cmp(&(order(b.stage), &b.host, b.pid)));
    let minute_now = now.div_euclid(60_000);
    let mut done_per_minute = Vec::new();
    for (i, s) in StageName::ALL.into_iter().enumerate() {
        let flat = parts
            .get(i + 2)
            .map(strings)
            .transpose()?
            .unwrap_or_default();
        let mut series = vec![0u64; minutes];
        for p in flat.chunks_exact(2) {
            let (Ok(m), Ok(n)) = (p[0].parse::<i64>(), p[1].parse::<u64>()) else {
                continue;
            };
            let back = minute_now - m;
            if let Ok(back) = usize::try_from(back)
                && back < minutes
            {
                series[minutes - 1 - back] += n;
            }
        }
        done_per_minute.push((s, series));
    }
    Ok(FleetPresence {
        workers,
        done_per_minute,
    })
}

/// A stage's place in the pipeline.
fn order(s: StageName) -> usize {
    StageName::ALL
        .iter()
        .position(|x| *x == s)
        .unwrap_or(usize::MAX)
}

/// `STAGE/HOST/PID` with its score (ms), or `None` when it is not one.
fn parse_member(member: &str, score: f64, now: i64) -> Option<WorkerSeen> {
    let mut it = member.splitn(3, '/');
    let stage = StageName::parse(it.next()?)?;
    let host = it.next()?;
    let pid = it.next()?.parse().ok()?;
    if host != clean_host(host) {
        return None;
    }
    // Scores are whole milliseconds, well inside f64's exact range.
    let age_ms = (now - score as i64).max(0);
    Some(WorkerSeen {
        stage,
        host: host.to_string(),
        pid,
        age: Duration::from_millis(u64::try_from(age_ms).unwrap_or(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn hosts_are_reduced_to_a_safe_alphabet() {
        assert_eq!(clean_host("web-1.example\n"), "web-1.example");
        assert_eq!(clean_host("<b>x</b>"), "bxb");
        assert_eq!(clean_host(""), "unknown");
        assert_eq!(clean_host(&"a".repeat(100)).len(), 63);
        let id = worker_id(StageName::Analyze);
        assert!(id.starts_with("analyze/"), "{id}");
        assert!(id.ends_with(&format!("/{}", std::process::id())), "{id}");
    }

    #[test]
    fn members_parse_or_are_skipped() {
        let w = parse_member("match/h1/42", 1_000.0, 61_000);
        assert_eq!(
            w,
            Some(WorkerSeen {
                stage: StageName::Match,
                host: "h1".into(),
                pid: 42,
                age: Duration::from_secs(60)
            })
        );
        assert!(!w.is_some_and(|w| w.live()));
        assert!(parse_member("nope/h1/42", 0.0, 0).is_none());
        assert!(parse_member("clean/h1/x", 0.0, 0).is_none());
        assert!(parse_member("clean/<b>/1", 0.0, 0).is_none());
        assert!(parse_member("clean", 0.0, 0).is_none());
    }

    #[test]
    fn throughput_lands_in_its_minute() {
        let now = 100 * 60_000 + 5_000; // minute 100
        let v = Value::Array(vec![
            Value::Int(now),
            Value::Array(vec![bulk("clean/h/1"), bulk(&(now - 2_000).to_string())]),
            // clean: minute 100 (now), 98, 40 (too old), garbage.
            Value::Array(vec![
                bulk("100"),
                bulk("7"),
                bulk("98"),
                bulk("3"),
                bulk("40"),
                bulk("9"),
                bulk("x"),
                bulk("1"),
            ]),
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Array(vec![]),
        ]);
        let p = parse_read(v, 5).unwrap_or_default();
        assert_eq!(
            p.done_per_minute[0],
            (StageName::Clean, vec![0, 0, 3, 0, 7])
        );
        assert_eq!(p.done_per_minute[1], (StageName::Match, vec![0; 5]));
        assert_eq!(p.workers.len(), 1);
        assert!(p.workers[0].live());
        assert!(parse_read(Value::Int(1), 5).is_err());
    }
}
