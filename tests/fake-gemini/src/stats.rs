//! What the fake observed, for assertions: calls, calls per audio, 429s,
//! concurrency and request times; and, optionally, a per-request log
//! ([`RequestLog`]) for benchmarks that need every admission time.

use serde_json::json;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A snapshot of the fake's counters ([`crate::FakeGemini::stats`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Every `generateContent` request received (any outcome).
    pub generate_calls: u64,
    /// `generateContent` requests answered with a usable candidate (HTTP 200 with parts).
    pub successes: u64,
    /// Requests that passed key, model and quota checks and reached the "model",
    /// per audio SHA-256 (lowercase hex): the calls that would be paid for.
    /// A value above 1 means the same audio was paid for more than once.
    pub calls_by_hash: BTreeMap<String, u64>,
    /// Answers that were HTTP 200 with a usable candidate, per audio SHA-256.
    pub successes_by_hash: BTreeMap<String, u64>,
    /// `429 RESOURCE_EXHAUSTED` answers sent (quota and injected).
    pub rate_limited: u64,
    /// 429s by quota label (`rpm`, `tpm`, `rpd`).
    pub rate_limited_by_quota: BTreeMap<&'static str, u64>,
    /// Faults injected from the queue or by probability.
    pub faults_injected: u64,
    /// Most `generateContent` requests in flight at once.
    pub max_concurrent: u64,
    /// Arrival time of every `generateContent` request, since the fake started.
    pub request_times: Vec<Duration>,
    /// Arrival time of the requests admitted by the quota, since the fake started.
    pub admitted_times: Vec<Duration>,
    /// Input tokens of admitted requests.
    pub input_tokens: u64,
    /// Resumable uploads started.
    pub uploads_started: u64,
    /// Uploads finalized (files created).
    pub uploads_finalized: u64,
    /// `GET file` calls.
    pub file_polls: u64,
    /// Files deleted.
    pub files_deleted: u64,
    /// Files still stored (uploaded and not deleted).
    pub files_live: u64,
    /// Requests rejected for a wrong or missing API key.
    pub auth_failures: u64,
}

impl Stats {
    /// The largest number of `times` inside any half-open window `[t, t + window)`.
    pub fn max_in_window(times: &[Duration], window: Duration) -> usize {
        let mut sorted = times.to_vec();
        sorted.sort_unstable();
        let mut best = 0;
        let mut start = 0;
        for end in 0..sorted.len() {
            while sorted[end] - sorted[start] >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    /// The most requests any one audio was paid for (0 when there were none).
    pub fn max_calls_per_audio(&self) -> u64 {
        self.calls_by_hash.values().copied().max().unwrap_or(0)
    }
}

/// A JSON-lines file with one line per `generateContent` request, written
/// when the request ends (answered, or dropped because the client went away):
///
/// ```text
/// {"t_ms":…,"admit_ms":…,"status":200,"cause":"ok","retry_ms":null,"audio":["<sha256>"]}
/// ```
///
/// - `t_ms`: wall-clock arrival at the handler, ms since the Unix epoch (fractional);
/// - `admit_ms`: when the quota counted the request (it entered the sliding
///   windows), or `null` if it never did (rejected by the quota, an injected
///   429 or status fault, a bad key, model or body);
/// - `status`: the HTTP status sent, or 499 if the client closed the connection first;
/// - `cause`: `ok`, `quota_rpm`, `quota_tpm`, `quota_rpd` (the fake's own
///   limiter), `injected_429`, `injected_<status>`, `injected_<answer fault>`,
///   `client_closed`, or `http_<status>` for the other rejections;
/// - `retry_ms`: for quota 429s, the wait the quota computed (what
///   `RetryInfo.retryDelay` says when it is sent);
/// - `audio`: SHA-256 of each audio part (empty if the body was not read).
#[derive(Clone)]
pub struct RequestLog(Arc<Mutex<LineWriter<File>>>);

impl std::fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestLog")
    }
}

impl RequestLog {
    /// Creates (truncates) the log file.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self(Arc::new(Mutex::new(LineWriter::new(File::create(
            path,
        )?)))))
    }

    fn write(&self, line: &str) {
        let mut w = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A benchmark aid: a failed write must not fail the request.
        let _ = writeln!(w, "{line}");
    }
}

/// Milliseconds since the Unix epoch, fractional.
fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// One `generateContent` request's line in the [`RequestLog`], written on drop
/// (so a request whose client went away is logged too).
#[derive(Debug)]
pub(crate) struct RequestTrace {
    log: Option<RequestLog>,
    arrived: SystemTime,
    admitted: Option<SystemTime>,
    /// The HTTP status sent.
    pub(crate) status: Option<u16>,
    /// Why, when not the status alone (see [`RequestLog`]).
    pub(crate) cause: Option<String>,
    /// Quota wait for quota 429s.
    pub(crate) retry: Option<Duration>,
    /// Audio SHA-256s.
    pub(crate) audio: Vec<String>,
}

impl RequestTrace {
    /// Starts a trace now; without a log it records nothing.
    pub(crate) fn start(log: Option<RequestLog>) -> Self {
        Self {
            log,
            arrived: SystemTime::now(),
            admitted: None,
            status: None,
            cause: None,
            retry: None,
            audio: Vec::new(),
        }
    }

    /// The quota counted the request now.
    pub(crate) fn admitted(&mut self) {
        self.admitted = Some(SystemTime::now());
    }
}

impl Drop for RequestTrace {
    fn drop(&mut self) {
        let Some(log) = &self.log else { return };
        let status = self.status.unwrap_or(499);
        let cause = match (&self.cause, self.status) {
            (Some(c), _) => c.clone(),
            (None, None) => "client_closed".to_owned(),
            (None, Some(200)) => "ok".to_owned(),
            (None, Some(s)) => format!("http_{s}"),
        };
        let line = json!({
            "t_ms": unix_ms(self.arrived),
            "admit_ms": self.admitted.map(unix_ms),
            "status": status,
            "cause": cause,
            "retry_ms": self.retry.map(|d| d.as_secs_f64() * 1000.0),
            "audio": self.audio,
        });
        log.write(&line.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_count_is_half_open() {
        let ms = Duration::from_millis;
        let t = [ms(0), ms(500), ms(999), ms(1000), ms(1001)];
        assert_eq!(Stats::max_in_window(&t, ms(1000)), 4);
        assert_eq!(
            Stats::max_in_window(&[ms(0), ms(1000), ms(2000)], ms(1000)),
            1
        );
        assert_eq!(Stats::max_in_window(&[], ms(1000)), 0);
    }
}
