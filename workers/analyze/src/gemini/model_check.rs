//! The start-up gate of the Gemini analyzer: the configured model must exist
//! for the key before the worker takes any job.
//!
//! [`require_model`] asks [`GeminiClient::check_model`] (`GET
//! /v1beta/models/{model}`, no tokens spent) until it gets an answer that
//! settles it, keeping `/readyz` not ready meanwhile:
//!
//! - the model exists and serves `generateContent`: the worker starts work;
//! - a failure to ask (connection refused, timeout, 5xx, 429) is logged and
//!   asked again after an exponential backoff with jitter (the server's
//!   `RetryInfo` delay when it gives one);
//! - the model is unavailable (retired, unknown) or the key is refused: a
//!   fatal state, as a bad key found at call time is — logged loudly with the
//!   model id, shown on `/readyz`, and no job is ever taken; the worker stays
//!   up, not ready, until it is stopped.

use std::time::Duration;

use engage_runtime::events::{FatalStop, InternalEvent};
use engage_runtime::health::Health;
use engage_runtime::metrics::Metrics;
use engage_runtime::redact::redact_text;
use rand::Rng;
use tracing::{info, warn};

use super::client::GeminiClient;
use super::error::ModelCheckError;
use super::wire::Model;

/// Delays between attempts of the model check: exponential from `min`,
/// doubling up to `max`, each drawn in `[d/2, d]` (jitter, so a fleet
/// started at once does not ask in lockstep).
#[derive(Debug, Clone, Copy)]
pub struct CheckBackoff {
    /// The first delay.
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for CheckBackoff {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl CheckBackoff {
    /// The delay before attempt `n + 1` after `n` failures (`n` ≥ 1),
    /// at least `server_min` (capped at `max`).
    fn delay(&self, failures: u32, server_min: Option<Duration>) -> Duration {
        let doubled = self
            .min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.max);
        let jittered = rand::rng().random_range(doubled / 2..=doubled);
        jittered.max(server_min.unwrap_or_default().min(self.max))
    }
}

/// Checks the model until the answer settles it: `Ok` once it is available,
/// `Err` only for a fatal [`ModelCheckError`]. Every transient failure is
/// passed to `on_retry` with the delay before the next attempt.
pub async fn wait_for_model(
    client: &GeminiClient,
    backoff: CheckBackoff,
    mut on_retry: impl FnMut(&ModelCheckError, Duration),
) -> Result<Model, ModelCheckError> {
    let mut failures = 0u32;
    loop {
        match client.check_model().await {
            Ok(model) => return Ok(model),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff.delay(failures, e.retry_after());
                on_retry(&e, wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The analyze worker's start-up gate: returns once the configured model is
/// available to the key, with `/readyz` not ready (`waiting: …`) until then.
///
/// If the model is unavailable or the key refused, it never returns: the
/// cause is logged (`fatal error: …`, with `Gemini model "<id>" is not
/// available to this key: …`) and set as the worker's fatal state, so
/// `/readyz` answers 503 with it and no job is consumed until the process is
/// stopped (the caller's shutdown drops this future).
pub async fn require_model(client: &GeminiClient, health: &Health, metrics: &Metrics) -> Model {
    let id = client.config().model_id().to_owned();
    health.set_waiting(Some(format!("checking Gemini model {id:?}")));
    let outcome = wait_for_model(client, CheckBackoff::default(), |e, wait| {
        let error = redact_text(&with_causes(e));
        warn!(model = %id, class = e.class(), %error, ?wait, "Gemini model check failed; retrying");
        health.set_waiting(Some(format!(
            "checking Gemini model {id:?} (retrying in {wait:?}): {error}"
        )));
    })
    .await;
    health.set_waiting(None);
    match outcome {
        Ok(model) => {
            info!(
                model = %id,
                version = %model.version,
                display_name = %model.display_name,
                "Gemini model available"
            );
            model
        }
        Err(e) => {
            let class = e.class();
            let e = anyhow::Error::new(e);
            FatalStop { error: &e }.emit(metrics);
            health.set_fatal(redact_text(&format!("{e:#} [{class}]")));
            std::future::pending().await
        }
    }
}

/// `e` and its causes (`connection refused` under `error sending request`).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemini::GeminiConfig;
    use engage_runtime::secret::Secret;
    use fake_gemini::{FakeConfig, FakeGemini};

    fn client(base_url: String, key: &str, model: &str) -> GeminiClient {
        GeminiClient::new(GeminiConfig {
            base_url,
            api_key: Secret::new(key.to_owned()),
            model: model.to_owned(),
            ..GeminiConfig::default()
        })
        .unwrap()
    }

    fn fast() -> CheckBackoff {
        CheckBackoff {
            min: Duration::from_millis(5),
            max: Duration::from_millis(20),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_honours_the_server() {
        let b = CheckBackoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(8),
        };
        for _ in 0..50 {
            let d1 = b.delay(1, None);
            assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
            let d3 = b.delay(3, None);
            assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4));
            assert!(b.delay(40, None) <= Duration::from_secs(8));
            assert_eq!(
                b.delay(1, Some(Duration::from_secs(5))),
                Duration::from_secs(5)
            );
            assert_eq!(
                b.delay(1, Some(Duration::from_secs(3600))),
                Duration::from_secs(8)
            );
        }
    }

    #[tokio::test]
    async fn an_available_model_returns_its_resource() {
        let fake = FakeGemini::start(FakeConfig::default()).await.unwrap();
        let c = client(
            fake.base_url().to_owned(),
            fake.api_key(),
            &GeminiConfig::default().model,
        );
        let model = c.check_model().await.unwrap();
        assert_eq!(
            model.name,
            format!("models/{}", GeminiConfig::default().model)
        );
        assert!(
            model
                .supported_generation_methods
                .iter()
                .any(|m| m == "generateContent")
        );
        assert_eq!(fake.stats().generate_calls, 0, "the check spent a call");
    }

    #[tokio::test]
    async fn a_retired_model_is_fatal_at_once_and_names_the_model() {
        let fake = FakeGemini::start(FakeConfig {
            models: vec!["gemini-3.8-flash".to_owned()],
            ..FakeConfig::default()
        })
        .await
        .unwrap();
        let c = client(
            fake.base_url().to_owned(),
            fake.api_key(),
            "models/gemini-2.5-flash",
        );
        let mut retries = 0;
        let e = wait_for_model(&c, fast(), |_, _| retries += 1)
            .await
            .unwrap_err();
        assert_eq!(retries, 0);
        assert!(
            matches!(e, ModelCheckError::ModelUnavailable { .. }),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("Gemini model \"gemini-2.5-flash\" is not available to this key: "),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_bad_key_is_fatal_and_never_echoed() {
        let fake = FakeGemini::start(FakeConfig::default()).await.unwrap();
        let c = client(
            fake.base_url().to_owned(),
            "AIzaWrongKey",
            &GeminiConfig::default().model,
        );
        let e = wait_for_model(&c, fast(), |_, _| panic!("retried a bad key"))
            .await
            .unwrap_err();
        assert_eq!(e.class(), "invalid_api_key");
        assert!(e.is_fatal());
        assert!(!format!("{e:?} {e}").contains("AIzaWrongKey"));
    }

    #[tokio::test]
    async fn a_server_that_is_down_is_retried_until_it_answers() {
        // A port nobody listens on yet: connection refused, then the fake
        // starts there (after the first failure was reported) and answers.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = client(
            format!("http://127.0.0.1:{port}"),
            "fake-gemini-key",
            &GeminiConfig::default().model,
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tx = Some(tx);
        let mut seen = Vec::new();
        let server = tokio::spawn(async move {
            rx.await.unwrap();
            FakeGemini::start(FakeConfig {
                port,
                ..FakeConfig::default()
            })
            .await
            .unwrap()
        });
        let checking = wait_for_model(&c, fast(), |e, _| {
            seen.push((e.class(), e.is_fatal()));
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
        });
        let model = tokio::time::timeout(Duration::from_secs(30), checking)
            .await
            .expect("the check gave up or hung")
            .unwrap();
        assert_eq!(
            model.name,
            format!("models/{}", GeminiConfig::default().model)
        );
        assert!(!seen.is_empty());
        assert!(
            seen.iter()
                .all(|(class, fatal)| *class == "network" && !fatal),
            "{seen:?}"
        );
        let fake = server.await.unwrap();
        assert_eq!(fake.stats().generate_calls, 0);
    }

    #[tokio::test]
    async fn require_model_keeps_the_worker_not_ready_and_fatal_on_a_retired_model() {
        let fake = FakeGemini::start(FakeConfig {
            models: vec!["gemini-3.8-flash".to_owned()],
            ..FakeConfig::default()
        })
        .await
        .unwrap();
        let c = client(fake.base_url().to_owned(), fake.api_key(), "gemini-x");
        let health = Health::default();
        let metrics = Metrics::new();
        // It never returns: drive it until the fatal state is set.
        let fatal = async {
            loop {
                if let Some(f) = health.fatal() {
                    return f;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let fatal = tokio::select! {
            _ = require_model(&c, &health, &metrics) => panic!("require_model returned for a retired model"),
            f = tokio::time::timeout(Duration::from_secs(30), fatal) => f.expect("no fatal state"),
        };
        assert!(
            fatal.contains("Gemini model \"gemini-x\" is not available to this key")
                && fatal.contains("model_unavailable"),
            "{fatal}"
        );
        assert_eq!(health.waiting(), None);
    }
}
