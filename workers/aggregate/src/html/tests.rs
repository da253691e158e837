//! Tests of the page: hostile text stays text, the bytes depend only on the
//! data, every chart is well-formed XML, an empty batch renders, and (ignored
//! by default) the size and render time at 10,000 learners.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use engage_model::summary::Summary;
use engage_model::{
    ActivityRecord, AnalysisOutcome, AnalysisResult, AudioQuality, DominantEmotion,
    EngagementState, MatchedRecord, PronunciationQuality, SessionMatch,
};

use super::*;
use crate::domain::{Weights, aggregate_all};

/// A small deterministic generator (SplitMix64), so no test depends on a seed
/// of an outside crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn score(&mut self) -> f64 {
        (self.below(100_000) as f64) / 1000.0
    }
}

const PHASES: [&str; 10] = ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "S1", "S2"];

/// A batch of `learners` learners with `per` responses each, spread over the
/// phases; some unmatched, some without audio, some failed.
struct Batch {
    records: Vec<MatchedRecord>,
    outcomes: BTreeMap<String, AnalysisOutcome>,
    rows: Vec<ReportRow>,
    summary: Summary,
    rejects: RejectExamples,
}

impl Batch {
    fn new(ids: &[String], per: usize, phases: &[&str], seed: u64) -> Self {
        let mut rng = Rng(seed);
        let mut records = Vec::new();
        let mut outcomes = BTreeMap::new();
        for (li, id) in ids.iter().enumerate() {
            let mut t: i64 = 1_700_000_000_000_000_000 + li as i64 * 1_000_000_000;
            for k in 0..per {
                t += (rng.below(600) as i64 + 1) * 1_000_000_000;
                let phase = phases[(k * phases.len() / per.max(1)).min(phases.len() - 1)];
                let rid = format!("{:032x}", rng.next() as u128 * 31 + li as u128);
                let matched = rng.below(20) != 0;
                let audio = rng.below(25) != 0;
                records.push(MatchedRecord {
                    record: ActivityRecord {
                        response_id: rid.clone(),
                        user_id: id.clone(),
                        timestamp: t,
                        audio_url: audio.then(|| format!("s3://learner-audio/{rid}.wav")),
                        accuracy: (rng.below(10) != 0).then(|| rng.score()),
                        original_text: None,
                        response_text: None,
                        session_id: None,
                        sub_session_id: None,
                    },
                    session: matched.then(|| SessionMatch {
                        session_id: format!("s{k}"),
                        created_at: t,
                        milestone: "M1".into(),
                        lesson: phase.into(),
                        phase: phase.into(),
                        progress: "1".into(),
                    }),
                });
                if matched && audio {
                    let o = if rng.below(30) == 0 {
                        AnalysisOutcome::Failed {
                            reason: "audio_missing".into(),
                            detail: format!("no object <b>{rid}</b>"),
                        }
                    } else {
                        AnalysisOutcome::Ok(AnalysisResult {
                            emotional_score: rng.score(),
                            engagement_score: rng.score(),
                            dominant_emotion: DominantEmotion::ALL
                                [rng.below(DominantEmotion::ALL.len() as u64) as usize],
                            engagement_state: EngagementState::ALL
                                [rng.below(EngagementState::ALL.len() as u64) as usize],
                            pronunciation_quality: PronunciationQuality::Good,
                            audio_quality: AudioQuality::Good,
                            analyzer: "acoustic:1".into(),
                        })
                    };
                    outcomes.insert(rid, o);
                }
            }
        }
        let by_id: HashMap<String, AnalysisOutcome> = outcomes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let rows = aggregate_all(&records, &by_id, &Weights::default());
        let mut summary = Summary::default();
        crate::outputs::count_into(&mut summary, &records, &outcomes, &rows);
        summary.activity.read = records.len() as u64 + 3;
        summary.activity.kept = records.len() as u64;
        summary.activity.rejected.insert("invalid_json".into(), 2);
        summary.sessions.rejected.insert("bad_timestamp".into(), 1);
        let rejects = RejectExamples::from_jsonl(
            br#"{"line":3,"offset":40,"reason":"invalid_json","detail":"expected value","excerpt":"<script>alert(1)</script>"}
{"line":7,"offset":90,"reason":"invalid_json","detail":"x","excerpt":"{\"a\":"}
{"source":"sessions","row":2,"reason":"bad_timestamp","detail":"\"><img src=x onerror=alert(1)>"}
"#,
        );
        Self {
            records,
            outcomes,
            rows,
            summary,
            rejects,
        }
    }

