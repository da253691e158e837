//! The HTTP side of a worker: `/metrics` (Prometheus text), `/healthz`
//! (process up) and `/readyz` (broker connected, Redis answering, no start-up
//! check pending, not stopped by a fatal error, not draining). Readiness is
//! evaluated in one place ([`evaluate`]): by `/readyz`, and every
//! [`READY_EVERY`] by the worker itself for the `engage_ready` gauge, so the
//! gauge is true whether or not anything probes the worker.

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
    shutdown: CancellationToken,
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

/// How often the worker evaluates its own readiness for `engage_ready`.
pub const READY_EVERY: Duration = Duration::from_secs(5);

/// Whether the worker is ready, and the `/readyz` body saying why; sets the
/// `engage_ready` gauge.
async fn evaluate(s: &AppState) -> (bool, String) {
    let redis_ok = tokio::time::timeout(Duration::from_secs(2), s.redis.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let fatal = s.health.fatal();
    let waiting = s.health.waiting();
    let draining = s.shutdown.is_cancelled();
    let ready = s.health.amqp() && redis_ok && fatal.is_none() && waiting.is_none() && !draining;
    s.metrics
        .ready
        .with_label_values(&[s.stage])
        .set(i64::from(ready));
    let body = format!(
        "amqp: {}\nredis: {}\n{}{}{}",
        if s.health.amqp() { "up" } else { "down" },
        if redis_ok { "up" } else { "down" },
        if draining {
            "draining: shutting down\n"
        } else {
            ""
        },
        waiting
            .map(|w| format!("waiting: {w}\n"))
            .unwrap_or_default(),
        fatal.map(|f| format!("fatal: {f}\n")).unwrap_or_default()
    );
    (ready, body)
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let (ready, body) = evaluate(&s).await;
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

/// Serves the health and metrics endpoints on `addr` until `stopped`;
/// readiness turns false (`draining`) once `draining` is cancelled, while
/// in-flight jobs finish. Returns the bound address (port 0 in tests).
pub async fn serve(
    addr: &str,
    stage: &'static str,
    health: Arc<Health>,
    metrics: Metrics,
    redis: RedisConn,
    draining: CancellationToken,
    stopped: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let state = AppState {
        health,
        metrics,
        redis,
        stage,
        shutdown: draining,
    };
    // The gauge follows readiness even when nothing probes `/readyz`.
    let watched = state.clone();
    let stop = stopped.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(READY_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => { evaluate(&watched).await; }
            }
        }
        watched
            .metrics
            .ready
            .with_label_values(&[watched.stage])
            .set(0);
    });
    let app = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await;
    });
    Ok(bound)
}
