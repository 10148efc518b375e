//! One rule's verdict on one bucket: the value, the baseline it was compared with, and whether
//! that is bad. Reads bucket values through `get` (the engine caches them, since a final bucket
//! never changes).

use std::ops::RangeInclusive;

use crate::detectors::{count_floor, early_sensitivity, ewma, judge, median_mad, percent_floor, EARLY_SAMPLES};
use schema::alert_rules::{AlertRule, Condition, Detector, Direction, Seasonal};

#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub bad: bool,
    pub value: f64,
    pub baseline: Option<f64>,
    pub summary: String,
}

/// `(numerator, denominator)` of one bucket, `None` where there is no data (before the stream).
pub type Get<'a> = dyn FnMut(i64) -> Option<(f64, f64)> + 'a;

/// Sum over the `len` buckets ending at `hi`; `None` if any is missing.
fn window(get: &mut Get<'_>, hi: i64, len: i64) -> Option<(f64, f64)> {
    let mut total = (0.0, 0.0);
    for b in hi - len + 1..=hi {
        let (n, d) = get(b)?;
        total = (total.0 + n, total.1 + d);
    }
    Some(total)
}

/// [`window`] ending at each of `ends` (consecutive), pushed onto `out`: each bucket read once
/// and summed as it slides. Bucket values are whole numbers, so the sums are exact: the same as
/// summing each window apart.
fn windows(get: &mut Get<'_>, ends: RangeInclusive<i64>, len: i64, out: &mut Vec<Option<(f64, f64)>>) {
    let values: Vec<Option<(f64, f64)>> = (ends.start() - len + 1..=*ends.end()).map(&mut *get).collect();
    let (mut total, mut missing) = ((0.0, 0.0), 0);
    for (i, value) in values.iter().enumerate() {
        match value {
            Some((n, d)) => total = (total.0 + n, total.1 + d),
            None => missing += 1,
        }
        if let Some(gone) = i.checked_sub(len as usize).map(|j| values[j]) {
            match gone {
                Some((n, d)) => total = (total.0 - n, total.1 - d),
                None => missing -= 1,
            }
        }
        if i + 1 >= len as usize {
            out.push((missing == 0).then_some(total));
        }
    }
}

fn value_of(rate: bool, (num, den): (f64, f64)) -> Option<f64> {
    if !rate {
        Some(num)
    } else if den > 0.0 {
        Some(num / den)
    } else {
        None
    }
}

/// Minutes to buckets, at least one.
fn buckets(rule: &AlertRule, minutes: u32) -> i64 {
    (minutes / rule.bucket_minutes).max(1) as i64
}

/// The verdict of a series rule (anomaly, threshold, funnel drop) on bucket `b`; `None` when the
/// data do not allow one yet (history too short, an empty denominator): that is not bad. A good
/// verdict's summary is left empty unless `describe` (most keys are good, and nobody reads it).
pub fn series_verdict(rule: &AlertRule, rate: bool, b: i64, describe: bool, get: &mut Get<'_>) -> Option<Verdict> {
    let (mut verdict, summary) = judge_series(rule, rate, b, get)?;
    if verdict.bad || describe {
        verdict.summary = summary.text();
    }
    Some(verdict)
}

/// What a series verdict's summary says, put in words only when someone reads it.
enum Summary {
    Anomaly { value: f64, baseline: f64, z: f64 },
    Relative { value: f64, compared: f64, base: f64 },
    Value(f64),
    Conversion { value: f64, base: Option<f64> },
}

impl Summary {
    fn text(&self) -> String {
        match *self {
            Summary::Anomaly { value, baseline, z } => {
                format!("{value:.1} against a baseline of {baseline:.1} ({z:+.1} deviations)")
            }
            Summary::Relative { value, compared, base } => {
                format!("{value:.1} is {compared:.2}× its trailing mean of {base:.1}")
            }
            Summary::Value(value) => format!("{value:.1}"),
            Summary::Conversion { value, base: Some(base) } => {
                format!("conversion {value:.1}% against {base:.1}% before")
            }
            Summary::Conversion { value, base: None } => format!("conversion {value:.1}%"),
        }
    }
}