    fn input(&self) -> HtmlInput<'_> {
        HtmlInput {
            records: &self.records,
            outcomes: &self.outcomes,
            rows: &self.rows,
            summary: &self.summary,
            rejects: &self.rejects,
        }
    }
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("learner-{i:05}")).collect()
}

/// Checks that every `<svg>…</svg>` of the page is well-formed XML: tags
/// balance, attributes are quoted, `&` starts an entity and no `<` is loose
/// in text. Returns the number of charts.
fn check_svgs(page: &str) -> usize {
    let mut count = 0;
    let mut rest = page;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("unclosed svg") + start + "</svg>".len();
        check_xml(&rest[start..end]);
        count += 1;
        rest = &rest[end..];
    }
    count
}

fn check_xml(doc: &str) {
    let mut stack: Vec<&str> = Vec::new();
    let mut i = 0;
    let b = doc.as_bytes();
    while i < b.len() {
        match b[i] {
            b'<' => {
                let close = doc[i..].find('>').expect("unclosed tag") + i;
                let tag = &doc[i + 1..close];
                if let Some(name) = tag.strip_prefix('/') {
                    assert_eq!(
                        stack.pop(),
                        Some(name.trim()),
                        "mismatched </{name}> in {doc}"
                    );
                } else {
                    let self_closing = tag.ends_with('/');
                    let body = tag.trim_end_matches('/');
                    let name = body.split_whitespace().next().expect("tag name");
                    assert!(
                        name.chars().all(|c| c.is_ascii_alphanumeric()),
                        "bad tag name {name:?}"
                    );
                    check_attributes(&body[name.len()..]);
                    if !self_closing {
                        stack.push(name);
                    }
                }
                i = close + 1;
            }
            b'&' => {
                let semi = doc[i..].find(';').expect("bare &") + i;
                let ent = &doc[i + 1..semi];
                assert!(
                    ["amp", "lt", "gt", "quot", "#39"].contains(&ent),
                    "unknown entity &{ent};"
                );
                i = semi + 1;
            }
            b'>' => panic!("loose > in text of {doc}"),
            _ => i += 1,
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
}

/// Attributes: `name="value"` pairs, values without `"` `<` or a bare `&`.
fn check_attributes(mut s: &str) {
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return;
        }
        let eq = s.find('=').expect("attribute without value");
        let name = &s[..eq];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
            "bad attribute name {name:?}"
        );
        let v = s[eq + 1..].strip_prefix('"').expect("unquoted attribute");
        let end = v.find('"').expect("unterminated attribute");
        assert!(!v[..end].contains('<'), "< in attribute");
        s = &v[end + 1..];
    }
}

#[test]
fn hostile_learner_ids_and_phases_render_as_text() {
    let evil = [
        "<script>alert(1)</script>".to_string(),
        "\"><img src=x onerror=alert(1)>".to_string(),
        "'><svg onload=alert(1)>".to_string(),
        "&amp;<!--".to_string(),
    ];
    let phases = ["<script>p</script>", "\"onmouseover=x", "P1"];
    let b = Batch::new(&evil, 6, &phases, 1);
    let html = render_html(&b.input());
    // The page's own script is the only one.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(!html.contains("<img"), "raw img tag");
    assert!(!html.contains("<svg onload"), "raw svg from data");
    assert!(!html.contains("<!--"), "raw comment from data");
    assert!(!html.contains("<b>"), "raw markup from a failure detail");
    assert!(
        !html.contains("onerror=alert(1)>"),
        "unescaped attribute break-out"
    );
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert!(check_svgs(&html) >= 7);
}

#[test]
fn the_same_data_gives_the_same_bytes_in_any_order() {
    let b = Batch::new(&ids(40), 12, &PHASES, 7);
    let first = render_html(&b.input());
    assert_eq!(first, render_html(&b.input()));
    let mut shuffled = Batch::new(&ids(40), 12, &PHASES, 7);
    shuffled.records.reverse();
    shuffled.rows.reverse();
    assert_eq!(first, render_html(&shuffled.input()));
    for bad in [">NaN", "\"NaN", ">inf", "\"inf", "-inf"] {
        assert!(!first.contains(bad), "{bad} in the page");
    }
}

