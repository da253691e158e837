//! `engage dashboard`: served by the real CLI over a real fleet, read and
//! driven with plain HTTP (and, when it is installed, headless Chromium).
//! The home page follows a batch to `complete`; the batch page serves the
//! same `report.html` as `engage report`; dead letters show on the DLQ page,
//! escaped; a replay is refused without the operator token, with a wrong
//! CSRF token, from another origin or Host, and done with both tokens. The
//! home page shows per stage its live worker, jobs finished per minute and
//! backlog, and each worker process. Then headless Chromium (required)
//! watches a second batch complete, is refused a replay submitted without
//! the token, and replays with it; a worker stopped cleanly leaves the page.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};

use crate::support::browser::Browser;
use crate::support::fleet::{Backend, Fleet, STAGES, amqp, bin_dir, free_port, poll, queue_len};

const TOKEN: &str = "operator-s3cret token";

/// The dashboard process, killed on drop.
struct Dashboard {
    addr: String,
    child: Child,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dashboard {
    async fn start(f: &Fleet) -> anyhow::Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin_dir().join("engage"))
            .envs(&f.env)
            .env("ENGAGE_DASHBOARD_TOKEN", TOKEN)
            .args(["dashboard", "--listen", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                f.dir.path().join("logs/dashboard.log"),
            )?)
            .spawn()?;
        let d = Self { addr, child };
        let log = f.dir.path().join("logs/dashboard.log");
        poll(
            "the dashboard to answer",
            Duration::from_secs(30),
            || async { Ok(d.get("/").ok().filter(|r| r.code == 200).map(|_| ())) },
        )
        .await
        .map_err(|e| {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let home = d
                .get("/")
                .map(|r| r.text())
                .unwrap_or_else(|e| e.to_string());
            anyhow::anyhow!("{e}\n{said}\n{home}")
        })?;
        Ok(d)
    }

    fn get(&self, path: &str) -> anyhow::Result<Reply> {
        request(&self.addr, "GET", path, &[], b"")
    }

    fn page(&self, path: &str) -> anyhow::Result<String> {
        let r = self.get(path)?;
        anyhow::ensure!(r.code == 200, "GET {path}: {} {}", r.code, r.text());
        Ok(r.text())
    }

    /// POSTs a form to the replay action on `stage` (the form gets its `target`).
    fn replay(&self, stage: &str, form: &str, extra: &[(&str, &str)]) -> anyhow::Result<Reply> {
        self.action("replay", stage, form, extra)
    }

    /// POSTs a form to action `name` on `target`.
    fn action(
        &self,
        name: &str,
        target: &str,
        form: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let form = format!("target={target}&{form}");
        let origin = format!("http://{}", self.addr);
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("origin")) {
            headers.push(("Origin", origin.as_str()));
        }
        headers.extend_from_slice(extra);
        request(
            &self.addr,
            "POST",
            &format!("/action/{name}"),
            &headers,
            form.as_bytes(),
        )
    }
}

struct Reply {
    code: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// A plain HTTP/1.0 request with `Host: addr` unless `extra` names one.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Reply> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\n");
    if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req += &format!("Host: {addr}\r\n");
    }
    for (k, v) in extra {
        req += &format!("{k}: {v}\r\n");
    }
    req += &format!("Content-Length: {}\r\n\r\n", body.len());
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header in the answer"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Reply {
        code,
        head,
        body: buf[split + 4..].to_vec(),
    })
}

/// The state cell of `batch`'s row on the home page.
fn home_state(home: &str, batch: &str) -> Option<String> {
    let row = home
        .split("<tr>")
        .find(|r| r.contains(&format!("<code>{batch}</code>")))?;
    let rest = row.split("<span class=\"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

/// `stage`'s row in the home page's stages table.
fn stage_row<'a>(home: &'a str, stage: &str) -> Option<&'a str> {
    let start = home.find(&format!("<tr id=\"stage-{stage}\">"))?;
    let rest = &home[start..];
    Some(&rest[..rest.find("</tr>")?])
}

