//! Who may act: the operator token (`ENGAGE_DASHBOARD_TOKEN`), the
//! per-process CSRF token, and the same-origin checks on `Host` and
//! `Origin`.
//!
//! Reading pages needs no token. An action (a POST) is allowed only when
//! the dashboard has a token, the request's `Host` is one the dashboard
//! answers to (this also defeats DNS rebinding), its `Origin`, when the
//! browser sends one, is that same host, the form carries this process's
//! CSRF token, and the operator token comes either typed in the form or as
//! `Authorization: Bearer`. Tokens are compared in constant time.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};

use super::error::DashboardError;

/// The checks of one dashboard process.
#[derive(Debug)]
pub(crate) struct Guard {
    token: Option<String>,
    csrf: String,
    hosts: Vec<String>,
}

impl Guard {
    /// A guard for `token` (none: actions disabled) serving on `listen`,
    /// also answering to the `extra` host names.
    pub(crate) fn new(token: Option<String>, listen: SocketAddr, extra: &[String]) -> Self {
        let mut hosts = vec![listen.to_string()];
        if listen.ip().is_loopback() {
            hosts.push(format!("localhost:{}", listen.port()));
        }
        hosts.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
        Self {
            token,
            csrf: random_token(),
            hosts,
        }
    }

    /// Whether actions are possible (a token is configured).
    pub(crate) fn actions_enabled(&self) -> bool {
        self.token.is_some()
    }

    /// The CSRF token to embed in forms.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Every request: its `Host` must be one the dashboard answers to, so
    /// a page of another site whose name resolves to this address (DNS
    /// rebinding) cannot read it.
    pub(crate) fn check_host(&self, headers: &HeaderMap) -> Result<(), DashboardError> {
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or(DashboardError::WrongHost)?
            .to_ascii_lowercase();
        if self.hosts.contains(&host) {
            Ok(())
        } else {
            Err(DashboardError::WrongHost)
        }
    }

    /// An action: every check of the module's doc, in order.
    pub(crate) fn check_action(
        &self,
        headers: &HeaderMap,
        form_csrf: Option<&str>,
        form_token: Option<&str>,
    ) -> Result<(), DashboardError> {
        let Some(token) = &self.token else {
            return Err(DashboardError::Forbidden(
                "actions are disabled: ENGAGE_DASHBOARD_TOKEN is not set",
            ));
        };
        self.check_host(headers)?;
        // Every `Origin` sent (a browser sends one) must be this host.
        for origin in headers.get_all(ORIGIN) {
            let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
            let same = origin
                .strip_prefix("http://")
                .is_some_and(|h| self.hosts.iter().any(|x| x == h));
            if !same {
                return Err(DashboardError::Forbidden("cross-origin request"));
            }
        }
        if !form_csrf.is_some_and(|c| constant_time_eq(c.as_bytes(), self.csrf.as_bytes())) {
            return Err(DashboardError::Forbidden(
                "missing or wrong CSRF token (reload the page)",
            ));
        }
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        let given = form_token.filter(|t| !t.is_empty()).or(bearer);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return Err(DashboardError::Forbidden(
                "missing or wrong dashboard token",
            ));
        }
        Ok(())
    }
}

/// 32 random bytes from the thread's CSPRNG (ChaCha, seeded by the OS), hex.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality whose time does not depend on where the inputs differ: every
/// byte is compared and the differences are OR-ed together, with no early
/// exit (`subtle` is not a dependency of this crate; this is its
/// `ConstantTimeEq` for byte slices). Only the length may leak, and the
/// tokens compared here have a fixed length (CSRF) or a secret one the
/// attacker cannot learn byte by byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn guard(token: Option<&str>) -> Guard {
        Guard::new(
            token.map(str::to_string),
            "127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!()),
            &[],
        )
    }

    fn headers(pairs: &[(axum::http::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                k.clone(),
                HeaderValue::from_str(v).unwrap_or_else(|_| unreachable!()),
            );
        }
        h
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn csrf_tokens_are_random_hex() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn actions_need_every_check() {
        let g = guard(Some("s3cret"));
        let csrf = g.csrf().to_string();
        let ok = headers(&[(HOST, "127.0.0.1:8080"), (ORIGIN, "http://127.0.0.1:8080")]);
        assert!(g.check_action(&ok, Some(&csrf), Some("s3cret")).is_ok());
        // Bearer instead of the form field.
        let bearer = headers(&[(HOST, "localhost:8080"), (AUTHORIZATION, "Bearer s3cret")]);
        assert!(g.check_action(&bearer, Some(&csrf), None).is_ok());
        assert!(g.check_action(&ok, Some(&csrf), Some("wrong")).is_err());
        assert!(g.check_action(&ok, Some(&csrf), None).is_err());
        assert!(g.check_action(&ok, Some("0000"), Some("s3cret")).is_err());
        assert!(g.check_action(&ok, None, Some("s3cret")).is_err());
        let cross = headers(&[(HOST, "127.0.0.1:8080"), (ORIGIN, "http://evil.example")]);
        assert!(g.check_action(&cross, Some(&csrf), Some("s3cret")).is_err());
        let mut twice = ok.clone();
        twice.append(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(g.check_action(&twice, Some(&csrf), Some("s3cret")).is_err());
        let rebound = headers(&[(HOST, "evil.example:8080")]);
        assert!(
            g.check_action(&rebound, Some(&csrf), Some("s3cret"))
                .is_err()
        );
        assert!(g.check_host(&rebound).is_err());
        assert!(g.check_host(&HeaderMap::new()).is_err());
    }

    #[test]
    fn without_a_token_actions_are_disabled() {
        let g = guard(None);
        let csrf = g.csrf().to_string();
        let h = headers(&[(HOST, "127.0.0.1:8080")]);
        assert!(!g.actions_enabled());
        assert!(g.check_action(&h, Some(&csrf), Some("")).is_err());
    }
}
