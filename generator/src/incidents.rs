//! Labelled incidents planted in synthetic traffic, so alert rules can be scored for recall,
//! precision and detection delay: a schedule that is known up front and deterministic for a seed,
//! and what each kind does to the stream (applied by the generator).

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Mixed into the seed so the plan's draws are independent of the event stream's.
const PLAN_SALT: u64 = 0x1c1d_e575_c4ed_0001;
const BOT_SALT: u64 = 0xb075_b075_b075_0002;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Session arrival rate ×3 for 15–40 minutes.
    Spike,
    /// Session arrival rate ×0.15 for 15–40 minutes. Sessions that started before the outage
    /// also lose 85% of their events while it lasts, so the whole event rate drops at once, as when
    /// the site is down, instead of fading out over the length of a session.
    Outage,
    /// For 30–60 minutes, sessions reaching the purchase step emit `payment_failed` on
    /// `/checkout/error` instead of `purchase` with probability 0.9: traffic looks normal,
    /// purchase conversion collapses.
    PaymentFailure,
    /// For 10–20 minutes, one fresh IP (the incident's key) sends 6–10 product page views per
    /// second, rotating over 20–60 user ids `botnet-<incident>-<k>`; desktop, one random country,
    /// no utm or referrer.
    BotBurst,
    /// The session arrival rate ramps linearly from ×1 to ×1.8 over 3 hours, holds an hour, then
    /// returns to ×1 at once. Labelled from the start of the ramp to the return.
    Drift,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 5] = [
        IncidentKind::Spike,
        IncidentKind::Outage,
        IncidentKind::PaymentFailure,
        IncidentKind::BotBurst,
        IncidentKind::Drift,
    ];

    /// Duration range in minutes.
    fn minutes(self) -> (f64, f64) {
        match self {
            IncidentKind::Spike | IncidentKind::Outage => (15.0, 40.0),
            IncidentKind::PaymentFailure => (30.0, 60.0),
            IncidentKind::BotBurst => (10.0, 20.0),
            IncidentKind::Drift => (240.0, 240.0),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentConfig {
    /// Mean quiet time between incidents in minutes, from one's end to the next one's start (never
    /// less than `min_gap_minutes`); 0 plants none.
    pub every_minutes: f64,
    /// No incident starts before the generator's start plus this, so detectors that compare with
    /// the previous day have a baseline (a day and an hour by default).
    pub warmup_minutes: u32,
    /// Quiet time after an incident ends before the next may start.
    pub min_gap_minutes: u32,
    /// Kinds to draw from, each equally likely.
    pub kinds: Vec<IncidentKind>,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            every_minutes: 0.0,
            warmup_minutes: 1500,
            min_gap_minutes: 90,
            kinds: IncidentKind::ALL.to_vec(),
        }
    }
}

impl IncidentConfig {
    fn is_off(&self) -> bool {
        self.every_minutes.is_nan() || self.every_minutes <= 0.0 || self.kinds.is_empty()
    }
}

/// One planted incident: the label an alert should find.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub kind: IncidentKind,
    /// Event time the effect begins (inclusive).
    pub start_ms: i64,
    /// Event time the effect ends (exclusive).
    pub end_ms: i64,
    /// The bot's IP for `bot_burst`.
    pub key: Option<String>,
}

fn exp(rng: &mut Pcg64, mean: f64) -> f64 {
    -rng.random_range(f64::EPSILON..1.0).ln() * mean
}

/// The `k`th bot burst's address (from 1): TEST-NET-1, then the benchmarking range, so every burst
/// has an address of its own.
fn bot_ip(k: u64) -> String {
    if k < 255 {
        format!("192.0.2.{k}")
    } else {
        let j = k - 255;
        format!("198.{}.{}.{}", 18 + (j >> 16) % 2, (j >> 8) % 256, j % 256)
    }
}

