//! The HTTP surface: the routes, the security headers every answer carries,
//! and the `Host` check every request passes.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | batches, queues, the Gemini limiter |
//! | `GET /batch/{id}` | one batch: progress, failed items, halts |
//! | `GET /batch/{id}/report.html` | its report, from the store |
//! | `GET /dlq/{stage}` | a stage's dead letters and the Replay form |
//! | `POST /action/{name}` | an operator action on the form's `target` (token + CSRF, see [`super::actions`]) |

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use engage_model::envelope::StageName;
use engage_runtime::config::FleetConfig;

use super::actions::{self, Target};
use super::error::DashboardError;
use super::history::BacklogHistory;
use super::security::Guard;
use super::{html, model};

/// The policy of the dashboard's own pages: nothing fetched, no script,
/// forms post only to the dashboard.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'";

/// The policy of a served `report.html`: its own (inline style and its
/// sorting script, nothing fetched), in a sandbox, so the report runs as
/// an opaque origin that cannot read or post to the dashboard.
const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
     img-src data:; base-uri 'none'; form-action 'none'; sandbox allow-scripts";

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

struct Inner {
    cfg: FleetConfig,
    guard: Guard,
    backlog: BacklogHistory,
}

impl AppState {
    /// The state of a dashboard over `cfg`, guarded by `guard`.
    pub(crate) fn new(cfg: FleetConfig, guard: Guard) -> Self {
        Self(Arc::new(Inner {
            cfg,
            guard,
            backlog: BacklogHistory::default(),
        }))
    }

    /// The CSRF token for forms, `None` when actions are disabled.
    fn csrf(&self) -> Option<&str> {
        let g = &self.0.guard;
        g.actions_enabled().then(|| g.csrf())
    }
}

/// The dashboard's router.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/batch/{id}", get(batch))
        .route("/batch/{id}/report.html", get(report))
        .route("/dlq/{stage}", get(dlq))
        .route("/action/{name}", post(action))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard_layer))
        .with_state(state)
}

/// Checks `Host`, then adds the security headers to whatever the handler
/// answered (a handler may set its own `Content-Security-Policy`).
async fn guard_layer(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = match st.0.guard.check_host(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    if !h.contains_key(CONTENT_SECURITY_POLICY) {
        h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with a
    // form's POST, which the same-origin check must refuse, so no action
    // could be taken from a browser. `same-origin` sends nothing to others.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn home(State(st): State<AppState>) -> Result<Html<String>, DashboardError> {
    let o = model::overview(&st.0.cfg).await?;
    let now = Instant::now();
    st.0.backlog.record(now, &o.queues);
    let backlog: Vec<_> = StageName::ALL
        .into_iter()
        .map(|s| (s, st.0.backlog.series(now, s)))
        .collect();
    Ok(html::home(&o, &backlog, st.0.guard.actions_enabled()))
}

async fn batch(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, DashboardError> {
    let v = model::batch(&st.0.cfg, &id).await?;
    let report = model::report_exists(&st.0.cfg, &v.id).await?;
    Ok(html::batch(&v, report, st.csrf()))
}

async fn report(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, DashboardError> {
    let bytes = model::report_html(&st.0.cfg, &id).await?;
    Ok((
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, REPORT_CSP),
        ],
        bytes,
    )
        .into_response())
}

fn stage(name: &str) -> Result<StageName, DashboardError> {
    StageName::parse(name).ok_or_else(|| DashboardError::NotFound("no such stage".into()))
}

async fn dlq(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Html<String>, DashboardError> {
    let s = stage(&name)?;
    let peek = model::dead_letters(&st.0.cfg, s).await?;
    Ok(html::dlq(s, peek.as_ref(), st.csrf()))
}

/// Every action: token, CSRF and origin checked here, once, before the
/// action or its target is even looked up; then [`actions::run`].
async fn action(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Html<String>, DashboardError> {
    let form = parse_form(&body).ok_or(DashboardError::BadRequest("malformed form"))?;
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    st.0.guard
        .check_action(&headers, field("csrf"), field("token"))?;
    let spec =
        actions::find(&name).ok_or_else(|| DashboardError::NotFound("no such action".into()))?;
    let target = Target::parse(spec, field("target").unwrap_or_default())?;
    let done = actions::run(&st.0.cfg, spec, &target).await?;
    Ok(html::action_done(&done))
}

async fn not_found() -> DashboardError {
    DashboardError::NotFound("no such page".into())
}

/// An `application/x-www-form-urlencoded` body: its (name, value) pairs,
/// `+` as space and `%XX` decoded; `None` when it is not valid UTF-8 after
/// decoding or an escape is broken.
fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn status_of(e: DashboardError) -> StatusCode {
        e.into_response().status()
    }

    #[test]
    fn forms_decode() {
        assert_eq!(
            parse_form(b"csrf=ab12&token=a+b%2Fc%25"),
            Some(vec![
                ("csrf".into(), "ab12".into()),
                ("token".into(), "a b/c%".into())
            ])
        );
        assert_eq!(parse_form(b""), Some(vec![]));
        assert_eq!(parse_form(b"x=%zz"), None);
        assert_eq!(parse_form(b"x=%4"), None);
        assert_eq!(parse_form(b"x=%ff"), None);
        assert_eq!(parse_form(&[0xff]), None);
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(status_of(stage("nope").unwrap_err()), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of(DashboardError::Forbidden("x")),
            StatusCode::FORBIDDEN
        );
        assert!(stage("clean").is_ok());
    }
}
