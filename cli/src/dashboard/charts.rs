//! The dashboard's small charts, drawn on the server as inline SVG (no
//! script, nothing fetched): a bar sparkline of jobs finished per minute,
//! a step line of a queue's backlog over the last minutes, and horizontal
//! gauge bars. Every chart has a `<title>` (read by screen readers and shown
//! on hover), labelled axes with units, and its text escaped. Colours are
//! the Okabe–Ito palette, distinguishable with the common colour-vision
//! deficiencies; a chart never relies on colour alone (each has its stage
//! name beside it).

use std::fmt::Write as _;

use engage_model::envelope::StageName;

use super::html::esc;

/// Okabe–Ito colours, one per stage in pipeline order.
const PALETTE: [&str; 5] = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00"];
/// Axis and label grey.
const AXIS: &str = "#555";

/// A stage's colour.
pub(crate) fn colour(stage: StageName) -> &'static str {
    let i = StageName::ALL.iter().position(|s| *s == stage).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

const W: f64 = 260.0;
const H: f64 = 64.0;
/// Left margin (the y-axis maximum), bottom margin (the x-axis labels).
const ML: f64 = 34.0;
const MB: f64 = 14.0;

fn open(b: &mut String, class: &str, title: &str) {
    let _ = write!(
        b,
        "<svg class=\"{class}\" role=\"img\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title>",
        esc(title)
    );
}

/// The axes: y from 0 to `max` (labelled with its unit), x labelled at both ends.
fn axes(b: &mut String, max: u64, unit: &str, left: &str, right: &str) {
    let (x0, y0, y1) = (ML, H - MB, 4.0);
    let _ = write!(
        b,
        "<g stroke=\"{AXIS}\" stroke-width=\"1\"><line x1=\"{x0}\" y1=\"{y0}\" x2=\"{W}\" y2=\"{y0}\"/>\
         <line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x0}\" y2=\"{y0}\"/></g>\
         <g fill=\"{AXIS}\" font-size=\"9\" font-family=\"sans-serif\">\
         <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{max}</text>\
         <text x=\"{tx}\" y=\"{y0}\" text-anchor=\"end\">0</text>\
         <text x=\"{tx}\" y=\"{uy}\" text-anchor=\"end\">{}</text>\
         <text x=\"{x0}\" y=\"{H}\" text-anchor=\"start\">{}</text>\
         <text x=\"{W}\" y=\"{H}\" text-anchor=\"end\">{}</text></g>",
        esc(unit),
        esc(left),
        esc(right),
        tx = x0 - 3.0,
        ty = y1 + 8.0,
        uy = (y0 + y1) / 2.0 + 3.0,
    );
}

/// Bars of `per_minute` (oldest first, the current minute last) for
/// `stage`: jobs finished per minute over the last `per_minute.len()`
/// minutes.
pub(crate) fn throughput(stage: StageName, per_minute: &[u64]) -> String {
    let n = per_minute.len().max(1);
    let max = per_minute.iter().copied().max().unwrap_or(0).max(1);
    let last = per_minute.last().copied().unwrap_or(0);
    let total: u64 = per_minute.iter().sum();
    let title = format!(
        "{stage}: jobs finished per minute, last {n} minutes ({total} in all, {last} this minute)"
    );
    let mut b = String::new();
    open(&mut b, "tput", &title);
    axes(&mut b, max, "/min", &format!("−{n} min"), "now");
    let plot_w = W - ML - 1.0;
    let plot_h = H - MB - 4.0;
    let step = plot_w / n as f64;
    let _ = write!(b, "<g fill=\"{}\">", colour(stage));
    for (i, v) in per_minute.iter().enumerate() {
        if *v == 0 {
            continue;
        }
        let h = (*v as f64 / max as f64) * plot_h;
        let _ = write!(
            b,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{v} jobs</title></rect>",
            ML + 1.0 + i as f64 * step,
            H - MB - h,
            (step - 1.0).max(1.0),
        );
    }
    b.push_str("</g></svg>");
    b
}