/// The incidents starting in `[start_ms + warmup, until_ms)`, in order, never overlapping. Uses
/// its own RNG, and a longer `until_ms` only appends, so the generator can plan ahead in steps.
pub fn plan(config: &IncidentConfig, seed: u64, start_ms: i64, until_ms: i64) -> Vec<Incident> {
    let mut out = Vec::new();
    if config.is_off() {
        return out;
    }
    let mut rng = Pcg64::seed_from_u64(seed ^ PLAN_SALT);
    let min_gap = config.min_gap_minutes as f64 * MINUTE as f64;
    // The quiet time is min_gap plus an exponential remainder, so its mean is `every_minutes`.
    let extra = (config.every_minutes * MINUTE as f64 - min_gap).max(0.0);
    let mut at = (start_ms + config.warmup_minutes as i64 * MINUTE) as f64 + exp(&mut rng, extra);
    let mut bots = 0;
    while at < until_ms as f64 {
        let kind = config.kinds[rng.random_range(0..config.kinds.len())];
        let (lo, hi) = kind.minutes();
        let minutes = if lo < hi { rng.random_range(lo..hi) } else { lo };
        // Whole seconds keep the labels readable.
        let start = (at / 1000.0).ceil() as i64 * 1000;
        let end = start + (minutes * 60.0).round() as i64 * 1000;
        let key = (kind == IncidentKind::BotBurst).then(|| {
            bots += 1;
            bot_ip(bots)
        });
        out.push(Incident { kind, start_ms: start, end_ms: end, key });
        at = end as f64 + min_gap + exp(&mut rng, extra);
    }
    out
}

/// How long ahead the generator plans, and extends the plan by.
const PLAN_AHEAD: i64 = 60 * DAY;

/// The generator's view of the plan: what is active when, planned ahead as event time advances.
pub(crate) struct Schedule {
    config: IncidentConfig,
    seed: u64,
    start_ms: i64,
    plan: Vec<Incident>,
    /// Planned through here (`None`: a fixed plan).
    horizon: Option<i64>,
    /// Index of the next bot burst that has not started (`plan.len()` if none is planned).
    next_bot: usize,
}

impl Schedule {
    pub fn planned(config: &IncidentConfig, seed: u64, start_ms: i64) -> Schedule {
        if config.is_off() {
            return Schedule::fixed(Vec::new());
        }
        let horizon = start_ms + PLAN_AHEAD;
        let mut schedule = Schedule {
            config: config.clone(),
            seed,
            start_ms,
            plan: plan(config, seed, start_ms, horizon),
            horizon: Some(horizon),
            next_bot: 0,
        };
        schedule.seek_bot();
        schedule
    }

    /// A given plan (for tests and replays); its incidents must not overlap.
    pub fn fixed(mut plan: Vec<Incident>) -> Schedule {
        plan.sort_by_key(|i| i.start_ms);
        let mut schedule =
            Schedule { config: IncidentConfig::default(), seed: 0, start_ms: 0, plan, horizon: None, next_bot: 0 };
        schedule.seek_bot();
        schedule
    }

    /// Nothing is or will be planned: the generator takes its constant-rate path.
    pub fn is_empty(&self) -> bool {
        self.plan.is_empty() && self.horizon.is_none()
    }

    pub fn until(&self, until_ms: i64) -> Vec<Incident> {
        match self.horizon {
            Some(h) if until_ms > h => plan(&self.config, self.seed, self.start_ms, until_ms),
            _ => self.plan.iter().take_while(|i| i.start_ms < until_ms).cloned().collect(),
        }
    }

    /// Keeps the plan at least a day ahead of event time `t`.
    pub fn cover(&mut self, t: i64) {
        if let Some(h) = self.horizon.filter(|h| t >= h - DAY) {
            let horizon = t.max(h) + PLAN_AHEAD;
            self.plan = plan(&self.config, self.seed, self.start_ms, horizon);
            self.horizon = Some(horizon);
            self.seek_bot();
        }
    }

    /// The incident in effect at `t`.
    pub fn active(&self, t: i64) -> Option<&Incident> {
        let i = self.plan.partition_point(|x| x.start_ms <= t).checked_sub(1)?;
        Some(&self.plan[i]).filter(|incident| t < incident.end_ms)
    }

    /// Incidents' factor on the session arrival rate at `t`.
    pub fn arrival_multiplier(&self, t: i64) -> f64 {
        match self.active(t) {
            Some(i) if i.kind == IncidentKind::Spike => 3.0,
            Some(i) if i.kind == IncidentKind::Outage => 0.15,
            Some(i) if i.kind == IncidentKind::Drift => {
                // The ramp is the first three quarters (3 of the 4 planned hours), then it holds.
                let ramp = (i.end_ms - i.start_ms) as f64 * 0.75;
                1.0 + 0.8 * ((t - i.start_ms) as f64 / ramp).min(1.0)
            }
            _ => 1.0,
        }
    }

