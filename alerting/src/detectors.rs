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
    fn floors() {
        assert_eq!(count_floor(100.0), 10.0);
        assert_eq!(count_floor(1_000_000.0), 10_000.0);
        assert!((percent_floor(50.0, 100.0) - 5.0).abs() < 1e-9);
    }
}
