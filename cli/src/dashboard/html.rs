//! The pages, rendered on the server as plain HTML: no script, inline
//! style only, nothing fetched. Every string that comes from the fleet
//! (batch ids, reasons, job ids, error texts) goes through [`esc`]; the
//! pages never show a message body, so no learner id reaches them.

use std::fmt::Write as _;

use axum::http::StatusCode;
use axum::response::Html;
use engage_model::envelope::StageName;

use engage_runtime::presence::{FleetPresence, LIVE};

use super::actions::{self, Done, Scope};
use super::charts;
use super::history::WINDOW;
use super::model::{BatchState, BatchView, DLQ_SHOWN, Overview, StageQueues};
use crate::fleet::DlqPeek;

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;color:#222;margin:0 auto;max-width:1100px;padding:0 16px 40px}\
h1{font-size:21px}h2{font-size:17px;margin-top:26px}table{border-collapse:collapse;margin:6px 0 12px}\
th,td{padding:3px 8px;border:1px solid #ddd;text-align:left;vertical-align:top}th{background:#f4f4f4}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.running{color:#0072b2}.complete{color:#009e73}\
.halted{color:#d55e00;font-weight:bold}.unknown{color:#777}.note{color:#555}code{word-break:break-all}\
meter{width:140px}nav a{margin-right:12px}form{margin:10px 0}input{margin-right:6px}\
.live{color:#009e73}.gone{color:#d55e00}svg{display:block}";

/// Escapes text for HTML element content and quoted attribute values (the
/// report page's escaper: `& < > " '`, control characters replaced).
pub(crate) fn esc(s: &str) -> String {
    engage_aggregate::html::escape_text(s)
}

/// A whole page. `refresh`: reload every 5 seconds.
fn page(title: &str, refresh: bool, body: &str) -> Html<String> {
    let meta = if refresh {
        "<meta http-equiv=\"refresh\" content=\"5\">"
    } else {
        ""
    };
    let mut nav = String::from("<nav><a href=\"/\">Home</a>");
    for s in StageName::ALL {
        let _ = write!(nav, "<a href=\"/dlq/{s}\">DLQ {s}</a>");
    }
    nav.push_str("</nav>");
    Html(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">{meta}\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · engage</title><style>{STYLE}</style></head><body>{nav}{body}</body></html>",
        esc(title)
    ))
}

fn opt(n: Option<impl std::fmt::Display>) -> String {
    n.map_or_else(|| "—".to_string(), |n| n.to_string())
}

fn state_cell(state: BatchState) -> String {
    format!(
        "<span class=\"{0}\">{0}</span>",
        state.as_str() // a fixed word, not data
    )
}

fn progress_cells(b: &BatchView) -> String {
    let stages = b.stages();
    if stages.is_empty() {
        return "<td colspan=\"5\" class=\"note\">no ledger progress</td>".into();
    }
    stages
        .iter()
        .map(|(_, d, t)| format!("<td class=\"n\">{d}/{t}</td>"))
        .collect()
}

/// The home page; `backlog`: per stage, its recent backlog samples
/// (seconds ago, ready messages).
pub(crate) fn home(
    o: &Overview,
    backlog: &[(StageName, Vec<(f64, u32)>)],
    actions_enabled: bool,
) -> Html<String> {
    let mut b = String::from("<h1>engage fleet</h1>");
    if !actions_enabled {
        b.push_str(
            "<p class=\"note\">Read-only: actions (replay) are disabled because \
             ENGAGE_DASHBOARD_TOKEN is not set.</p>",
        );
    }
    b.push_str("<h2>Batches</h2>");
    if o.batches.is_empty() {
        b.push_str("<p class=\"note\">No batches in this namespace.</p>");
    } else {
        b.push_str(
            "<table id=\"batches\"><thead><tr><th>batch</th><th>state</th><th>clean</th>\
             <th>match</th><th>download</th><th>analyze</th><th>aggregate</th></tr></thead><tbody>",
        );
        for bv in &o.batches {
            let id = esc(&bv.id);
            let _ = write!(
                b,
                "<tr><td><a href=\"/batch/{id}\"><code>{id}</code></a></td><td>{}</td>{}</tr>",
                state_cell(bv.state),
                progress_cells(bv)
            );
        }
        b.push_str("</tbody></table>");
    }
    stages_section(&mut b, &o.queues, o.presence.as_ref(), backlog);
    workers_section(&mut b, o.presence.as_ref());
    b.push_str("<h2>Gemini limiter</h2>");
    match &o.pause {
        Some(p) => {
            let until = i64::try_from(p.until_ms)
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map_or_else(
                    || "?".into(),
                    |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                );
            let _ = write!(
                b,
                "<p class=\"halted\" id=\"pause\">Fleet paused until {} ({}s left), reason: Gemini {} quota. \
                 <span class=\"note\">End it early with <code>engage resume</code>.</span></p>",
                esc(&until),
                p.remaining.as_secs(),
                esc(&p.reason)
            );
        }
        None => b.push_str("<p id=\"pause\">Not paused.</p>"),
    }
    let _ = write!(
        b,
        "<p>Jobs parked on the wait ladder: <b id=\"parked\">{}</b></p>",
        opt(o.parked)
    );
    gemini_section(&mut b, o);
    page("fleet", true, &b)
}

/// Per stage: live workers, jobs finished per minute, backlog now and over
/// the last minutes, dead letters.
fn stages_section(
    b: &mut String,
    queues: &[StageQueues],
    presence: Option<&FleetPresence>,
    backlog: &[(StageName, Vec<(f64, u32)>)],
) {
    b.push_str(
        "<h2>Stages</h2><table id=\"stages\"><thead><tr><th>stage</th><th>workers</th>\
         <th>jobs finished per minute</th><th>backlog (ready)</th><th>backlog over time</th>\
         <th>dead letters</th></tr></thead><tbody>",
    );
    for q in queues {
        let s = q.stage;
        let live = presence.map(|p| {
            p.workers
                .iter()
                .filter(|w| w.stage == s && w.live())
                .count()
        });
        let tput = presence
            .and_then(|p| p.done_per_minute.iter().find(|(x, _)| *x == s))
            .map_or_else(
                || "<span class=\"note\">unknown</span>".to_string(),
                |(_, v)| charts::throughput(s, v),
            );
        let history = backlog
            .iter()
            .find(|(x, _)| *x == s)
            .map(|(_, v)| charts::backlog(s, v, WINDOW.as_secs_f64()))
            .unwrap_or_default();
        let _ = write!(
            b,
            "<tr id=\"stage-{s}\"><td>{s}</td><td class=\"n workers\">{}</td><td>{tput}</td>\
             <td class=\"n backlog\">{}</td><td>{history}</td>\
             <td class=\"n dead\"><a href=\"/dlq/{s}\">{}</a></td></tr>",
            opt(live),
            opt(q.backlog),
            opt(q.dead),
        );
    }
    b.push_str(
        "</tbody></table><p class=\"note\">Workers: processes of the stage heard from in the \
         last minute. Jobs finished per minute: jobs each stage completed (successfully or with \
         a failed item) in each of the last 30 minutes, from the workers' heartbeats; the \
         rightmost bar is the current minute. Backlog: messages ready in the stage's work queue, \
         now and as this page sampled it over the last 10 minutes (while it was open). \
         — : unknown (the queue does not exist yet, or RabbitMQ or Redis cannot be reached).</p>",
    );
}

/// The worker processes heard from lately.
fn workers_section(b: &mut String, presence: Option<&FleetPresence>) {
    b.push_str("<h2>Workers seen recently</h2>");
    let Some(p) = presence else {
        b.push_str("<p class=\"note\">Unknown: Redis cannot be reached.</p>");
        return;
    };
    if p.workers.is_empty() {
        b.push_str("<p class=\"note\" id=\"workers\">No worker has sent a heartbeat in the last 10 minutes.</p>");
        return;
    }
    b.push_str(
        "<table id=\"workers\"><thead><tr><th>stage</th><th>host</th><th>pid</th>\
         <th>last seen</th><th>state</th></tr></thead><tbody>",
    );
    for w in &p.workers {
        let state = if w.live() { "live" } else { "gone" }; // fixed words
        let _ = write!(
            b,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td>\
             <td class=\"n\">{}s ago</td><td class=\"{state}\">{state}</td></tr>",
            w.stage,
            esc(&w.host),
            w.pid,
            w.age.as_secs(),
        );
    }
    let _ = write!(
        b,
        "</tbody></table><p class=\"note\">A worker process writes a heartbeat every few \
         seconds; one silent for {}s is shown as gone (stopped, crashed or cut off from Redis) \
         and forgotten after 10 minutes. A worker that stops cleanly removes itself.</p>",
        LIVE.as_secs()
    );
}

/// The limiter's bookings against the quota, and the fleet's 429s.
fn gemini_section(b: &mut String, o: &Overview) {
    let Some(u) = &o.gemini else {
        b.push_str("<p class=\"note\">Limiter bookings unknown: Redis cannot be reached.</p>");
        return;
    };
    let (rpm, tpm, rpd) = o.quota;
    let colour = charts::colour(StageName::Analyze);
    let row = |label: &str, used: u64, limit: Option<u64>| {
        format!(
            "<tr><td>{label}</td><td class=\"n\">{used}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            limit.map_or_else(|| "no limit".into(), |l| l.to_string()),
            charts::gauge(label, used, limit, colour)
        )
    };
    b.push_str(
        "<table id=\"gemini\"><thead><tr><th>permits booked</th><th>used</th><th>quota</th>\
         <th></th></tr></thead><tbody>",
    );
    b.push_str(&row("requests, last minute", u.requests_minute, Some(rpm)));
    b.push_str(&row(
        "input tokens, last minute",
        u.tokens_minute,
        Some(tpm),
    ));
    b.push_str(&row("requests, last 24 h", u.requests_day, rpd));
    b.push_str("</tbody></table>");
    let total: u64 = u.rate_limited.iter().map(|(_, n)| n).sum();
    let by = if u.rate_limited.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = u
            .rate_limited
            .iter()
            .map(|(q, n)| format!("{} {n}", esc(q)))
            .collect();
        format!(" ({})", parts.join(", "))
    };
    let _ = write!(
        b,
        "<p>429 answers from Gemini, fleet-wide, last 24 h: <b id=\"r429\">{total}</b>{by}</p>\
         <p class=\"note\">Permits are the limiter's bookings (one per Gemini request, booked \
         before it is sent, including those booked ahead); the quota is this dashboard's \
         configuration (ENGAGE_GEMINI_RPM, _TPM, _RPD).</p>"
    );
}

/// The forms of the `scope` actions on `target`; `csrf` is `None` when
/// actions are disabled. Every form posts to `/action/{name}`.
fn action_forms(b: &mut String, scope: Scope, target: &str, csrf: Option<&str>) {
    let mut specs = actions::of_scope(scope).peekable();
    if specs.peek().is_none() {
        return;
    }
    let Some(csrf) = csrf else {
        b.push_str(
            "<p class=\"note\">Actions are disabled: ENGAGE_DASHBOARD_TOKEN is not set. \
             Use the CLI instead (e.g. <code>engage dlq replay STAGE</code>).</p>",
        );
        return;
    };
    let t = esc(target);
    for a in specs {
        let _ = write!(
            b,
            "<p>{}</p><form method=\"post\" action=\"/action/{name}\" class=\"action-{name}\">\
             <input type=\"hidden\" name=\"target\" value=\"{t}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label>Dashboard token <input type=\"password\" name=\"token\" autocomplete=\"off\" required></label>\
             <button type=\"submit\">{} {t}</button></form>",
            esc(&a.describe.replace("TARGET", target)),
            esc(csrf),
            esc(a.button),
            name = a.name,
        );
    }
}

/// A batch's page; `csrf` is `None` when actions are disabled.
pub(crate) fn batch(v: &BatchView, report: bool, csrf: Option<&str>) -> Html<String> {
    let id = esc(&v.id);
    let mut b = format!(
        "<h1>Batch <code>{id}</code></h1><p>State: {}</p>",
        state_cell(v.state)
    );
    if report {
        let _ = write!(
            b,
            "<p><a id=\"report\" href=\"/batch/{id}/report.html\">report.html</a></p>"
        );
    }
    b.push_str("<h2>Progress</h2>");
    let stages = v.stages();
    if stages.is_empty() {
        b.push_str("<p class=\"note\">The ledger no longer holds this batch's progress; its outputs are in the store.</p>");
    } else {
        b.push_str(
            "<table><thead><tr><th>stage</th><th>done</th><th>of</th><th></th></tr></thead><tbody>",
        );
        for (s, d, t) in stages {
            let _ = write!(
                b,
                "<tr><td>{s}</td><td class=\"n\">{d}</td><td class=\"n\">{t}</td>\
                 <td><meter min=\"0\" max=\"{}\" value=\"{d}\"></meter></td></tr>",
                t.max(1)
            );
        }
        b.push_str("</tbody></table>");
    }
    if let Some(p) = &v.progress {
        b.push_str("<h2>Failed items by reason</h2>");
        let failed = super::model::failed_by_reason(p);
        if failed.is_empty() {
            b.push_str("<p>None.</p>");
        } else {
            b.push_str("<table><thead><tr><th>reason</th><th>items</th></tr></thead><tbody>");
            for (r, n) in failed {
                let _ = write!(b, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(r));
            }
            b.push_str("</tbody></table>");
        }
    }
    b.push_str("<h2>Halts</h2>");
    if v.halts.is_empty() {
        b.push_str("<p>None.</p>");
    } else {
        b.push_str(
            "<p>Dead-lettered jobs stopped this batch. Fix the cause, then replay the stage:</p>\
             <table><thead><tr><th>stage</th><th>job</th><th>reason</th><th>error</th></tr></thead><tbody>",
        );
        for h in &v.halts {
            let _ = write!(
                b,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&h.stage),
                esc(&h.job_id),
                esc(&h.reason),
                esc(&h.error)
            );
        }
        b.push_str("</tbody></table><p>");
        for s in super::model::halted_stages(&v.halts) {
            let s = esc(&s);
            let _ = write!(b, "<a href=\"/dlq/{s}\">dead letters of {s}</a> ");
        }
        b.push_str("</p>");
    }
    action_forms(&mut b, Scope::Batch, &v.id, csrf);
    page(
        &format!("batch {}", v.id),
        v.state == BatchState::Running,
        &b,
    )
}

