//! `report.html` end to end: learners with hostile ids go through the fleet
//! and through `engage run`, the two pages are byte-identical, and headless
//! Chromium (Debian's `chromium`, required: this test fails rather than skips
//! without it) loads the page from `file://` under its Content-Security-Policy
//! with the charts and tables in the DOM, the hostile ids as text, the inline
//! script run (it adds the learner filter) and no CSP violation logged.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::support::fleet::{Backend, Dataset, Fleet};

/// Learner ids that would run script if they were not escaped.
const HOSTILE: [&str; 2] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
];

/// Adds the hostile learners: sessions (phase `<b>P9</b>`) and one response
/// each, reusing an audio object of the dataset.
fn add_hostile_learners(data: &Dataset) -> anyhow::Result<()> {
    let mut sessions = std::fs::OpenOptions::new()
        .append(true)
        .open(&data.sessions)?;
    let mut activity = std::fs::OpenOptions::new()
        .append(true)
        .open(&data.activity)?;
    // The generated log holds deliberately bad lines, some not UTF-8.
    let audio = String::from_utf8_lossy(&std::fs::read(&data.activity)?)
        .lines()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let u = v["audio_url"].as_str()?;
            u.starts_with("s3://").then(|| u.to_string())
        })
        .ok_or_else(|| anyhow::anyhow!("no s3:// audio in the dataset"))?;
    for (i, id) in HOSTILE.iter().enumerate() {
        let quoted = format!("\"{}\"", id.replace('"', "\"\""));
        writeln!(
            sessions,
            "{quoted},EVIL-{i},2024-03-05T00:06:50Z,M1,<b>P9</b>,50,<b>P9</b>"
        )?;
        let line = serde_json::json!({
            "userId": id,
            "language": "en",
            "ets": 1_709_597_270_000_i64,
            "audio_url": audio,
            "accuracy": 80.0,
        });
        writeln!(activity, "{line}")?;
    }
    Ok(())
}

/// Runs headless Chromium on `page` with `args`; returns (stdout, stderr).
fn browse(page: &Path, profile: &Path, args: &[&str]) -> anyhow::Result<(String, String)> {
    let out = Command::new(crate::support::browser::chromium()?)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn report_html_is_the_same_in_the_fleet_and_renders_in_a_browser() -> anyhow::Result<()> {
    let mut f = Fleet::new("html", Backend::Local, 10, 6)?;
    add_hostile_learners(&f.data)?;
    // Several clean pieces: the rejects' examples must not depend on them.
    f.env
        .insert("ENGAGE_CLEAN_PIECE_BYTES".into(), "4096".into());
    f.env.insert("ENGAGE_PARTITIONS".into(), "4".into());
    f.start_all()?;
    let batch = f.enqueue()?;
    let out = f.wait_and_report(&batch, 120)?;
    let reference = f.reference()?;
    let page = reference.join("report.html");
    let html = std::fs::read(&page)?;
    assert!(
        html == std::fs::read(out.join("report.html"))?,
        "report.html differs between engage run and the fleet"
    );
    let text = String::from_utf8_lossy(&html);
    assert!(text.contains("Rejections by reason") && text.contains("<li>byte "));
    let status = f.status(&batch)?;
    let (_, pieces) = crate::support::fleet::stage_progress(&status, "clean")
        .ok_or_else(|| anyhow::anyhow!("no clean progress in {status:?}"))?;
    assert!(pieces >= 2, "the activity log was not split: {status}");

    let profile = f.dir.path().join("chromium-profile");
    let (dom, log) = browse(&page, &profile, &["--dump-dom"])?;
    assert!(!log.contains("Refused to"), "CSP violation: {log}");
    // Charts and tables are in the DOM.
    assert!(dom.matches("<svg").count() >= 7, "{dom}");
    for title in [
        "Average engagement score",
        "Average emotional score",
        "Average accuracy",
        "Engagement state",
        "Dominant emotion",
        "Phase duration and gap",
    ] {
        assert!(dom.contains(title), "no chart {title:?}");
    }
    assert!(dom.contains("<table id=\"lt\">"), "no learner table");
    assert!(
        dom.matches("<section class=\"ld\"").count() >= 12,
        "learner details missing"
    );
    // The inline script ran under the CSP: it adds the filter box.
    assert!(
        dom.contains("type=\"search\""),
        "the inline script did not run"
    );
    // Hostile ids and phases are text, not markup.
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "a script element from the data"
    );
    assert!(!dom.contains("<img"), "an img element from the data");
    assert!(!dom.contains("<b>P9"), "markup from a phase name");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(dom.contains("\"&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert!(dom.contains("&lt;b&gt;P9&lt;/b&gt;"));

    let png = f.dir.path().join("report.png");
    browse(
        &page,
        &profile,
        &[
            "--hide-scrollbars",
            "--window-size=1280,2400",
            &format!("--screenshot={}", png.display()),
        ],
    )?;
    let shot = std::fs::metadata(&png)?.len();
    assert!(shot > 20_000, "screenshot is only {shot} bytes");
    Ok(())
}