    /// The next time after `t` the arrival multiplier may change (a drift's ramp steps each
    /// minute); `i64::MAX` if never.
    pub fn next_edge(&self, t: i64) -> i64 {
        match self.active(t) {
            Some(i) if i.kind == IncidentKind::Drift => ((t.div_euclid(MINUTE) + 1) * MINUTE).min(i.end_ms),
            Some(i) => i.end_ms,
            None => {
                let next = self.plan.get(self.plan.partition_point(|x| x.start_ms <= t)).map(|i| i.start_ms);
                next.or(self.horizon).unwrap_or(i64::MAX)
            }
        }
    }

    /// Start of the next bot burst not yet started (`i64::MAX` if none).
    pub fn next_bot_start(&self) -> i64 {
        self.plan.get(self.next_bot).map_or(i64::MAX, |i| i.start_ms)
    }

    /// Starts the next bot burst.
    pub fn start_bot(&mut self, seed: u64) -> Option<BotBurst> {
        let burst = BotBurst::new(self.next_bot, self.plan.get(self.next_bot)?, seed);
        self.next_bot += 1;
        self.seek_bot();
        Some(burst)
    }

    fn seek_bot(&mut self) {
        while self.plan.get(self.next_bot).is_some_and(|i| i.kind != IncidentKind::BotBurst) {
            self.next_bot += 1;
        }
    }
}

/// A running bot burst: one IP cycling through its user ids, with its own RNG so its shape
/// depends only on the seed and the incident.
pub(crate) struct BotBurst {
    index: usize,
    pub ip: String,
    pub country: &'static str,
    users: u32,
    gap_ms: f64,
    next_ms: f64,
    end_ms: i64,
    sent: u64,
    rng: Pcg64,
}

/// One bot page view.
pub(crate) struct BotView {
    pub ts: i64,
    pub user: String,
    pub session: String,
    pub product: u32,
}

impl BotBurst {
    fn new(index: usize, incident: &Incident, seed: u64) -> BotBurst {
        let salt = xxhash_rust::xxh3::xxh3_64_with_seed(&incident.start_ms.to_le_bytes(), seed ^ BOT_SALT);
        let mut rng = Pcg64::seed_from_u64(salt);
        let countries = crate::generator::COUNTRIES;
        BotBurst {
            index,
            ip: incident.key.clone().unwrap_or_else(|| bot_ip(index as u64 + 1)),
            country: countries[rng.random_range(0..countries.len())].1,
            users: rng.random_range(20..=60),
            // At least 6 per second, so the burst clears a 5/s threshold over any window of it.
            gap_ms: 1000.0 / rng.random_range(6.0..10.0),
            next_ms: incident.start_ms as f64,
            end_ms: incident.end_ms,
            sent: 0,
            rng,
        }
    }

    /// Time of the next view, if the burst is not over.
    pub fn next_ms(&self) -> Option<i64> {
        Some(self.next_ms as i64).filter(|t| *t < self.end_ms)
    }

