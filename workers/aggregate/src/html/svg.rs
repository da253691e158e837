//! Inline SVG charts, written by hand: a box plot, 100 % stacked bars, a
//! heatmap and signed grouped bars. Each chart has a title, axis labels with
//! units and a `<title>` tooltip per mark; every label from the data is
//! escaped. Coordinates are printed with one decimal, so the output is
//! deterministic.

use super::escape::{push, raw};
use super::palette::{GRID, INK};
use super::stats::{FiveNum, fmt1};

/// The attribute of muted text (notes, counts).
const MUTED: &str = r##" fill="#666666""##;

const FONT: &str =
    r#"font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif" font-size="12""#;

/// Opens an `<svg>` with its accessible name and visible title.
fn open(out: &mut String, w: f64, h: f64, title: &str) {
    raw(
        out,
        format_args!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label=""#
        ),
    );
    push(out, title);
    raw(out, format_args!(r#"" {FONT}><title>"#));
    push(out, title);
    raw(
        out,
        format_args!(
            r#"</title><text x="{:.1}" y="16" text-anchor="middle" font-weight="bold" fill="{INK}">"#,
            w / 2.0
        ),
    );
    push(out, title);
    out.push_str("</text>");
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, extra: &str, s: &str) {
    raw(
        out,
        format_args!(r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}"{extra}>"#),
    );
    push(out, s);
    out.push_str("</text>");
}

fn line(out: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, width: f64) {
    raw(
        out,
        format_args!(
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}" stroke-width="{width}"/>"#
        ),
    );
}

fn no_data(out: &mut String, w: f64, h: f64) {
    text(out, w / 2.0, h / 2.0, "middle", MUTED, "no data");
    out.push_str("</svg>");
}

/// Box plots of 0–100 scores, one per category: whiskers at min and max, box
/// from the 25th to the 75th percentile, a thick line at the median and a
/// dot at the mean.
pub(crate) fn box_plot(
    out: &mut String,
    title: &str,
    y_label: &str,
    colour: &str,
    series: &[(&str, Option<FiveNum>)],
) {
    let (left, right, top, bottom, band, ph) = (52.0, 12.0, 28.0, 52.0, 52.0, 170.0);
    let w = f64::max(320.0, left + right + band * series.len() as f64);
    let h = top + ph + bottom;
    open(out, w, h, title);
    if series.iter().all(|(_, s)| s.is_none()) {
        return no_data(out, w, h);
    }
    let y = |v: f64| top + ph * (1.0 - v.clamp(0.0, 100.0) / 100.0);
    for t in (0..=100).step_by(20) {
        let ty = y(f64::from(t));
        line(out, left, ty, w - right, ty, GRID, 1.0);
        text(out, left - 6.0, ty + 4.0, "end", "", &t.to_string());
    }
    raw(
        out,
        format_args!(
            r#"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">"#,
            top + ph / 2.0
        ),
    );
    push(out, y_label);
    out.push_str("</text>");
    for (i, (label, s)) in series.iter().enumerate() {
        let cx = left + band * (i as f64 + 0.5);
        text(
            out,
            cx,
            top + ph + 16.0,
            "middle",
            "",
            &clipped_plain(label, 7),
        );
        if let Some(s) = s {
            text(
                out,
                cx,
                top + ph + 30.0,
                "middle",
                MUTED,
                &format!("n={}", s.n),
            );
            out.push_str("<g><title>");
            push(out, label);
            raw(
                out,
                format_args!(
                    ": n={}, min {}, 25% {}, median {}, 75% {}, max {}, mean {}</title>",
                    s.n,
                    fmt1(s.min),
                    fmt1(s.p25),
                    fmt1(s.median),
                    fmt1(s.p75),
                    fmt1(s.max),
                    fmt1(s.mean)
                ),
            );
            line(out, cx, y(s.max), cx, y(s.min), INK, 1.0);
            line(out, cx - 8.0, y(s.max), cx + 8.0, y(s.max), INK, 1.0);
            line(out, cx - 8.0, y(s.min), cx + 8.0, y(s.min), INK, 1.0);
            raw(
                out,
                format_args!(
                    r#"<rect x="{:.1}" y="{:.1}" width="28" height="{:.1}" fill="{colour}" fill-opacity="0.45" stroke="{colour}"/>"#,
                    cx - 14.0,
                    y(s.p75),
                    (y(s.p25) - y(s.p75)).max(1.0)
                ),
            );
            line(
                out,
                cx - 14.0,
                y(s.median),
                cx + 14.0,
                y(s.median),
                INK,
                2.5,
            );
            raw(
                out,
                format_args!(
                    r##"<circle cx="{cx:.1}" cy="{:.1}" r="3" fill="#ffffff" stroke="{INK}"/></g>"##,
                    y(s.mean)
                ),
            );
        }
    }
    text(
        out,
        left + (w - left - right) / 2.0,
        h - 6.0,
        "middle",
        "",
        "phase",
    );
    out.push_str("</svg>");
}

