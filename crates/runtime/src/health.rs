//! The HTTP side of a worker: `/metrics` (Prometheus text), `/healthz`
//! (process up) and `/readyz` (broker connected, Redis answering, no start-up
//! check pending, not stopped by a fatal error).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::redis_conn::RedisConn;

/// Readiness facts, updated by the worker loop.
#[derive(Debug, Default)]
pub struct Health {
    amqp: AtomicBool,
    waiting: std::sync::Mutex<Option<String>>,
    fatal: std::sync::Mutex<Option<String>>,
}

impl Health {
    /// Records whether the broker connection is up.
    pub fn set_amqp(&self, up: bool) {
        self.amqp.store(up, Ordering::Relaxed);
    }
    /// True while the broker connection is up.
    pub fn amqp(&self) -> bool {
        self.amqp.load(Ordering::Relaxed)
    }
    /// Marks the worker as not ready yet because of `why` (a start-up check
    /// under way or being retried), or clears it with `None`.
    pub fn set_waiting(&self, why: Option<String>) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = why;
        }
    }
    /// What the worker is waiting for before it takes work, if anything.
    pub fn waiting(&self) -> Option<String> {
        self.waiting.lock().ok().and_then(|w| w.clone())
    }
    /// Marks the worker as stopped by a fatal error (readiness stays false).
    pub fn set_fatal(&self, why: String) {
        if let Ok(mut f) = self.fatal.lock() {
            *f = Some(why);
        }
    }
    /// The fatal error, if any.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Metrics,
    redis: RedisConn,
    stage: &'static str,
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let redis_ok = tokio::time::timeout(Duration::from_secs(2), s.redis.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let fatal = s.health.fatal();
    let waiting = s.health.waiting();
    let ready = s.health.amqp() && redis_ok && fatal.is_none() && waiting.is_none();
    s.metrics
        .ready
        .with_label_values(&[s.stage])
        .set(i64::from(ready));
    let body = format!(
        "amqp: {}\nredis: {}\n{}{}",
        if s.health.amqp() { "up" } else { "down" },
        if redis_ok { "up" } else { "down" },
        waiting
            .map(|w| format!("waiting: {w}\n"))
            .unwrap_or_default(),
        fatal.map(|f| format!("fatal: {f}\n")).unwrap_or_default()
    );
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

/// Serves the health and metrics endpoints on `addr` until `shutdown`.
/// Returns the bound address (useful with port 0 in tests).
pub async fn serve(
    addr: &str,
    stage: &'static str,
    health: Arc<Health>,
    metrics: Metrics,
    redis: RedisConn,
    shutdown: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            health,
            metrics,
            redis,
            stage,
        });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(bound)
}
