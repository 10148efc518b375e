//! Detectors: is a value far from what its baseline samples lead us to expect?
//!
//! Pure functions over numbers, so the property tests and the alert engine share nothing but
//! these (which have their own hand-computed tests).

use schema::alert_rules::Direction;

/// The middle of `values` (mean of the two middle ones for an even count); sorts in place.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

/// `(median, MAD)` of the samples.
pub fn median_mad(samples: &[f64]) -> Option<(f64, f64)> {
    let mut values = samples.to_vec();
    let m = median(&mut values)?;
    let mut deviations: Vec<f64> = samples.iter().map(|v| (v - m).abs()).collect();
    Some((m, median(&mut deviations)?))
}

/// `(mean, standard deviation)` of an exponentially weighted average over the samples in order,
/// with the smoothing of an `n`-sample window.
pub fn ewma(samples: &[f64]) -> Option<(f64, f64)> {
    let (first, rest) = samples.split_first()?;
    let alpha = 2.0 / (samples.len() as f64 + 1.0);
    let (mut mean, mut var) = (*first, 0.0);
    for x in rest {
        let diff = x - mean;
        let incr = alpha * diff;
        mean += incr;
        var = (1.0 - alpha) * (var + diff * incr);
    }
    Some((mean, var.sqrt()))
}

/// How far `value` is from `baseline` in units of `spread`, signed, and whether that is bad.
pub fn judge(value: f64, baseline: f64, spread: f64, direction: Direction, sensitivity: f64) -> (f64, bool) {
    let z = (value - baseline) / spread.max(f64::MIN_POSITIVE);
    let bad = match direction {
        Direction::Up => z >= sensitivity,
        Direction::Down => z <= -sensitivity,
        Direction::Both => z.abs() >= sensitivity,
    };
    (z, bad)
}

/// Samples a trailing baseline needs before it judges (or half its window, if that is fewer):
/// a day-long window judges after half an hour, not after half a day.
pub const EARLY_SAMPLES: usize = 30;

/// The normal quantile `z` as Student's t with `nu` degrees of freedom would have it (Abramowitz
/// and Stegun 26.7.5, four terms; close for `nu` of about 30 and more).
pub fn student_t(z: f64, nu: f64) -> f64 {
    let g1 = (z.powi(3) + z) / 4.0;
    let g2 = (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / 96.0;
    let g3 = (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / 384.0;
    let g4 = (79.0 * z.powi(9) + 776.0 * z.powi(7) + 1482.0 * z.powi(5) - 1920.0 * z.powi(3) - 945.0 * z) / 92160.0;
    z + g1 / nu + g2 / nu.powi(2) + g3 / nu.powi(3) + g4 / nu.powi(4)
}

/// The sensitivity of a baseline of `n` samples that will have `full` once its window is half
/// full: widened as a spread measured on fewer samples is less sure (the ratio of Student's t
/// at `n - 1` and at `full - 1` degrees of freedom), `sensitivity` itself from `full` on.
pub fn early_sensitivity(sensitivity: f64, n: usize, full: usize) -> f64 {
    if n >= full || n < 2 {
        return sensitivity;
    }
    sensitivity * student_t(sensitivity, (n - 1) as f64) / student_t(sensitivity, (full - 1) as f64)
}

/// The least spread a count of about `mean` has anyway (Poisson), so a flat history does not turn
/// every wobble into an alert; and never under 1 % of the level.
pub fn count_floor(mean: f64) -> f64 {
    mean.max(1.0).sqrt().max(0.01 * mean.abs())
}

/// The same for a percentage over `trials` (binomial).
pub fn percent_floor(percent: f64, trials: f64) -> f64 {
    let p = (percent / 100.0).clamp(0.0, 1.0);
    (100.0 * (p * (1.0 - p) / trials.max(1.0)).sqrt()).max(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad_by_hand() {
        assert_eq!(median_mad(&[1.0, 2.0, 3.0, 4.0, 100.0]), Some((3.0, 1.0)));
        assert_eq!(median_mad(&[2.0, 4.0]), Some((3.0, 1.0)));
        assert_eq!(median_mad(&[]), None);
    }

    #[test]
    fn ewma_by_hand() {
        // alpha = 2 / 4 = 0.5: mean 0 -> 2 -> 3; var 0 -> 0.5*(0+4*2)=4 -> 0.5*(4+2*1)=3
        let (mean, sd) = ewma(&[0.0, 4.0, 4.0]).unwrap();
        assert_eq!(mean, 3.0);
        assert!((sd - 3f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn direction_decides_what_is_bad() {
        assert_eq!(judge(130.0, 100.0, 10.0, Direction::Up, 3.0), (3.0, true));
        assert!(!judge(130.0, 100.0, 10.0, Direction::Down, 3.0).1);
        assert!(judge(70.0, 100.0, 10.0, Direction::Both, 3.0).1);
        assert!(!judge(71.0, 100.0, 10.0, Direction::Both, 3.0).1);
    }

    #[test]
    fn a_short_baseline_widens_the_sensitivity_as_students_t_does() {
        // By hand: z = 6, nu = 29: 6 + 55.5/29 + 441.1875/841 + 2581.078/24389 + 11116.23/707281
        // = 6 + 1.91379 + 0.52460 + 0.10583 + 0.01572.
        assert!((student_t(6.0, 29.0) - 8.55994).abs() < 1e-4, "{}", student_t(6.0, 29.0));
        assert!((student_t(5.0, 1e9) - 5.0).abs() < 1e-6, "the normal quantile for many samples");
        // 40 samples of a window that is half full at 720: 5 x t(5, 39) / t(5, 719).
        let early = early_sensitivity(5.0, 40, 720);
        assert!((early - 5.0 * student_t(5.0, 39.0) / student_t(5.0, 719.0)).abs() < 1e-12);
        assert!((5.85..5.95).contains(&early), "{early}");
        assert_eq!(early_sensitivity(5.0, 720, 720), 5.0, "from half the window on, as configured");
        assert!(early_sensitivity(5.0, 100, 720) < early, "narrower as samples come");
    }

    #[test]
    fn floors() {
        assert_eq!(count_floor(100.0), 10.0);
        assert_eq!(count_floor(1_000_000.0), 10_000.0);
        assert!((percent_floor(50.0, 100.0) - 5.0).abs() < 1e-9);
    }
}
