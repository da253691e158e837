//! Headless Chromium driven over the Chrome DevTools Protocol: open a page,
//! read its live DOM, run a line of script in it (typing into a form and
//! submitting it, as a user would), wait for the next page.
//!
//! Debian's `chromium` is required (`CHROMIUM` names another binary): a test
//! using this fails rather than skips without it. The protocol runs over a
//! WebSocket (`tungstenite`, blocking); Chromium is started with
//! `--remote-debugging-port=0` and says on stderr where it listens.
//! Script run through the protocol is not subject to the page's
//! Content-Security-Policy, so pages that allow no script can be driven.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The Chromium binary: `CHROMIUM`, else `chromium`/`chromium-browser`/`google-chrome` on `PATH`.
pub fn chromium() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|b| dirs.iter().map(move |d| d.join(b)))
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "headless Chromium is required for this test: \
                 `apt-get install -y chromium` (or set CHROMIUM)"
            )
        })
}

/// `GET /json/list` of the DevTools endpoint (it answers HTTP/1.1 only and
/// keeps the connection open: the body is read by its `Content-Length`).
fn json_list(hostport: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(hostport)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /json/list HTTP/1.1\r\nHost: {hostport}\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            anyhow::ensure!(head.contains(" 200 "), "/json/list: {head}");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| anyhow::anyhow!("no Content-Length: {head}"))?;
            if body.len() >= len {
                return Ok(body[..len].to_string());
            }
        }
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "DevTools closed the connection: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One headless Chromium with one page, killed on drop.
pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium with its profile in `profile` and attaches to its page.
    pub fn launch(profile: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(chromium()?)
            .args([
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1280,1600",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        // Read stderr on a thread (it must keep draining); the first
        // "DevTools listening on ws://HOST:PORT/..." line is the endpoint.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                    sent = true;
                }
            }
        });
        let browser_url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!("chromium did not open its DevTools endpoint");
            }
        };
        let hostport = browser_url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| anyhow::anyhow!("odd DevTools URL {browser_url}"))?
            .to_string();
        let body = json_list(&hostport)?;
        let targets: Vec<Value> = serde_json::from_str(&body)?;
        let page_ws = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .ok_or_else(|| anyhow::anyhow!("no page target in {body}"))?;
        let (ws, _) = tungstenite::connect(page_ws)?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
        }
        Ok(Self {
            child,
            ws,
            next_id: 0,
        })
    }

    /// One protocol call: its `result`, or its error.
    fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(msg.to_string()))?;
        loop {
            let Message::Text(t) = self.ws.read()? else {
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["id"] != id {
                continue; // an event, or an older answer
            }
            if !v["error"].is_null() {
                anyhow::bail!("{method}: {}", v["error"]);
            }
            return Ok(v["result"].clone());
        }
    }

    /// Evaluates `expr` in the page; its value (JSON).
    pub fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        )?;
        if !r["exceptionDetails"].is_null() {
            anyhow::bail!("script failed: {}", r["exceptionDetails"]);
        }
        Ok(r["result"]["value"].clone())
    }

    /// The page's live DOM.
    pub fn html(&mut self) -> anyhow::Result<String> {
        Ok(self
            .eval("document.documentElement.outerHTML")?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", json!({"url": url}))?;
        self.wait_for_path(
            url.split_once("://")
                .and_then(|(_, r)| r.find('/').map(|i| &r[i..]))
                .unwrap_or("/"),
        )
    }

    /// Waits (at most 30 s) until the page at `path` has loaded.
    pub fn wait_for_path(&mut self, path: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let check = format!(
            "location.pathname === {} && document.readyState === 'complete'",
            json!(path)
        );
        loop {
            // While a navigation replaces the page the call may fail: retry.
            if self.eval(&check).ok() == Some(Value::Bool(true)) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the page {path} did not load");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls the page's DOM (at most `timeout`) until `f` finds what it wants.
    pub fn wait_dom<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            // A reload (the page's refresh) may be under way: retry.
            if let Ok(h) = self.html() {
                if let Some(t) = f(&h) {
                    return Ok(t);
                }
                last = h;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page: {last}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