/// A stage's dead-letter page; `csrf` is `None` when actions are disabled.
pub(crate) fn dlq(stage: StageName, peek: Option<&DlqPeek>, csrf: Option<&str>) -> Html<String> {
    let mut b = format!("<h1>Dead letters of {stage}</h1>");
    match peek {
        None => b.push_str(
            "<p>The dead-letter queue does not exist yet: nothing was dead-lettered.</p>",
        ),
        Some(p) => {
            let _ = write!(
                b,
                "<p><b id=\"count\">{}</b> dead-lettered{}.</p>",
                p.count,
                if p.letters.len() < p.count as usize {
                    format!(" (the first {DLQ_SHOWN} shown)")
                } else {
                    String::new()
                }
            );
            if !p.letters.is_empty() {
                b.push_str(
                    "<table id=\"letters\"><thead><tr><th>job</th><th>reason</th><th>attempts</th>\
                     <th>error</th></tr></thead><tbody>",
                );
                for l in &p.letters {
                    let _ = write!(
                        b,
                        "<tr><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                        esc(&l.job_id),
                        esc(&l.reason),
                        esc(&l.attempts),
                        esc(&l.error)
                    );
                }
                b.push_str("</tbody></table>");
            }
        }
    }
    b.push_str("<h2>Replay</h2>");
    action_forms(&mut b, Scope::Stage, stage.as_str(), csrf);
    page(&format!("dlq {stage}"), false, &b)
}

