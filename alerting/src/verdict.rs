//! One rule's verdict on one bucket: the value, the baseline it was compared with, and whether
//! that is bad. Reads bucket values through `get` (the engine caches them, since a final bucket
//! never changes).

use crate::detectors::{count_floor, ewma, judge, median_mad, percent_floor};
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
/// data do not allow one yet (history too short, an empty denominator): that is not bad.
pub fn series_verdict(rule: &AlertRule, rate: bool, b: i64, get: &mut Get<'_>) -> Option<Verdict> {
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
            let ends: Vec<i64> = match seasonal {
                Seasonal::None => (0..buckets(rule, *window_minutes)).rev().map(|j| b - smooth - j).collect(),
                Seasonal::Day | Seasonal::Week => {
                    let period = buckets(rule, if *seasonal == Seasonal::Day { 1440 } else { 10080 });
                    let half = 15 / rule.bucket_minutes as i64;
                    let mut ends: Vec<i64> = (1..=*seasons as i64)
                        .flat_map(|k| (-half..=half).map(move |off| b - k * period + off))
                        .collect();
                    ends.sort_unstable();
                    ends
                }
            };
            let expected = ends.len();
            let samples: Vec<f64> =
                ends.into_iter().filter_map(|end| window(get, end, smooth).and_then(|w| value_of(rate, w))).collect();
            // A seasonal baseline needs one full season; a trailing one half its window.
            let needed = if *seasonal == Seasonal::None { expected.div_ceil(2) } else { expected / *seasons as usize };
            if samples.len() < needed.max(3) {
                return None;
            }
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
            let (z, bad) = judge(value, baseline, spread.max(floor), *direction, *sensitivity);
            let summary = format!("{value:.1} against a baseline of {baseline:.1} ({z:+.1} deviations)");
            Some(Verdict { bad: bad && large_side >= *min_baseline, value, baseline: Some(baseline), summary })
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
                Some(base) => format!("{value:.1} is {compared:.2}× its trailing mean of {base:.1}"),
                None => format!("{value:.1}"),
            };
            Some(Verdict { bad, value, baseline, summary })
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
            let summary = match baseline {
                Some(base) => format!("conversion {value:.1}% against {base:.1}% before"),
                None => format!("conversion {value:.1}%"),
            };
            Some(Verdict { bad: below_floor || dropped, value, baseline, summary })
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