fn judge_series(rule: &AlertRule, rate: bool, b: i64, get: &mut Get<'_>) -> Option<(Verdict, Summary)> {
    match &rule.def.when {
        Condition::Anomaly {
            detector,
            direction,
            window_minutes,
            seasonal,
            seasons,
            smooth,
            sensitivity,
            min_baseline,
            ..
        } => {
            let smooth = *smooth as i64;
            let current = window(get, b, smooth)?;
            let value = value_of(rate, current)?;
            // The windows the baseline is made of, oldest first (the EWMA reads them in order).
            let mut sums = Vec::new();
            match seasonal {
                Seasonal::None => {
                    windows(get, b - smooth - buckets(rule, *window_minutes) + 1..=b - smooth, smooth, &mut sums)
                }
                Seasonal::Day | Seasonal::Week => {
                    let period = buckets(rule, if *seasonal == Seasonal::Day { 1440 } else { 10080 });
                    // ±15 minutes around the same phase: never as wide as a period, so the
                    // seasons' ranges do not interleave.
                    let half = 15 / rule.bucket_minutes as i64;
                    for k in (1..=*seasons as i64).rev() {
                        windows(get, b - k * period - half..=b - k * period + half, smooth, &mut sums);
                    }
                }
            };
            let expected = sums.len();
            let samples: Vec<f64> = sums.into_iter().filter_map(|w| w.and_then(|w| value_of(rate, w))).collect();
            // A seasonal baseline needs one full season; a trailing one half its window, or
            // `EARLY_SAMPLES` with a widened sensitivity until then.
            let half = expected.div_ceil(2);
            let needed =
                if *seasonal == Seasonal::None { half.min(EARLY_SAMPLES) } else { expected / *seasons as usize };
            if samples.len() < needed.max(3) {
                return None;
            }
            let sensitivity = match seasonal {
                Seasonal::None => early_sensitivity(*sensitivity, samples.len(), half),
                _ => *sensitivity,
            };
            let (baseline, spread) = match detector {
                Detector::Mad => median_mad(&samples).map(|(m, mad)| (m, 1.4826 * mad))?,
                Detector::Ewma => ewma(&samples)?,
            };
            let floor = if rate { percent_floor(baseline, current.1) } else { count_floor(baseline) };
            let large_side = match direction {
                _ if rate => current.1,
                Direction::Up => value,
                Direction::Down => baseline,
                Direction::Both => value.max(baseline),
            };
            let (z, bad) = judge(value, baseline, spread.max(floor), *direction, sensitivity);
            let summary = Summary::Anomaly { value, baseline, z };
            let bad = bad && large_side >= *min_baseline;
            Some((Verdict { bad, value, baseline: Some(baseline), summary: String::new() }, summary))
        }
        Condition::Threshold { above, below, relative, relative_minutes, smooth, min_baseline, .. } => {
            let smooth = *smooth as i64;
            let current = window(get, b, smooth)?;
            let value = value_of(rate, current)?;
            let (compared, baseline) = if *relative {
                let len = buckets(rule, *relative_minutes);
                let before = window(get, b - smooth, len)?;
                let base = if rate { value_of(true, before)? } else { before.0 * smooth as f64 / len as f64 };
                if (!rate && base < *min_baseline) || base <= 0.0 {
                    return None;
                }
                (value / base, Some(base))
            } else {
                (value, None)
            };
            if rate && current.1 < *min_baseline {
                return None;
            }
            let bad = above.is_some_and(|a| compared > a) || below.is_some_and(|x| compared < x);
            let summary = match baseline {
                Some(base) => Summary::Relative { value, compared, base },
                None => Summary::Value(value),
            };
            Some((Verdict { bad, value, baseline, summary: String::new() }, summary))
        }
        Condition::FunnelDrop { window_minutes, floor, drop, baseline_minutes, min_entries, .. } => {
            let len = buckets(rule, *window_minutes);
            let current = window(get, b, len)?;
            if current.1 < *min_entries {
                return None;
            }
            let value = value_of(true, current)?;
            let before = window(get, b - len, buckets(rule, *baseline_minutes));
            let baseline = before.filter(|w| w.1 >= *min_entries).and_then(|w| value_of(true, w));
            let below_floor = floor.is_some_and(|f| value < f);
            let dropped = drop.zip(baseline).is_some_and(|(d, base)| value < base * (1.0 - d));
            let summary = Summary::Conversion { value, base: baseline };
            Some((Verdict { bad: below_floor || dropped, value, baseline, summary: String::new() }, summary))
        }
        _ => None,
    }
}