/// The label cut to `max` characters, not yet escaped (the drawing helpers
/// escape).
fn clipped_plain(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// A legend row of coloured squares at `y`.
fn legend(out: &mut String, x0: f64, y: f64, categories: &[(&str, &str)]) {
    let mut x = x0;
    for (name, colour) in categories {
        raw(
            out,
            format_args!(
                r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/>"#,
                y - 9.0
            ),
        );
        text(out, x + 14.0, y, "start", "", name);
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
}

/// Horizontal 100 % stacked bars: each row's counts as shares of its total,
/// with the percentage printed on segments wide enough to hold it.
/// `categories` are `(name, fill, text colour)`.
pub(crate) fn stacked_shares(
    out: &mut String,
    title: &str,
    categories: &[(&str, &str, &str)],
    rows: &[(&str, Vec<u64>)],
) {
    let (left, right, top, bar, gap, pw) = (80.0, 16.0, 46.0, 18.0, 6.0, 440.0);
    let w = left + pw + right;
    let h = top + (bar + gap) * rows.len() as f64 + 30.0;
    open(out, w, h, title);
    let named: Vec<(&str, &str)> = categories.iter().map(|(n, c, _)| (*n, *c)).collect();
    legend(out, left, 36.0, &named);
    for (i, (label, counts)) in rows.iter().enumerate() {
        let y = top + (bar + gap) * i as f64;
        text(
            out,
            left - 6.0,
            y + 13.0,
            "end",
            "",
            &clipped_plain(label, 10),
        );
        let total: u64 = counts.iter().sum();
        if total == 0 {
            text(
                out,
                left + 4.0,
                y + 13.0,
                "start",
                MUTED,
                "no analyzed responses",
            );
            continue;
        }
        let mut x = left;
        for ((name, fill, ink), n) in categories.iter().zip(counts) {
            if *n == 0 {
                continue;
            }
            let share = *n as f64 / total as f64;
            let sw = pw * share;
            raw(
                out,
                format_args!(
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{sw:.1}" height="{bar}" fill="{fill}"><title>"#
                ),
            );
            push(out, label);
            raw(
                out,
                format_args!(
                    ": {name} {n} of {total} ({:.0}%)</title></rect>",
                    share * 100.0
                ),
            );
            if sw >= 30.0 {
                text(
                    out,
                    x + sw / 2.0,
                    y + 13.0,
                    "middle",
                    &format!(r#" fill="{ink}""#),
                    &format!("{:.0}%", share * 100.0),
                );
            }
            x += sw;
        }
    }
    text(
        out,
        left + pw / 2.0,
        h - 8.0,
        "middle",
        "",
        "share of the phase's learners (%)",
    );
    out.push_str("</svg>");
}

/// A heatmap of counts: rows × columns, each cell shaded by its share of the
/// row's total (darker is more), the count printed in it.
pub(crate) fn heatmap(
    out: &mut String,
    title: &str,
    colour: &str,
    columns: &[&str],
    rows: &[(&str, Vec<u64>)],
) {
    let (left, top, cw, ch) = (80.0, 44.0, 70.0, 22.0);
    let w = left + cw * columns.len() as f64 + 12.0;
    let h = top + ch * rows.len() as f64 + 30.0;
    open(out, w, h, title);
    for (j, c) in columns.iter().enumerate() {
        text(
            out,
            left + cw * (j as f64 + 0.5),
            top - 6.0,
            "middle",
            "",
            c,
        );
    }
    for (i, (label, counts)) in rows.iter().enumerate() {
        let y = top + ch * i as f64;
        text(
            out,
            left - 6.0,
            y + 15.0,
            "end",
            "",
            &clipped_plain(label, 10),
        );
        let total: u64 = counts.iter().sum();
        for (j, n) in counts.iter().enumerate() {
            let x = left + cw * j as f64;
            let share = if total == 0 {
                0.0
            } else {
                *n as f64 / total as f64
            };
            raw(
                out,
                format_args!(
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="{:.2}" stroke="{GRID}"><title>"#,
                    x,
                    y,
                    cw,
                    ch,
                    if *n == 0 { 0.0 } else { 0.08 + 0.92 * share }
                ),
            );
            push(out, label);
            raw(
                out,
                format_args!(
                    ": {} {n} of {total} ({:.0}%)</title></rect>",
                    columns[j],
                    share * 100.0
                ),
            );
            if *n > 0 {
                let ink = if share > 0.5 { "#ffffff" } else { "#000000" };
                text(
                    out,
                    x + cw / 2.0,
                    y + 15.0,
                    "middle",
                    &format!(r#" fill="{ink}""#),
                    &n.to_string(),
                );
            }
        }
    }
    text(
        out,
        left + cw * columns.len() as f64 / 2.0,
        h - 8.0,
        "middle",
        "",
        "learners per phase and dominant emotion (shade: share of the phase)",
    );
    out.push_str("</svg>");
}

/// A "nice" tick step (1, 2 or 5 × 10ⁿ) for about five ticks over `span`.
fn nice_step(span: f64) -> f64 {
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Grouped horizontal bars of signed values (seconds, shown in the unit that
/// fits the largest value), from a zero line. `series` are `(name, colour)`;
/// each row has one value per series.
pub(crate) fn signed_bars(
    out: &mut String,
    title: &str,
    series: &[(&str, &str)],
    rows: &[(&str, Vec<Option<f64>>)],
) {
    let (left, right, top, bar, gap, pw) = (80.0, 60.0, 46.0, 10.0, 8.0, 400.0);
    let group = bar * series.len() as f64 + gap;
    let w = left + pw + right;
    let h = top + group * rows.len() as f64 + 44.0;
    open(out, w, h, title);
    legend(out, left, 36.0, series);
    let values = rows.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if rows.is_empty() {
        return no_data(out, w, h);
    }
    let big = lo.abs().max(hi.abs());
    let (unit, div) = if big >= 7200.0 {
        ("h", 3600.0)
    } else if big >= 120.0 {
        ("min", 60.0)
    } else {
        ("s", 1.0)
    };
    let (lo, hi) = (lo / div, hi / div);
    let step = nice_step(if hi - lo > 0.0 { hi - lo } else { 1.0 });
    let (t0, t1) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    let t1 = if t1 <= t0 { t0 + step } else { t1 };
    let x = |v: f64| left + pw * (v - t0) / (t1 - t0);
    let plot_bottom = top + group * rows.len() as f64;
    let mut t = t0;
    while t <= t1 + step / 2.0 {
        let tx = x(t);
        line(out, tx, top - 4.0, tx, plot_bottom, GRID, 1.0);
        text(out, tx, plot_bottom + 14.0, "middle", "", &trim_num(t));
        t += step;
    }
    line(out, x(0.0), top - 4.0, x(0.0), plot_bottom, INK, 1.0);
    for (i, (label, vals)) in rows.iter().enumerate() {
        let gy = top + group * i as f64;
        text(
            out,
            left - 6.0,
            gy + bar + 3.0,
            "end",
            "",
            &clipped_plain(label, 10),
        );
        for (k, ((name, colour), v)) in series.iter().zip(vals).enumerate() {
            let y = gy + bar * k as f64;
            let Some(v) = v.filter(|v| v.is_finite()) else {
                continue;
            };
            let u = v / div;
            let (a, b) = (x(0.0).min(x(u)), x(0.0).max(x(u)));
            raw(
                out,
                format_args!(
                    r#"<rect x="{a:.1}" y="{y:.1}" width="{:.1}" height="{bar}" fill="{colour}"><title>"#,
                    (b - a).max(0.5)
                ),
            );
            push(out, label);
            raw(
                out,
                format_args!(": {name} {} {unit}</title></rect>", fmt1(u)),
            );
            text(
                out,
                b + 3.0,
                y + 9.0,
                "start",
                r#" font-size="10""#,
                &format!("{} {unit}", fmt1(u)),
            );
        }
    }
    text(
        out,
        left + pw / 2.0,
        h - 10.0,
        "middle",
        "",
        &format!("median per phase across learners ({unit})"),
    );
    out.push_str("</svg>");
}

/// A tick label: no trailing `.0`, `-0` as `0`.
fn trim_num(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_nice() {
        assert_eq!(nice_step(100.0), 20.0);
        assert_eq!(nice_step(7.0), 2.0);
        assert!((nice_step(0.3) - 0.1).abs() < 1e-12);
        assert_eq!(trim_num(-0.0), "0");
        assert_eq!(trim_num(2.5), "2.5");
    }
}
