//! The pages, rendered on the server as plain HTML: no script, inline
//! style only, nothing fetched. Every string that comes from the fleet
//! (batch ids, reasons, job ids, error texts) goes through [`esc`]; the
//! pages never show a message body, so no learner id reaches them.

use std::fmt::Write as _;

use axum::http::StatusCode;
use axum::response::Html;
use engage_model::envelope::StageName;

use super::model::{BatchState, BatchView, DLQ_SHOWN, Overview};
use crate::fleet::{DlqPeek, Replayed};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;color:#222;margin:0 auto;max-width:1100px;padding:0 16px 40px}\
h1{font-size:21px}h2{font-size:17px;margin-top:26px}table{border-collapse:collapse;margin:6px 0 12px}\
th,td{padding:3px 8px;border:1px solid #ddd;text-align:left;vertical-align:top}th{background:#f4f4f4}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.running{color:#0072b2}.complete{color:#009e73}\
.halted{color:#d55e00;font-weight:bold}.unknown{color:#777}.note{color:#555}code{word-break:break-all}\
meter{width:140px}nav a{margin-right:12px}form{margin:10px 0}input{margin-right:6px}";

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

/// The home page.
pub(crate) fn home(o: &Overview, actions_enabled: bool) -> Html<String> {
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
    b.push_str(
        "<h2>Queues</h2><table id=\"queues\"><thead><tr><th>stage</th><th>backlog</th>\
         <th>dead letters</th></tr></thead><tbody>",
    );
    for q in &o.queues {
        let _ = write!(
            b,
            "<tr><td>{s}</td><td class=\"n\">{}</td><td class=\"n\"><a href=\"/dlq/{s}\">{}</a></td></tr>",
            opt(q.backlog),
            opt(q.dead),
            s = q.stage
        );
    }
    b.push_str("</tbody></table><p class=\"note\">— : the queue does not exist yet or RabbitMQ cannot be reached.</p>");
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
    page("fleet", true, &b)
}

/// A batch's page.
pub(crate) fn batch(v: &BatchView, report: bool) -> Html<String> {
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
    match csrf {
        Some(csrf) => {
            let _ = write!(
                b,
                "<p>Moves every decodable dead letter of {stage} back to its work queue (attempts \
                 reset), like <code>engage dlq replay {stage}</code>; undecodable ones stay.</p>\
                 <form method=\"post\" action=\"/dlq/{stage}/replay\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <label>Dashboard token <input type=\"password\" name=\"token\" autocomplete=\"off\" required></label>\
                 <button type=\"submit\">Replay {stage}</button></form>",
                esc(csrf)
            );
        }
        None => b.push_str(
            "<p class=\"note\">Actions are disabled: ENGAGE_DASHBOARD_TOKEN is not set. \
             Use <code>engage dlq replay STAGE</code>.</p>",
        ),
    }
    page(&format!("dlq {stage}"), false, &b)
}

/// The answer to a replay.
pub(crate) fn replayed(stage: StageName, r: Replayed) -> Html<String> {
    let mut b = format!(
        "<h1>Replayed {stage}</h1><p id=\"result\">{stage}: replayed {}; {} undecodable left in the \
         dead-letter queue</p>",
        r.replayed, r.undecodable
    );
    if r.reopened > 0 {
        let _ = write!(
            b,
            "<p>Reopened {} dead-lettered items; their batches' reports are rewritten when the \
             replayed jobs finish.</p>",
            r.reopened
        );
    }
    let _ = write!(
        b,
        "<p><a href=\"/dlq/{stage}\">Back to the dead letters of {stage}</a></p>"
    );
    page(&format!("replayed {stage}"), false, &b)
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
        let Html(ro) = dlq(StageName::Clean, Some(&peek), None);
        assert!(!ro.contains("<form"));
        assert!(ro.contains("Actions are disabled"));
    }
}
