//! Colours: the Okabe–Ito palette (safe for the common colour-vision
//! deficiencies) for categories, and a five-step viridis scale, which varies
//! in lightness, for scores.

/// Okabe–Ito blue: engagement.
pub(crate) const BLUE: &str = "#0072B2";
/// Okabe–Ito orange: emotional score.
pub(crate) const ORANGE: &str = "#E69F00";
/// Okabe–Ito bluish green: accuracy.
pub(crate) const GREEN: &str = "#009E73";
/// Okabe–Ito vermillion.
pub(crate) const VERMILLION: &str = "#D55E00";
/// Okabe–Ito yellow.
pub(crate) const YELLOW: &str = "#F0E442";
/// Okabe–Ito sky blue.
pub(crate) const SKY: &str = "#56B4E9";
/// Axis and text grey.
pub(crate) const INK: &str = "#333333";
/// Grid lines.
pub(crate) const GRID: &str = "#dddddd";

/// Viridis at five evenly spaced points, with the text colour readable on each.
pub(crate) const SCORE_BINS: [(&str, &str); 5] = [
    ("#440154", "#ffffff"),
    ("#3b528b", "#ffffff"),
    ("#21918c", "#ffffff"),
    ("#5ec962", "#000000"),
    ("#fde725", "#000000"),
];

/// The score bin (0–4) of a 0–100 score: 0–20, 20–40, …, 80–100.
pub(crate) fn score_bin(score: f64) -> usize {
    if score.is_nan() {
        return 0;
    }
    ((score / 20.0).floor().max(0.0) as usize).min(SCORE_BINS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_the_range() {
        assert_eq!(score_bin(-1.0), 0);
        assert_eq!(score_bin(19.99), 0);
        assert_eq!(score_bin(20.0), 1);
        assert_eq!(score_bin(100.0), 4);
        assert_eq!(score_bin(f64::NAN), 0);
    }
}
