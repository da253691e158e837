//! Logging setup: structured `tracing` logs as text or JSON, filtered by
//! `RUST_LOG` (default `info`). Safe to call more than once (tests may call it;
//! a second call is a no-op), and tests stay silent unless `TEST_LOG` is set.
//! Every line passes through [`RedactingStderr`], so no registered secret is logged.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;
use crate::redact::RedactingStderr;

/// Installs the global subscriber. Returns false if one was already installed.
pub fn init(format: LogFormat) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let res = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(RedactingStderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(RedactingStderr),
            )
            .try_init(),
    };
    res.is_ok()
}
