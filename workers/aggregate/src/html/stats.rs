//! Descriptive statistics for the charts: five-number summaries (linear
//! interpolation between order statistics, like numpy's default), means and
//! medians, and number formatting for display. All deterministic: values are
//! sorted with a total order first.

/// Minimum, quartiles, median, maximum and mean of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FiveNum {
    /// Smallest value.
    pub(crate) min: f64,
    /// 25th percentile.
    pub(crate) p25: f64,
    /// Median.
    pub(crate) median: f64,
    /// 75th percentile.
    pub(crate) p75: f64,
    /// Largest value.
    pub(crate) max: f64,
    /// Arithmetic mean.
    pub(crate) mean: f64,
    /// Sample size.
    pub(crate) n: usize,
}

/// The `q`-quantile (0–1) of sorted values, interpolated linearly.
fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The five-number summary of the finite values, `None` if there are none.
pub(crate) fn five_num(values: impl IntoIterator<Item = f64>) -> Option<FiveNum> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(FiveNum {
        min: v[0],
        p25: quantile_sorted(&v, 0.25),
        median: quantile_sorted(&v, 0.5),
        p75: quantile_sorted(&v, 0.75),
        max: v[v.len() - 1],
        mean: v.iter().sum::<f64>() / v.len() as f64,
        n: v.len(),
    })
}

/// The median of the finite values.
pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    five_num(values).map(|f| f.median)
}

/// One decimal, `-0.0` shown as `0.0`.
pub(crate) fn fmt1(x: f64) -> String {
    let s = format!("{x:.1}");
    if s == "-0.0" { "0.0".into() } else { s }
}

/// A duration in seconds for people: `42 s`, `3.5 min`, `2.1 h`, `1.5 d`.
pub(crate) fn fmt_duration(s: f64) -> String {
    let a = s.abs();
    if a < 120.0 {
        format!("{} s", fmt1(s))
    } else if a < 7200.0 {
        format!("{} min", fmt1(s / 60.0))
    } else if a < 172_800.0 {
        format!("{} h", fmt1(s / 3600.0))
    } else {
        format!("{} d", fmt1(s / 86_400.0))
    }
}

/// A share as a whole percentage.
pub(crate) fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    format!("{:.0}%", part as f64 * 100.0 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate() {
        let f = five_num([4.0, 1.0, 3.0, 2.0, f64::NAN]).expect("values");
        assert_eq!(
            (f.min, f.p25, f.median, f.p75, f.max),
            (1.0, 1.75, 2.5, 3.25, 4.0)
        );
        assert_eq!((f.mean, f.n), (2.5, 4));
        assert!(five_num([]).is_none());
        assert_eq!(median([7.0]), Some(7.0));
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt1(-0.04), "0.0");
        assert_eq!(fmt_duration(90.0), "90.0 s");
        assert_eq!(fmt_duration(-600.0), "-10.0 min");
        assert_eq!(fmt_duration(7200.0), "2.0 h");
        assert_eq!(pct(1, 3), "33%");
        assert_eq!(pct(1, 0), "0%");
    }
}