    pub fn next_view(&mut self) -> BotView {
        let k = self.sent % self.users as u64;
        let view = BotView {
            ts: self.next_ms as i64,
            user: format!("botnet-{}-{k}", self.index),
            session: format!("b{}-{k}", self.index),
            product: self.rng.random_range(1..500),
        };
        self.sent += 1;
        // Jittered but nearly regular, like a script with a sleep.
        self.next_ms += self.gap_ms * self.rng.random_range(0.8..1.2);
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::generator::{Generator, GeneratorConfig};

    const START: i64 = 1_780_000_000_000;

    fn config() -> IncidentConfig {
        IncidentConfig { every_minutes: 120.0, ..IncidentConfig::default() }
    }

    #[test]
    fn plan_is_deterministic_and_extends_as_a_prefix() {
        let a = plan(&config(), 7, START, START + 20 * DAY);
        assert_eq!(a, plan(&config(), 7, START, START + 20 * DAY));
        assert_ne!(a, plan(&config(), 8, START, START + 20 * DAY));
        let longer = plan(&config(), 7, START, START + 40 * DAY);
        assert_eq!(&longer[..a.len()], &a[..]);
        assert!(longer.len() > a.len());
    }

    #[test]
    fn plan_respects_warmup_gaps_and_durations() {
        let c = config();
        let incidents = plan(&c, 7, START, START + 60 * DAY);
        // Quiet time averages max(120, 90) minutes plus durations: a few hundred in 60 days.
        assert!((150..700).contains(&incidents.len()), "{} incidents", incidents.len());
        assert!(incidents[0].start_ms >= START + 1500 * MINUTE);
        for w in incidents.windows(2) {
            assert!(w[1].start_ms >= w[0].end_ms + 90 * MINUTE, "{:?}", w);
        }
        let mut seen = std::collections::HashSet::new();
        let mut ips = std::collections::HashSet::new();
        for i in &incidents {
            seen.insert(i.kind);
            let (lo, hi) = i.kind.minutes();
            let minutes = (i.end_ms - i.start_ms) as f64 / MINUTE as f64;
            assert!(lo <= minutes && minutes <= hi, "{i:?}");
            assert_eq!(i.key.is_some(), i.kind == IncidentKind::BotBurst);
            if let Some(ip) = &i.key {
                assert!(ips.insert(ip.clone()), "{ip} reused");
            }
        }
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn plan_is_empty_when_off() {
        assert!(plan(&IncidentConfig::default(), 7, START, START + 60 * DAY).is_empty());
        let none = IncidentConfig { kinds: vec![], ..config() };
        assert!(plan(&none, 7, START, START + 60 * DAY).is_empty());
        let only = IncidentConfig { kinds: vec![IncidentKind::Spike], ..config() };
        assert!(plan(&only, 7, START, START + 10 * DAY).iter().all(|i| i.kind == IncidentKind::Spike));
    }

    #[test]
    fn incidents_config_reads_snake_case_and_rejects_unknown_fields() {
        let c: IncidentConfig =
            serde_json::from_str(r#"{"every_minutes": 60, "kinds": ["bot_burst", "payment_failure"]}"#)
                .expect("valid config");
        assert_eq!(c.kinds, vec![IncidentKind::BotBurst, IncidentKind::PaymentFailure]);
        assert_eq!(c.warmup_minutes, 1500);
        assert!(serde_json::from_str::<IncidentConfig>(r#"{"every": 60}"#).is_err());
    }

    #[test]
    fn schedule_extends_ahead_and_matches_the_plan() {
        let mut s = Schedule::planned(&config(), 7, START);
        s.cover(START + 100 * DAY);
        assert_eq!(s.until(START + 150 * DAY), plan(&config(), 7, START, START + 150 * DAY));
        assert!(s.horizon.unwrap() >= START + 101 * DAY);
        let off = Schedule::planned(&IncidentConfig::default(), 7, START);
        assert!(off.is_empty());
    }

    /// A midnight UTC.
    const DAY0: i64 = 1_795_132_800_000;

    /// Only the traffic itself: no bots, lateness or broken records, so counts measure the rate.
    fn clean(rate: f64) -> GeneratorConfig {
        GeneratorConfig {
            rate,
            late_share: 0.0,
            too_late_share: 0.0,
            duplicate_share: 0.0,
            malformed_share: 0.0,
            bot_share: 0.0,
            ..GeneratorConfig::default()
        }
    }

    struct Record {
        ts: i64,
        event: String,
        ip: String,
        user: String,
    }

    /// The records delivered before `until_ms`, parsed.
    fn records(generator: Generator, until_ms: i64) -> Vec<Record> {
        let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        generator
            .take_while(|g| g.deliver_ms < until_ms)
            .map(|g| {
                let v: serde_json::Value = serde_json::from_slice(&g.line).expect("clean records parse");
                Record {
                    ts: v["ts"].as_i64().unwrap(),
                    event: text(&v, "event"),
                    ip: text(&v, "ip"),
                    user: text(&v, "user_id"),
                }
            })
            .collect()
    }

    /// Records in `[from, to)` minutes after `DAY0` that match `keep`.
    fn count(records: &[Record], from: i64, to: i64, keep: impl Fn(&Record) -> bool) -> usize {
        records.iter().filter(|r| (DAY0 + from * MINUTE..DAY0 + to * MINUTE).contains(&r.ts) && keep(r)).count()
    }

    fn incident(kind: IncidentKind, from: i64, to: i64, key: Option<&str>) -> Incident {
        Incident { kind, start_ms: DAY0 + from * MINUTE, end_ms: DAY0 + to * MINUTE, key: key.map(str::to_string) }
    }

    #[test]
    fn same_seed_same_stream_and_plan_with_incidents() {
        let kinds = vec![IncidentKind::BotBurst, IncidentKind::Outage, IncidentKind::PaymentFailure];
        let incidents = IncidentConfig { every_minutes: 2.0, warmup_minutes: 0, min_gap_minutes: 1, kinds };
        let config = GeneratorConfig { rate: 30.0, daily_amplitude: 0.3, incidents, ..GeneratorConfig::default() };
        let a: Vec<_> = Generator::new(config.clone(), DAY0).take(60_000).collect();
        let b: Vec<_> = Generator::new(config.clone(), DAY0).take(60_000).collect();
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].deliver_ms <= w[1].deliver_ms));
        let until = a.last().unwrap().deliver_ms;
        let plan = Generator::new(config.clone(), DAY0).incidents_until(until);
        assert_eq!(plan, crate::incidents::plan(&config.incidents, config.seed, DAY0, until));
        assert!(plan.len() >= 2, "{plan:?}");
        // The incidents and the cycle do change the stream.
        let plain: Vec<_> =
            Generator::new(GeneratorConfig { rate: 30.0, ..GeneratorConfig::default() }, DAY0).take(60_000).collect();
        assert_ne!(a, plain);
    }

    #[test]
    fn forced_incidents_show_in_the_records() {
        use IncidentKind::*;
        let bot_ip = "192.0.2.1";
        // Each window is compared with a quiet stretch before it; a short drift (45-minute ramp,
        // 15-minute hold) keeps the stream short.
        let plan = vec![
            incident(Spike, 60, 80, None),
            incident(Outage, 120, 140, None),
            incident(PaymentFailure, 170, 200, None),
            incident(BotBurst, 200, 215, Some(bot_ip)),
            incident(Drift, 230, 290, None),
        ];
        let generator = Generator::with_incidents(clean(10.0), DAY0, plan.clone());
        assert_eq!(generator.incidents_until(DAY0 + 200 * MINUTE), plan[..3]);
        let records = records(generator, DAY0 + 290 * MINUTE);
        let human = |r: &Record| r.ip != bot_ip;
        let per_minute = |from, to| count(&records, from, to, human) as f64 / (to - from) as f64;

        let spike = per_minute(60, 80) / per_minute(0, 60);
        assert!(spike >= 2.0, "spike ×{spike:.2}");
        let outage = per_minute(120, 140) / per_minute(85, 120);
        assert!(outage <= 0.4, "outage ×{outage:.2}");

        let purchases = |from, to| count(&records, from, to, |r| r.event == "purchase");
        let (during, before) = (purchases(170, 200), purchases(140, 170));
        assert!(before >= 50 && during as f64 <= 0.2 * before as f64, "purchases {during} vs {before} before");
        let failed = count(&records, 170, 200, |r| r.event == "payment_failed");
        assert!(failed as f64 >= 0.5 * before as f64, "{failed} payment_failed");
        assert_eq!(count(&records, 0, 290, |r| r.event == "payment_failed"), failed);

        let bot: Vec<&Record> = records.iter().filter(|r| r.ip == bot_ip).collect();
        assert!(bot
            .iter()
            .all(|r| (DAY0 + 200 * MINUTE..DAY0 + 215 * MINUTE).contains(&r.ts) && r.event == "page_view"));
        let per_second = bot.len() as f64 / (15 * 60) as f64;
        assert!(per_second >= 5.0, "bot {per_second:.1}/s");
        let users: std::collections::HashSet<_> = bot.iter().map(|r| r.user.as_str()).collect();
        assert!(users.len() >= 20 && users.iter().all(|u| u.starts_with("botnet-3-")), "{} bot users", users.len());

        let drift = per_minute(275, 290) / per_minute(170, 230);
        assert!(drift >= 1.5, "drift hold ×{drift:.2}");
        let ramp_middle = per_minute(245, 260) / per_minute(170, 230);
        assert!((1.2..1.6).contains(&ramp_middle), "drift mid-ramp ×{ramp_middle:.2}");
    }
}