/// The answer to an action.
pub(crate) fn action_done(d: &Done) -> Html<String> {
    let mut b = format!("<h1>{}</h1>", esc(&d.title));
    for (i, l) in d.lines.iter().enumerate() {
        let id = if i == 0 { " id=\"result\"" } else { "" };
        let _ = write!(b, "<p{id}>{}</p>", esc(l));
    }
    let _ = write!(b, "<p><a href=\"{0}\">Back to {0}</a></p>", esc(&d.back));
    page(&d.title, false, &b)
}

/// An error page.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Html<String> {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    page(
        &title,
        false,
        &format!(
            "<h1>{}</h1><p id=\"error\">{}</p>",
            esc(&title),
            esc(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::DeadLetter;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script>&\"\u{7}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\u{fffd}"
        );
    }

    #[test]
    fn dead_letter_errors_are_escaped() {
        let peek = DlqPeek {
            count: 1,
            letters: vec![DeadLetter {
                job_id: "plan:b\"><img src=x>".into(),
                batch: "b".into(),
                reason: "poison".into(),
                attempts: "1".into(),
                error: "<script>alert(1)</script>".into(),
                dead_lettered_at: String::new(),
            }],
        };
        let Html(h) = dlq(StageName::Clean, Some(&peek), Some("abc"));
        assert!(!h.contains("<script>alert"));
        assert!(!h.contains("<img src=x>"));
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(h.contains("name=\"csrf\" value=\"abc\""));
        assert!(h.contains("action=\"/action/replay\""));
        assert!(h.contains("name=\"target\" value=\"clean\""));
        let Html(ro) = dlq(StageName::Clean, Some(&peek), None);
        assert!(!ro.contains("<form"));
        assert!(ro.contains("Actions are disabled"));
    }
}
