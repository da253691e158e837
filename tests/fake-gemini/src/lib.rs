//! Test support: a Gemini-wire-compatible fake server.
//!
//! [`FakeGemini::start`] serves, on loopback, the parts of the Gemini REST API
//! the fleet uses, with Google's wire shapes:
//!
//! - `POST /v1beta/models/{model}:generateContent` (camelCase and snake_case
//!   request fields, unknown fields rejected; camelCase answers);
//! - the Files API: resumable upload (`POST /upload/v1beta/files` with
//!   `X-Goog-Upload-Command: start`, then `upload, finalize` on the URL from
//!   `x-goog-upload-url`), `GET /v1beta/files/{id}` (`PROCESSING` for a
//!   configurable number of polls, then `ACTIVE`) and `DELETE`;
//! - the key check (`x-goog-api-key` or `?key=`; a wrong key gets the real
//!   `400 INVALID_ARGUMENT / API_KEY_INVALID` envelope) and the model check
//!   (`404 NOT_FOUND`).
//!
//! Behaviour is scriptable ([`Behaviour`]): latency, sliding-window RPM / TPM /
//! RPD quotas answered with `429 RESOURCE_EXHAUSTED` and a correct
//! `RetryInfo.retryDelay`, and injected [`Fault`]s. Answers are derived from the
//! SHA-256 of the audio ([`expected_answer`]), and [`Stats`] tell tests how many
//! calls each audio cost, how many 429s were sent and how many requests were in
//! flight at once.
//!
//! This crate is test support only; it is never shipped as an analyzer.
#![forbid(unsafe_code)]

mod answer;
mod behaviour;
mod quota;
mod server;
mod stats;
pub mod wire;

pub use answer::{
    AUDIO_TOKENS_PER_SECOND, audio_duration_secs, audio_hash, expected_answer, input_tokens,
};
pub use behaviour::{Behaviour, Fault, FileProcessing, Latency};
pub use server::DEFAULT_MAX_REQUEST_BYTES;
pub use stats::{RequestLog, Stats};
pub use wire::QuotaKind;

use server::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How to start a fake.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The only API key accepted.
    pub api_key: String,
    /// Models that exist; any other answers `404 NOT_FOUND`.
    pub models: Vec<String>,
    /// Initial behaviour (latency, quotas, faults, file processing).
    pub behaviour: Behaviour,
    /// Seed of the fake's random draws (latency, fault probabilities, ids).
    pub seed: u64,
    /// Loopback port; 0 picks a free one.
    pub port: u16,
    /// Largest `generateContent` body accepted (Google: 20 MiB).
    pub max_request_bytes: usize,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            api_key: "fake-gemini-key".to_owned(),
            // The product's default model, plus gemini-2.5-flash (shut down
            // 2026-12-01) which this crate's own tests still name.
            models: vec!["gemini-3.8-flash".to_owned(), "gemini-2.5-flash".to_owned()],
            behaviour: Behaviour::default(),
            seed: 7,
            port: 0,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// A running fake; dropping it stops the server.