/// Jobs `stage` finished in the charted half hour, from its chart's title.
fn stage_done(home: &str, stage: &str) -> Option<u64> {
    let row = stage_row(home, stage)?;
    let title = row.split("<svg class=\"tput\"").nth(1)?;
    title
        .split(" minutes (")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// The state on a batch's page.
fn batch_state(page: &str) -> Option<String> {
    let rest = page.split("State: <span class=\"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

fn csrf(page: &str) -> Option<String> {
    let rest = page.split("name=\"csrf\" value=\"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

fn dlq_count(page: &str) -> Option<u32> {
    page.split("<b id=\"count\">")
        .nth(1)?
        .split('<')
        .next()?
        .parse()
        .ok()
}

/// Percent-encodes a form value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_fleet_and_replays_with_both_tokens() -> anyhow::Result<()> {
    let mut f = Fleet::new("dashboard", Backend::Local, 4, 3)?;
    let mut pids = Vec::new();
    for s in STAGES {
        pids.push((s, f.start(s)?));
    }
    let d = Dashboard::start(&f).await?;

    // Security headers on every page; unknown things are 404 pages.
    let home = d.get("/")?;
    assert_eq!(
        home.header("content-security-policy").as_deref(),
        Some("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'")
    );
    assert_eq!(home.header("x-frame-options").as_deref(), Some("DENY"));
    // `no-referrer` would make browsers send `Origin: null` with the forms.
    assert_eq!(
        home.header("referrer-policy").as_deref(),
        Some("same-origin")
    );
    for p in [
        "/batch/no-such-batch",
        "/batch/..",
        "/batch/a%2Fb/report.html",
        "/dlq/nope",
        "/nope",
    ] {
        assert_eq!(d.get(p)?.code, 404, "{p}");
    }
    // Another Host (DNS rebinding) is not answered.
    let rebound = request(&d.addr, "GET", "/", &[("Host", "evil.example")], b"")?;
    assert_eq!(rebound.code, 421);

    // A batch: listed, and followed to complete.
    let batch = f.enqueue()?;
    poll(
        "the batch complete on the home page",
        Duration::from_secs(180),
        || async {
            let home = d.page("/")?;
            Ok((home_state(&home, &batch).as_deref() == Some("complete")).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", f.logs()))?;
    // Per stage: its worker is live, it finished jobs this half hour, its
    // backlog is known and charted; the workers table lists each process.
    let home = poll(
        "every stage's finished jobs on the home page",
        Duration::from_secs(30),
        || async {
            let home = d.page("/")?;
            Ok(STAGES
                .iter()
                .all(|s| stage_done(&home, s).is_some_and(|n| n > 0))
                .then_some(home))
        },
    )
    .await?;
    for (s, pid) in &pids {
        let row = stage_row(&home, s).ok_or_else(|| anyhow::anyhow!("no {s} row: {home}"))?;
        assert!(row.contains("<td class=\"n workers\">1</td>"), "{row}");
        assert!(row.contains("<td class=\"n backlog\">0</td>"), "{row}");
        assert!(row.contains("<svg class=\"tput\""), "{row}");
        assert!(row.contains("<svg class=\"backlog\""), "{row}");
        let worker = format!("<tr><td>{s}</td><td><code>");
        let listed = home
            .split("<table id=\"workers\">")
            .nth(1)
            .unwrap_or_default()
            .split("<tr>")
            .any(|r| {
                format!("<tr>{r}").starts_with(&worker)
                    && r.contains(&format!(">{pid}</td>"))
                    && r.contains(">live<")
            });
        assert!(listed, "worker {s}/{pid} not listed live: {home}");
    }
    // The Gemini limiter: bookings against the configured quota.
    assert!(home.contains("<table id=\"gemini\">"), "{home}");
    assert!(home.contains("<b id=\"r429\">0</b>"), "{home}");
    let page = d.page(&format!("/batch/{batch}"))?;
    let link = format!("href=\"/batch/{batch}/report.html\"");
    assert!(page.contains(&link), "{page}");
    let served = d.get(&format!("/batch/{batch}/report.html"))?;
    assert_eq!(served.code, 200);
    assert!(
        served
            .header("content-security-policy")
            .is_some_and(|c| c.contains("sandbox"))
    );
    let out = f.dir.path().join("report-out");
    let o = f.engage(&["report", &batch, "--out", &out.display().to_string()])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        served.body == std::fs::read(out.join("report.html"))?,
        "report.html differs"
    );

    // Dead letters: an undecodable message, a hostile dead letter (its
    // error text is data), and a batch whose activity file is missing.
    let conn = amqp().await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(Default::default()).await?;
    let dlq = format!("{}.clean.dlq", f.ns);
    ch.basic_publish(
        format!("{}.jobs", f.ns).as_str().into(),
        "clean".into(),
        BasicPublishOptions::default(),
        b"{not json",
        BasicProperties::default(),
    )
    .await?
    .await?;
    let mut h = FieldTable::default();
    let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    h.insert(
        "x-engage-reason".into(),
        AMQPValue::LongString("poison".into()),
    );
    h.insert(
        "x-engage-error".into(),
        AMQPValue::LongString(hostile.into()),
    );
    ch.basic_publish(
        "".into(),
        dlq.as_str().into(),
        BasicPublishOptions::default(),
        b"{also not json",
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id("\"><b>job</b>".into())
            .with_headers(h),
    )
    .await?
    .await?;
    let missing = f.dir.path().join("late-activity.jsonl");
    let late = f.enqueue_activity(&missing)?;
    let dlq_page = poll(
        "three dead letters on the DLQ page",
        Duration::from_secs(60),
        || async {
            let p = d.page("/dlq/clean")?;
            Ok((dlq_count(&p) == Some(3)).then_some(p))
        },
    )
    .await?;
    assert!(dlq_page.contains("undecodable"), "{dlq_page}");
    assert!(dlq_page.contains("activity file not found"), "{dlq_page}");
    assert!(
        !dlq_page.contains(hostile) && !dlq_page.contains("<script>"),
        "{dlq_page}"
    );
    assert!(!dlq_page.contains("<b>job</b>"), "{dlq_page}");
    assert!(
        dlq_page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{dlq_page}"
    );
    // A batch halted at its plan is not in the ledger's batch list; its
    // page says halted, by what, and where to replay.
    let halted = d.page(&format!("/batch/{late}"))?;
    assert_eq!(batch_state(&halted).as_deref(), Some("halted"), "{halted}");
    assert!(halted.contains("activity file not found"), "{halted}");
    assert!(halted.contains("href=\"/dlq/clean\""), "{halted}");

    // Refused: no operator token, a wrong one, a wrong CSRF token, another
    // origin, another Host. Nothing moves.
    std::fs::copy(&f.data.activity, &missing)?;
    let token = csrf(&dlq_page).ok_or_else(|| anyhow::anyhow!("no CSRF token: {dlq_page}"))?;
    let good = format!("csrf={token}&token={}", enc(TOKEN));
    // The same length, one digit different.
    let first = if token.starts_with('0') { "1" } else { "0" };
    let wrong = format!("{first}{}", &token[1..]);
    let refused = [
        d.replay("clean", &format!("csrf={token}"), &[])?,
        d.replay("clean", &format!("csrf={token}&token=wrong"), &[])?,
        d.replay("clean", &format!("csrf={wrong}&token={}", enc(TOKEN)), &[])?,
        d.replay("clean", &format!("token={}", enc(TOKEN)), &[])?,
        d.replay("clean", &good, &[("Origin", "http://evil.example")])?,
    ];
    for (i, r) in refused.iter().enumerate() {
        assert_eq!(r.code, 403, "refusal {i}: {}", r.text());
    }
    let r = d.replay("clean", &good, &[("Host", "evil.example")])?;
    assert_eq!(r.code, 421, "{}", r.text());
    assert_eq!(queue_len(&conn, &dlq).await?, 3);

    // Both tokens (the operator token as a Bearer header here): replayed;
    // the undecodable two stay, and the batch completes.
    let bearer = format!("Bearer {TOKEN}");
    let r = d.replay(
        "clean",
        &format!("csrf={token}"),
        &[("Authorization", &bearer)],
    )?;
    assert_eq!(r.code, 200, "{}", r.text());
    assert!(
        r.text().contains("clean: replayed 1; 2 undecodable left"),
        "{}",
        r.text()
    );
    poll(
        "the replayed batch complete",
        Duration::from_secs(180),
        || async {
            // Between the replay and its plan the ledger does not know it (404).
            let page = d.get(&format!("/batch/{late}"))?.text();
            Ok((batch_state(&page).as_deref() == Some("complete")).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", f.logs()))?;
    assert_eq!(queue_len(&conn, &dlq).await?, 2);

    // The batch page offers the batch actions; the batch's state decides.
    let page = d.page(&format!("/batch/{late}"))?;
    for name in ["retry", "pause", "resume", "cancel"] {
        assert!(
            page.contains(&format!("action=\"/action/{name}\"")),
            "no {name} form: {page}"
        );
    }
    let r = d.action("pause", &late, &format!("csrf={token}"), &[])?;
    assert_eq!(r.code, 403, "no token, no pause: {}", r.text());
    let r = d.action("pause", &late, &good, &[])?;
    assert_eq!(
        r.code,
        409,
        "a complete batch cannot be paused: {}",
        r.text()
    );
    let r = d.action("retry", &late, &good, &[])?;
    assert_eq!(r.code, 200, "{}", r.text());
    assert!(
        r.text().contains(&format!("{late}: retried ")),
        "{}",
        r.text()
    );
    let r = d.action("cancel", "no-such-batch", &good, &[])?;
    assert_eq!(r.code, 404, "{}", r.text());

    // The same in a real browser (headless Chromium over the DevTools
    // protocol): it watches a batch complete, sees the charts, submits the
    // Replay form without the operator token and is refused, then types the
    // token and replays.
    let mut b = Browser::launch(&f.dir.path().join("cdp-profile"))?;
    let base = format!("http://{}", d.addr);
    b.goto(&format!("{base}/"))?;
    let second = f.enqueue()?;
    // The home page reloads itself every 5 s: the browser sees the change.
    b.wait_dom(
        "the second batch complete in the browser",
        Duration::from_secs(180),
        |h| (home_state(h, &second).as_deref() == Some("complete")).then_some(()),
    )?;
    let dom = b.html()?;
    assert_eq!(dom.matches("<svg class=\"tput\"").count(), 5, "{dom}");
    assert_eq!(dom.matches("<svg class=\"backlog\"").count(), 5, "{dom}");
    assert!(dom.contains("<table id=\"workers\">"), "{dom}");
    let missing2 = f.dir.path().join("late-activity-2.jsonl");
    let late2 = f.enqueue_activity(&missing2)?;
    poll(
        "the new dead letter on the DLQ page",
        Duration::from_secs(60),
        || async { Ok((dlq_count(&d.page("/dlq/clean")?) == Some(3)).then_some(())) },
    )
    .await?;
    std::fs::copy(&f.data.activity, &missing2)?;
    b.goto(&format!("{base}/dlq/clean"))?;
    // Submitted without the token (`submit()` skips the `required` check).
    b.eval("document.querySelector('form.action-replay').submit()")?;
    b.wait_for_path("/action/replay")?;
    let refused = b.html()?;
    assert!(
        refused.contains("403 Forbidden") && refused.contains("missing or wrong dashboard token"),
        "{refused}"
    );
    assert_eq!(queue_len(&conn, &dlq).await?, 3);
    b.goto(&format!("{base}/dlq/clean"))?;
    b.eval(&format!(
        "document.querySelector('form.action-replay input[name=token]').value = {}; \
         document.querySelector('form.action-replay button').click(); true",
        serde_json::json!(TOKEN)
    ))?;
    b.wait_for_path("/action/replay")?;
    let done = b.html()?;
    assert!(
        done.contains("clean: replayed 1; 2 undecodable left"),
        "{done}"
    );
    poll(
        "the batch replayed from the browser complete",
        Duration::from_secs(180),
        || async {
            let page = d.get(&format!("/batch/{late2}"))?.text();
            Ok((batch_state(&page).as_deref() == Some("complete")).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", f.logs()))?;
    b.goto(&format!("{base}/batch/{late2}"))?;
    let page = b.html()?;
    assert_eq!(batch_state(&page).as_deref(), Some("complete"), "{page}");
    drop(b);

    // A worker that stops cleanly leaves: its stage shows no live worker.
    let statuses = f.signal("match", "TERM");
    assert!(statuses.iter().all(|s| s.success()), "{statuses:?}");
    let home = d.page("/")?;
    let row = stage_row(&home, "match").ok_or_else(|| anyhow::anyhow!("no match row"))?;
    assert!(row.contains("<td class=\"n workers\">0</td>"), "{row}");
    assert!(!home.contains("<tr><td>match</td><td><code>"), "{home}");

    Ok(())
}
