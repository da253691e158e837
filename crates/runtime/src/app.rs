//! The `main` of every worker binary: load configuration (the common sections
//! and the stage's own, [`FleetConfig::load_for_stage`]), set up logging,
//! connect, serve `/metrics` `/healthz` `/readyz`, build the stage, run it
//! (with its [`crate::presence`] heartbeat) until SIGTERM/SIGINT, drain, exit.
//!
//! The endpoints are served before the stage is built, so a stage whose
//! start-up waits (the analyze worker checking its Gemini model) is seen not
//! ready, with the reason on `/readyz`; a signal during that wait exits.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::FleetConfig;
use crate::services::Services;
use crate::stage::Stage;
use crate::worker;
use engage_model::envelope::StageName;

/// Builds the stage from the loaded services, then runs it as a worker process.
pub async fn main<S, F, Fut>(build: F) -> anyhow::Result<()>
where
    S: Stage,
    F: FnOnce(Arc<Services>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<S>>,
{
    crate::redact::install_panic_hook();
    let result = run_main(build).await;
    // The process prints this error on exit: mask every secret in the chain.
    result.map_err(|e| anyhow::anyhow!(crate::redact::redact_error(&e)))
}

async fn run_main<S, F, Fut>(build: F) -> anyhow::Result<()>
where
    S: Stage,
    F: FnOnce(Arc<Services>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<S>>,
{
    let cfg = FleetConfig::load_for_stage(S::NAME)
        .context("loading configuration (ENGAGE_* environment, ENGAGE_CONFIG file)")?;
    crate::redact::register_url(cfg.broker.amqp_url.expose());
    crate::redact::register_url(cfg.redis.url.expose());
    if !cfg.gemini.api_key.expose().is_empty() {
        crate::redact::register_secret(cfg.gemini.api_key.expose());
    }
    crate::telemetry::init(cfg.telemetry.log_format);
    let svc = Services::connect(cfg).await?;
    let shutdown = CancellationToken::new();
    // The endpoints outlive the drain: `/readyz` says `draining` meanwhile.
    let stopped = CancellationToken::new();
    let _serving = stopped.clone().drop_guard();
    let addr = crate::health::serve(
        &svc.cfg.telemetry.metrics_addr,
        S::NAME.as_str(),
        svc.health.clone(),
        svc.metrics.clone(),
        svc.redis.clone(),
        shutdown.clone(),
        stopped,
    )
    .await
    .with_context(|| format!("cannot serve metrics on {}", svc.cfg.telemetry.metrics_addr))?;
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let stage = tokio::select! {
        built = build(svc.clone()) => Arc::new(built?),
        () = shutdown.cancelled() => {
            info!(stage = S::NAME.as_str(), "worker stopped before it started");
            return Ok(());
        }
    };
    info!(stage = S::NAME.as_str(), metrics = %addr, namespace = %svc.cfg.fleet.namespace, "worker started");
    // The reconciler lives beside the last stage, whose workers are always
    // deployed (one leader among them sweeps at a time).
    let reconciler = (S::NAME == StageName::Aggregate)
        .then(|| tokio::spawn(crate::reconciler::run(svc.clone(), shutdown.clone())));
    // The heartbeat `engage dashboard` shows: alive, and jobs per minute.
    let presence = tokio::spawn(crate::presence::run(
        crate::presence::Presence::new(svc.redis.clone(), &svc.cfg.fleet.namespace, S::NAME),
        svc.metrics.clone(),
        shutdown.clone(),
    ));
    worker::run(stage, svc, shutdown.clone()).await?;
    shutdown.cancel();
    if let Some(r) = reconciler {
        let _ = r.await;
    }
    let _ = presence.await;
    shutdown.cancel();
    info!(stage = S::NAME.as_str(), "worker stopped");
    Ok(())
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn signal_shutdown(token: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: draining"),
    }
    token.cancel();
}
