//! What can go wrong in the dashboard, and the HTTP answer for each: a
//! missing batch or stage is a 404 page, a refused action a 403 page, a
//! fleet that cannot be read a 500 page (its message redacted and escaped).
//! Nothing on bad input panics.

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::html;

/// The dashboard's errors.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DashboardError {
    /// No such batch, stage or page.
    #[error("not found: {0}")]
    NotFound(String),
    /// An action was refused (token, CSRF or origin check).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The request's `Host` is not one the dashboard answers to.
    #[error("unexpected Host header")]
    WrongHost,
    /// A malformed request.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The batch's state refuses the action (e.g. cancelling a complete
    /// batch); the message says why.
    #[error("refused: {0}")]
    Refused(String),
    /// Reading or changing the fleet failed (Redis, RabbitMQ, the store).
    #[error("{}", engage_runtime::redact::redact_error(.0))]
    Fleet(#[from] anyhow::Error),
    /// A non-loopback address without a token.
    #[error(
        "refusing to listen on {0}: it is not a loopback address and ENGAGE_DASHBOARD_TOKEN is not set; \
         set it (actions will require it) or listen on 127.0.0.1"
    )]
    Unprotected(SocketAddr),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("the dashboard server failed: {0}")]
    Serve(std::io::Error),
}

impl DashboardError {
    /// A batch-control failure as the CLI would exit with it: an unknown
    /// batch is not found, a refusal is a conflict, the rest a fleet error.
    pub(crate) fn from_control(e: anyhow::Error) -> Self {
        match crate::batch_control::exit_code(&e) {
            2 => Self::NotFound(e.to_string()),
            3 => Self::Refused(e.to_string()),
            _ => Self::Fleet(e),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::WrongHost => StatusCode::MISDIRECTED_REQUEST,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Refused(_) => StatusCode::CONFLICT,
            Self::Fleet(_) | Self::Unprotected(_) | Self::Bind { .. } | Self::Serve(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "dashboard request failed");
        }
        (status, html::error_page(status, &self.to_string())).into_response()
    }
}