/// Buckets of history a series rule reads behind the evaluated one.
pub fn lookback(rule: &AlertRule) -> i64 {
    match &rule.def.when {
        Condition::Anomaly { window_minutes, seasonal, seasons, smooth, .. } => {
            let season = match seasonal {
                Seasonal::None => 0,
                Seasonal::Day => buckets(rule, 1440) * *seasons as i64 + 15,
                Seasonal::Week => buckets(rule, 10080) * *seasons as i64 + 15,
            };
            season.max(buckets(rule, *window_minutes)) + 2 * *smooth as i64
        }
        Condition::Threshold { relative_minutes, smooth, .. } => buckets(rule, *relative_minutes) + *smooth as i64,
        Condition::FunnelDrop { window_minutes, baseline_minutes, .. } => {
            buckets(rule, *window_minutes) + buckets(rule, *baseline_minutes)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole-number values with a missing stretch at the start (before the stream) and one in
    /// the middle (any `None` must spoil exactly the windows over it).
    fn value(x: i64) -> Option<(f64, f64)> {
        (x >= 3 && x != 17).then(|| (((x * 7919) % 101) as f64, ((x * 31) % 13) as f64))
    }

    #[test]
    fn a_day_long_trailing_baseline_judges_after_half_an_hour_with_a_wider_sensitivity() {
        let def: schema::alert_rules::AlertRuleDef = serde_json::from_value(serde_json::json!({"name": "day",
            "when": {"kind": "anomaly", "series": {"metric": "events"}, "window_minutes": 1440,
                     "smooth": 1, "sensitivity": 5.0, "min_baseline": 0.0}}))
        .unwrap();
        let rule = AlertRule::new(def).unwrap();
        // Buckets 0..n alternate 90 and 110 (median 100, MAD 10: spread 14.826), then `value`.
        let verdict = |n: i64, value: f64| {
            let mut get = |x: i64| match x {
                x if (0..n).contains(&x) => Some((if x % 2 == 0 { 90.0 } else { 110.0 }, 1.0)),
                x if x == n => Some((value, 1.0)),
                _ => None,
            };
            series_verdict(&rule, false, n, true, &mut get)
        };
        assert_eq!(verdict(29, 500.0), None, "29 samples: not yet (it used to take 720)");
        // 40 samples: the sensitivity is 5.91, not 5: 200 is 6.74 spreads out, 180 only 5.40.
        assert!(verdict(40, 200.0).unwrap().bad);
        assert!(!verdict(40, 180.0).unwrap().bad, "bad at 5, not at the widened sensitivity");
    }

    #[test]
    fn sliding_windows_equal_windows_summed_apart() {
        for len in 1..=6 {
            for (lo, hi) in [(0, 0), (0, 30), (2, 9), (5, 40), (16, 19)] {
                let mut slid = Vec::new();
                windows(&mut value, lo..=hi, len, &mut slid);
                let apart: Vec<_> = (lo..=hi).map(|end| window(&mut value, end, len)).collect();
                assert_eq!(slid, apart, "len {len}, ends {lo}..={hi}");
            }
        }
    }
}