pub struct FakeGemini {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for FakeGemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGemini")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeGemini {
    /// Binds `127.0.0.1:{port}` and serves until [`FakeGemini::shutdown`] or drop.
    pub async fn start(config: FakeConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(
            config.api_key,
            config.models,
            format!("http://{addr}"),
            config.max_request_bytes,
            config.behaviour,
            config.seed,
        ));
        let app = server::router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            shared,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the client's base URL.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The accepted API key.
    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Changes the behaviour of the running server.
    pub fn set_behaviour(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.shared.lock().behaviour);
    }

    /// Appends faults to the queue applied to the next `generateContent` calls.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.lock().behaviour.faults.extend(faults);
    }

    /// Stops accepting connections and waits for in-flight requests to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    async fn start(behaviour: Behaviour) -> FakeGemini {
        FakeGemini::start(FakeConfig {
            behaviour,
            ..FakeConfig::default()
        })
        .await
        .unwrap()
    }

    fn generate_url(fake: &FakeGemini, model: &str) -> String {
        format!("{}/v1beta/models/{model}:generateContent", fake.base_url())
    }

    async fn post(url: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = reqwest::Client::new().post(url).json(&body);
        if let Some(k) = key {
            req = req.header("x-goog-api-key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn snake_request(audio: &[u8]) -> Value {
        use base64::Engine as _;
        json!({
            "contents": [{"parts": [
                {"text": "rate this"},
                {"inline_data": {"mime_type": "audio/wav",
                    "data": base64::engine::general_purpose::STANDARD.encode(audio)}}
            ]}],
            "generation_config": {"response_mime_type": "application/json"}
        })
    }

    #[tokio::test]
    async fn snake_case_request_gets_camel_case_answer_for_the_audio() {
        let fake = start(Behaviour::default()).await;
        let audio = b"some audio bytes".to_vec();
        let (status, body) = post(
            &generate_url(&fake, "gemini-2.5-flash"),
            Some(fake.api_key()),
            snake_request(&audio),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let text = body["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap();
        let answer: Value = serde_json::from_str(text).unwrap();
        assert_eq!(answer, expected_answer(&audio));
        assert!(body["usageMetadata"]["promptTokenCount"].as_u64().unwrap() > 0);
        assert_eq!(
            fake.stats().calls_by_hash.get(&audio_hash(&audio)),
            Some(&1)
        );
    }

    #[tokio::test]
    async fn key_model_and_field_checks_use_googles_envelopes() {
        let fake = start(Behaviour::default()).await;
        let url = generate_url(&fake, "gemini-2.5-flash");
        let (status, body) = post(&url, Some("wrong"), snake_request(b"a")).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["details"][0]["reason"], "API_KEY_INVALID");
        let (status, body) = post(&url, None, snake_request(b"a")).await;
        assert_eq!(
            (status, body["error"]["status"].as_str()),
            (403, Some("PERMISSION_DENIED"))
        );
        // The key may also come as ?key=.
        let with_query = format!("{url}?key={}", fake.api_key());
        let (status, _) = post(&with_query, None, snake_request(b"a")).await;
        assert_eq!(status, 200);
        let (status, body) = post(
            &generate_url(&fake, "gemini-9"),
            Some(fake.api_key()),
            snake_request(b"a"),
        )
        .await;
        assert_eq!(
            (status, body["error"]["status"].as_str()),
            (404, Some("NOT_FOUND"))
        );
        let misspelt = json!({"contents": [], "generationConfig": {"responseMimetype": "x"}});
        let (status, body) = post(&url, Some(fake.api_key()), misspelt).await;
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Invalid JSON payload")
        );
        let (status, _) = post(
            &url,
            Some(fake.api_key()),
            json!({"contents": [{"parts": [{"inlineData": {"mimeType": "text/plain", "data": ""}}]}]}),
        )
        .await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn rpm_quota_answers_429_with_quota_failure_and_retry_info() {
        let fake = start(Behaviour {
            rpm: Some(1),
            ..Behaviour::default()
        })
        .await;
        let url = generate_url(&fake, "gemini-2.5-flash");
        assert_eq!(
            post(&url, Some(fake.api_key()), snake_request(b"1"))
                .await
                .0,
            200
        );
        let (status, body) = post(&url, Some(fake.api_key()), snake_request(b"2")).await;
        assert_eq!(status, 429);
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        let details = body["error"]["details"].as_array().unwrap();
        let quota = details
            .iter()
            .find(|d| d["@type"] == "type.googleapis.com/google.rpc.QuotaFailure")
            .unwrap();
        assert_eq!(
            quota["violations"][0]["quotaId"],
            "GenerateRequestsPerMinutePerProjectPerModel"
        );
        let delay = details
            .iter()
            .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
            .unwrap()["retryDelay"]
            .as_str()
            .unwrap();
        let secs: f64 = delay.trim_end_matches('s').parse().unwrap();
        assert!(secs > 59.0 && secs <= 60.0, "{delay}");
        let stats = fake.stats();
        assert_eq!((stats.rate_limited, stats.admitted_times.len()), (1, 1));
        assert_eq!(stats.rate_limited_by_quota.get("rpm"), Some(&1));
    }

    #[tokio::test]
    async fn request_log_has_one_line_per_request_with_its_cause() {
        let path = std::env::temp_dir().join(format!(
            "fake-gemini-log-{}-{:?}.jsonl",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let fake = start(Behaviour {
            rpm: Some(1),
            request_log: Some(RequestLog::create(&path).unwrap()),
            ..Behaviour::default()
        })
        .await;
        let url = generate_url(&fake, "gemini-2.5-flash");
        let key = Some(fake.api_key());
        assert_eq!(post(&url, key, snake_request(b"1")).await.0, 200);
        assert_eq!(post(&url, key, snake_request(b"2")).await.0, 429);
        fake.push_faults(Fault::burst_429(1, "3s"));
        assert_eq!(post(&url, key, snake_request(b"3")).await.0, 429);
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let _ = std::fs::remove_file(&path);
        let causes: Vec<&str> = lines.iter().map(|l| l["cause"].as_str().unwrap()).collect();
        assert_eq!(causes, ["ok", "quota_rpm", "injected_429"]);
        assert!(lines[0]["admit_ms"].as_f64().unwrap() >= lines[0]["t_ms"].as_f64().unwrap());
        assert!(lines[1]["admit_ms"].is_null() && lines[2]["admit_ms"].is_null());
        assert!(lines[1]["retry_ms"].as_f64().unwrap() > 59_000.0);
        assert_eq!(lines[0]["audio"][0], audio_hash(b"1"));
    }

    #[tokio::test]
    async fn resumable_upload_then_poll_then_delete() {
        let fake = start(Behaviour::default()).await;
        let http = reqwest::Client::new();
        let start = http
            .post(format!("{}/upload/v1beta/files", fake.base_url()))
            .header("x-goog-api-key", fake.api_key())
            .header("X-Goog-Upload-Protocol", "resumable")
            .header("X-Goog-Upload-Command", "start")
            .header("X-Goog-Upload-Header-Content-Length", "5")
            .header("X-Goog-Upload-Header-Content-Type", "audio/wav")
            .json(&json!({"file": {"display_name": "x"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(start.status().as_u16(), 200);
        let upload_url = start.headers()["x-goog-upload-url"]
            .to_str()
            .unwrap()
            .to_owned();
        let done: Value = http
            .post(&upload_url)
            .header("X-Goog-Upload-Offset", "0")
            .header("X-Goog-Upload-Command", "upload, finalize")
            .body(b"hello".to_vec())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(done["file"]["state"], "PROCESSING");
        assert_eq!(done["file"]["sizeBytes"], "5");
        let name = done["file"]["name"].as_str().unwrap().to_owned();
        let get = |n: String| {
            let http = http.clone();
            let url = format!("{}/v1beta/{n}", fake.base_url());
            let key = fake.api_key().to_owned();
            async move {
                let r = http
                    .get(url)
                    .header("x-goog-api-key", key)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        assert_eq!(get(name.clone()).await.1["state"], "PROCESSING");
        assert_eq!(get(name.clone()).await.1["state"], "ACTIVE");
        let deleted = http
            .delete(format!("{}/v1beta/{name}", fake.base_url()))
            .header("x-goog-api-key", fake.api_key())
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status().as_u16(), 200);
        assert_eq!(get(name).await.0, 403);
        let stats = fake.stats();
        assert_eq!(
            (
                stats.uploads_finalized,
                stats.files_deleted,
                stats.files_live
            ),
            (1, 1, 0)
        );
    }
}