#[test]
fn charts_are_well_formed_and_titled() {
    let b = Batch::new(&ids(25), 20, &PHASES, 3);
    let html = render_html(&b.input());
    assert_eq!(check_svgs(&html), 7);
    for title in [
        "Average engagement score",
        "Average emotional score",
        "Average accuracy",
        "Combined score",
        "Engagement state",
        "Phase duration and gap",
        "Dominant emotion",
    ] {
        assert!(html.contains(&format!("<title>{title}")), "{title}");
    }
    assert!(html.contains("score (0–100)"));
    assert!(html.contains("Content-Security-Policy"));
    assert!(
        !html.contains("http://")
            || !html
                .replace("http://www.w3.org/2000/svg", "")
                .contains("http://")
    );
    assert!(!html.contains("https://"));
    // Every learner has a row and a linked detail section.
    assert_eq!(html.matches("<td><a href=\"#l").count(), 25);
    assert_eq!(html.matches("<section class=\"ld\"").count(), 25);
}

#[test]
fn an_empty_batch_renders() {
    let b = Batch::new(&[], 0, &PHASES, 0);
    let html = render_html(&b.input());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.ends_with("</html>\n"));
    assert!(html.contains("No report rows"));
    assert!(html.contains("<table id=\"lt\">"));
    check_svgs(&html);
}

#[test]
fn details_stop_at_the_limits() {
    let b = Batch::new(&ids(30), 80, &PHASES, 5);
    let limits = Limits {
        detail_learners: 10,
        detail_bytes: 1 << 30,
        responses_per_learner: 5,
    };
    let html = render_html_with(&b.input(), &limits);
    assert_eq!(html.matches("<section class=\"ld\"").count(), 10);
    assert!(html.contains("Details of the first 10 of 30 learners"));
    assert!(html.contains("75 more responses"));
    let tight = Limits {
        detail_bytes: 1,
        ..limits
    };
    let html = render_html_with(&b.input(), &tight);
    assert_eq!(html.matches("<section class=\"ld\"").count(), 0);
    assert!(!html.contains("<a href=\"#l0\">"));
}

/// Writes a sample page to `$ENGAGE_HTML_SAMPLE` for looking at by hand.
#[test]
#[ignore = "writes a file; run by hand"]
fn write_sample() {
    let n = std::env::var("ENGAGE_HTML_SAMPLE_LEARNERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let b = Batch::new(&ids(n), 20, &PHASES, 2);
    let path =
        std::env::var("ENGAGE_HTML_SAMPLE").unwrap_or_else(|_| "/tmp/report-sample.html".into());
    std::fs::write(&path, render_html(&b.input())).expect("write sample");
}

#[test]
fn many_phases_are_capped() {
    let phases: Vec<String> = (0..40).map(|i| format!("X{i}")).collect();
    let refs: Vec<&str> = phases.iter().map(String::as_str).collect();
    let b = Batch::new(&ids(5), 40, &refs, 9);
    let html = render_html(&b.input());
    assert!(html.contains("rarer phases are only in"));
    check_svgs(&html);
}

/// Size and render time at 10,000 learners (20 responses each), for
/// `bench/report/RESULTS.md`:
/// `cargo test --release -p engage-aggregate html::tests::bench_10k -- --ignored --nocapture`
#[test]
#[ignore = "benchmark; run by hand"]
fn bench_10k() {
    for (learners, per) in [(1_000, 20), (10_000, 20), (10_000, 100)] {
        let t = Instant::now();
        let b = Batch::new(&ids(learners), per, &PHASES, 11);
        let built = t.elapsed();
        let t = Instant::now();
        let html = render_html(&b.input());
        let render = t.elapsed();
        let details = html.matches("<section class=\"ld\"").count();
        let table = html.find("<table id=\"lt\">").unwrap_or(0);
        let table_end = html[table..].find("</table>").unwrap_or(0) + table;
        println!(
            "learners {learners:>6}  responses {:>8}  rows {:>7}  html {:>9} bytes ({:.2} MiB)  \
             learner table {:.2} MiB  details {details}  render {:>6.1} ms  (data {:.0} ms)",
            b.records.len(),
            b.rows.len(),
            html.len(),
            html.len() as f64 / 1048576.0,
            (table_end - table) as f64 / 1048576.0,
            render.as_secs_f64() * 1000.0,
            built.as_secs_f64() * 1000.0,
        );
        let t = Instant::now();
        assert_eq!(html, render_html(&b.input()));
        println!(
            "  second render {:.1} ms, identical",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
}