/// A step line of `samples` (seconds ago, ready messages), over the last
/// `window_s` seconds, for `stage`'s work queue.
pub(crate) fn backlog(stage: StageName, samples: &[(f64, u32)], window_s: f64) -> String {
    let max = u64::from(samples.iter().map(|s| s.1).max().unwrap_or(0).max(1));
    let now = samples.last().map_or(0, |s| s.1);
    let mins = (window_s / 60.0).round();
    let title = format!(
        "{stage}: messages ready in the work queue, last {mins} minutes ({now} now, at most {max})"
    );
    let mut b = String::new();
    open(&mut b, "backlog", &title);
    axes(&mut b, max, "msgs", &format!("−{mins} min"), "now");
    let plot_w = W - ML - 1.0;
    let plot_h = H - MB - 4.0;
    let x = |ago: f64| ML + 1.0 + plot_w * (1.0 - (ago / window_s).clamp(0.0, 1.0));
    let y = |v: u32| H - MB - f64::from(v) / max as f64 * plot_h;
    let mut pts = String::new();
    let mut prev: Option<f64> = None;
    for (ago, v) in samples {
        let (px, py) = (x(*ago), y(*v));
        if let Some(py0) = prev {
            let _ = write!(pts, "{px:.1},{py0:.1} ");
        }
        let _ = write!(pts, "{px:.1},{py:.1} ");
        prev = Some(py);
    }
    if !samples.is_empty() {
        let _ = write!(
            b,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            colour(stage),
            pts.trim_end()
        );
    }
    b.push_str("</svg>");
    b
}

/// A horizontal gauge: `used` of `limit` (`None`: no limit), labelled.
pub(crate) fn gauge(label: &str, used: u64, limit: Option<u64>, colour: &str) -> String {
    let (w, h) = (200.0, 14.0);
    let frac = limit.map_or(0.0, |l| (used as f64 / l.max(1) as f64).clamp(0.0, 1.0));
    let of = limit.map_or_else(|| "no limit".to_string(), |l| format!("of {l}"));
    let mut b = String::new();
    let _ = write!(
        b,
        "<svg class=\"gauge\" role=\"img\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title>{}: {used} {}</title>\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#eee\" stroke=\"{AXIS}\"/>\
         <rect x=\"0\" y=\"0\" width=\"{:.1}\" height=\"{h}\" fill=\"{colour}\"/></svg>",
        esc(label),
        esc(&of),
        w * frac
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_bars_scale_to_the_busiest_minute() {
        let svg = throughput(StageName::Analyze, &[0, 2, 4]);
        // Two bars (a zero draws none), the tallest filling the plot.
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains("height=\"46.0\""), "{svg}");
        assert!(svg.contains("<title>analyze: jobs finished per minute, last 3 minutes (6 in all, 4 this minute)</title>"));
        assert!(svg.contains(colour(StageName::Analyze)));
        assert!(svg.contains(">/min<") && svg.contains(">now<"));
    }

    #[test]
    fn backlog_is_a_step_line() {
        let svg = backlog(
            StageName::Clean,
            &[(600.0, 0), (300.0, 10), (0.0, 5)],
            600.0,
        );
        assert!(svg.contains("<polyline"), "{svg}");
        assert!(svg.contains("(5 now, at most 10)"), "{svg}");
        assert!(!backlog(StageName::Clean, &[], 600.0).contains("<polyline"));
    }

    #[test]
    fn gauges_clamp_and_escape() {
        let g = gauge("<b>", 30, Some(10), "#000");
        assert!(
            g.contains("width=\"200.0\" height=\"14\" fill=\"#000\""),
            "{g}"
        );
        assert!(g.contains("&lt;b&gt;") && !g.contains("<b>"));
        assert!(gauge("x", 3, None, "#000").contains("no limit"));
    }

    #[test]
    fn stages_have_distinct_colours() {
        let mut c: Vec<_> = StageName::ALL.iter().map(|s| colour(*s)).collect();
        c.dedup();
        assert_eq!(c.len(), 5);
    }
}
