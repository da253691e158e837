//! `engage dashboard`: a small web UI of the fleet, served by the CLI.
//!
//! Server-rendered HTML, no JavaScript, nothing fetched from elsewhere. It
//! shows batches and their progress, per stage the workers seen lately,
//! jobs finished per minute, the backlog and the dead letters, and the
//! Gemini limiter's state (home), one batch with its failures, halts,
//! `report.html` and its retry/pause/resume/cancel buttons (`/batch/{id}`),
//! and a stage's dead letters with a Replay button (`/dlq/{stage}`).
//!
//! One concept per file: [`routes`] (the HTTP surface), [`html`] (the
//! pages), [`charts`] (their inline SVG), [`history`] (the backlog's recent
//! past), [`actions`] (the operator actions), [`security`] (the operator
//! token, CSRF and same-origin checks), [`model`] (reading the fleet's
//! state), [`error`] (what can go wrong).
//!
//! Reading needs no token. Actions need `ENGAGE_DASHBOARD_TOKEN`: without
//! it they are disabled, and listening on a non-loopback address is
//! refused.

mod actions;
mod charts;
mod error;
mod history;
mod html;
mod model;
mod routes;
mod security;

use std::net::SocketAddr;

use clap::Args;
use engage_runtime::config::FleetConfig;

use error::DashboardError;

/// The environment variable holding the operator token for actions.
pub(crate) const TOKEN_ENV: &str = "ENGAGE_DASHBOARD_TOKEN";

/// Arguments of `engage dashboard`.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Address to listen on. A non-loopback address needs
    /// `ENGAGE_DASHBOARD_TOKEN` to be set.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Another host name (with port, as browsers send it in `Host`) under
    /// which the dashboard is reached, e.g. behind a reverse proxy. The
    /// listen address (and `localhost:PORT` on loopback) is always accepted.
    #[arg(long)]
    pub allow_host: Vec<String>,
}

/// `engage dashboard`: serves the fleet of `cfg` (loaded as the other fleet
/// commands load it: the loader knows `ENGAGE_DASHBOARD_TOKEN` is not a
/// setting) until Ctrl-C.
pub(crate) async fn run(cfg: FleetConfig, args: &DashboardArgs) -> anyhow::Result<()> {
    Ok(serve(cfg, args).await?)
}

/// Serves the dashboard until Ctrl-C.
async fn serve(cfg: FleetConfig, args: &DashboardArgs) -> Result<(), DashboardError> {
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    if let Some(t) = &token {
        engage_runtime::redact::register_secret(t);
    }
    if !args.listen.ip().is_loopback() && token.is_none() {
        return Err(DashboardError::Unprotected(args.listen));
    }
    let guard = security::Guard::new(token, args.listen, &args.allow_host);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| DashboardError::Bind {
            addr: args.listen,
            source,
        })?;
    let actions = if guard.actions_enabled() {
        "actions enabled"
    } else {
        "read-only: set ENGAGE_DASHBOARD_TOKEN to enable actions"
    };
    println!("dashboard on http://{} ({actions})", args.listen);
    let app = routes::router(routes::AppState::new(cfg, guard));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(DashboardError::Serve)
}
