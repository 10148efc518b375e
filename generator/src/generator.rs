//! Synthetic traffic that looks like a shop's: sessions walk home → search/category → product →
//! cart → checkout → purchase with drop-off at each step, separated by pauses; acquisition, device
//! and country per session/user; a few bot sessions that burst; and a configurable share of late,
//! too-late, duplicated and malformed events. Optionally a daily cycle and labelled incidents
//! (see `incidents`). Deterministic for a seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

use crate::incidents::{BotBurst, Incident, IncidentConfig, IncidentKind, Schedule};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Size of the user id space (returning users are drawn from it).
    pub users: u64,
    /// Events per second of event time.
    pub rate: f64,
    /// Share of events delivered late but within the allowed lateness (out of order).
    pub late_share: f64,
    /// Share of events delivered later than the allowed lateness (rejected as too late).
    pub too_late_share: f64,
    pub duplicate_share: f64,
    pub malformed_share: f64,
    /// Share of sessions that are bots bursting page views.
    pub bot_share: f64,
    /// The engine's lateness, so late events land inside or outside it on purpose.
    pub lateness_seconds: u64,
    /// Daily cycle: the session arrival rate is `rate * (1 + A sin(2π (hour_utc - 9) / 24))`,
    /// peaking at 15:00 UTC. 0 keeps the rate constant.
    pub daily_amplitude: f64,
    /// Labelled incidents planted in the stream (none by default).
    pub incidents: IncidentConfig,
}

/// Bot identities (user `bot-N` on IP `203.0.113.N`).
const BOTS: u32 = 50;
/// Minutes of each hour a bot identity is active, staggered by identity: its alerts fire, then
/// resolve while it rests (a bot busy for ever kept the demo's alerts firing without end).
const BOT_ACTIVE_MINUTES: i64 = 10;

/// Whether bot `n` starts sessions at `ts`.
pub fn bot_active(n: u32, ts: i64) -> bool {
    (ts.div_euclid(60_000) + 7 * n as i64).rem_euclid(60) < BOT_ACTIVE_MINUTES
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            users: 1_000_000,
            rate: 2000.0,
            late_share: 0.02,
            too_late_share: 0.002,
            duplicate_share: 0.002,
            malformed_share: 0.002,
            bot_share: 0.002,
            lateness_seconds: 300,
            daily_amplitude: 0.0,
            incidents: IncidentConfig::default(),
        }
    }
}

/// One produced record: what to key it by and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Kafka key: the `user_id` (empty for malformed records).
    pub key: String,
    pub line: Vec<u8>,
    /// Delivery time: when the record reaches the pipe (event time plus any lateness).
    pub deliver_ms: i64,
}

#[derive(Serialize)]
struct Out<'a> {
    user_id: &'a str,
    event: &'a str,
    ts: i64,
    event_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referrer: Option<&'a str>,
    session_id: &'a str,
    ip: &'a str,
    device: &'a str,
    country: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    utm_source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    utm_medium: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    utm_campaign: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    props: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Landing,
    Browse,
    Product,
    Cart,
    Checkout,
    Purchase,
    Bot,
}

struct Session {
    user: String,
    id: String,
    step: Step,
    device: &'static str,
    country: &'static str,
    ip: String,
    source: Option<Acquisition>,
    events_left: u32,
    first: bool,
    started: i64,
}

/// `(utm_source, utm_medium, utm_campaign)`
type Acquisition = (&'static str, &'static str, &'static str);

const SOURCES: [(f64, Option<Acquisition>); 8] = [
    (0.40, None),
    (0.24, Some(("google", "organic", "none"))),
    (0.08, Some(("google", "cpc", "brand-search"))),
    (0.10, Some(("facebook", "social", "autumn-sale"))),
    (0.07, Some(("newsletter", "email", "weekly-digest"))),
    (0.05, Some(("bing", "organic", "none"))),
    (0.04, Some(("tiktok", "social", "creator-collab"))),
    (0.02, Some(("partner", "referral", "affiliate-42"))),
];
const DEVICES: [(f64, &str); 3] = [(0.55, "mobile"), (0.40, "desktop"), (0.05, "tablet")];
pub(crate) const COUNTRIES: [(f64, &str); 8] =
    [(0.30, "US"), (0.15, "DE"), (0.12, "GB"), (0.10, "FR"), (0.10, "IN"), (0.09, "BR"), (0.08, "JP"), (0.06, "CA")];
const CATEGORIES: [&str; 6] = ["shoes", "shirts", "jackets", "bags", "hats", "socks"];

fn pick<T: Copy>(rng: &mut Pcg64, table: &[(f64, T)]) -> T {
    by_share(table, rng.random())
}

/// A fixed value in [0, 1) for a user and a salt.
fn spread(user: u64, salt: u64) -> f64 {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(&user.to_le_bytes(), salt);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn by_share<T: Copy>(table: &[(f64, T)], mut x: f64) -> T {
    for (p, v) in table {
        if x < *p {
            return *v;
        }
        x -= p;
    }
    table[table.len() - 1].1
}

/// A record waiting for delivery: `(deliver_ms, sequence, line, key)`.
type Held = (i64, u64, Vec<u8>, String);

pub struct Generator {
    config: GeneratorConfig,
    rng: Pcg64,
    seq: u64,
    /// Event time at which the next session starts.
    next_arrival: f64,
    /// Sessions by their next event time.
    due: BinaryHeap<Reverse<(i64, u64)>>,
    sessions: HashMap<u64, Session>,
    next_session: u64,
    /// Records waiting for their (late) delivery time, with a tie-breaking sequence.
    held: BinaryHeap<Reverse<Held>>,
    /// Records delivered before this are the warm-up and are not returned.
    first_ms: i64,
    incidents: Schedule,
    /// The bot burst in progress.
    bot: Option<BotBurst>,
}

/// The simulation starts up to this long before the first returned record, so traffic begins in
/// steady state (sessions already in progress) rather than with everyone landing at once...
const WARM_UP_MS: i64 = 10 * 60_000;
/// ...but simulates at most about this many events before it, so high rates start promptly.
const WARM_UP_EVENTS: f64 = 400_000.0;
/// Real-time traffic warms up this long: most sessions (about 75 s, a few with long pauses)
/// have reached their steady state, so the rate starts at about 90% of what was asked.
const REALTIME_WARM_UP_MS: i64 = 3 * 60_000;
/// A conservative speed of the warm-up simulation (measured: about 0.75M steps/s on this
/// machine; pages and props are still drawn, records are not built).
const WARM_UP_STEPS_PER_SECOND: f64 = 600_000.0;

impl Generator {
    /// Starts generating at event time `start_ms`, with incidents as `config.incidents` plans them.
    pub fn new(config: GeneratorConfig, start_ms: i64) -> Generator {
        let incidents = Schedule::planned(&config.incidents, config.seed, start_ms);
        Generator::with_schedule(config, start_ms, incidents)
    }

    /// Starts generating at `start_ms` with exactly these incidents (they must not overlap);
    /// `config.incidents` is ignored.
    pub fn with_incidents(config: GeneratorConfig, start_ms: i64, plan: Vec<Incident>) -> Generator {
        Generator::with_schedule(config, start_ms, Schedule::fixed(plan))
    }

    /// Real-time traffic from `start_ms`: warmed up over [`REALTIME_WARM_UP_MS`] whatever the
    /// rate, so a high rate is reached from the first records instead of ramping up for minutes
    /// while sessions accumulate. The warm-up is simulated at the first `next()` (about 25 s
    /// at 100k events/s): start far enough ahead ([`Generator::realtime_lead_ms`]).
    pub fn realtime(config: GeneratorConfig, start_ms: i64) -> Generator {
        let incidents = Schedule::planned(&config.incidents, config.seed, start_ms);
        Generator::with_warm_up(config, start_ms, incidents, REALTIME_WARM_UP_MS)
    }

    /// How far ahead of the wall clock real-time traffic at `rate` should start so that its
    /// warm-up is simulated before the first record is due.
    pub fn realtime_lead_ms(rate: f64) -> i64 {
        3_000 + (rate.max(0.0) * (REALTIME_WARM_UP_MS as f64 / 1000.0) / WARM_UP_STEPS_PER_SECOND * 1000.0) as i64
    }

    fn with_schedule(config: GeneratorConfig, start_ms: i64, incidents: Schedule) -> Generator {
        let warm_up = WARM_UP_MS.min((WARM_UP_EVENTS / config.rate.max(1.0) * 1000.0) as i64);
        Generator::with_warm_up(config, start_ms, incidents, warm_up)
    }

    fn with_warm_up(config: GeneratorConfig, start_ms: i64, incidents: Schedule, warm_up: i64) -> Generator {
        let rng = Pcg64::seed_from_u64(config.seed);
        Generator {
            config,
            rng,
            seq: 0,
            next_arrival: (start_ms - warm_up) as f64,
            due: BinaryHeap::new(),
            sessions: HashMap::new(),
            next_session: 0,
            held: BinaryHeap::new(),
            first_ms: start_ms,
            incidents,
            bot: None,
        }
    }

    /// The incidents that start before `until_ms`: the labels for the span generated so far.
    pub fn incidents_until(&self, until_ms: i64) -> Vec<Incident> {
        self.incidents.until(until_ms)
    }

    /// Draws the next session arrival after the current one.
    fn schedule_arrival(&mut self) {
        let mean_gap = 1000.0 * Self::mean_events_per_session() / self.config.rate.max(0.001);
        if self.config.daily_amplitude == 0.0 && self.incidents.is_empty() {
            self.next_arrival += self.exp(mean_gap);
            return;
        }
        // The rate is taken as constant up to the next edge (an incident boundary, or each minute
        // while it varies smoothly). An arrival drawn past the edge is drawn again from the edge at
        // the new rate: exact for a Poisson process, since its gaps are memoryless.
        let mut t = self.next_arrival;
        loop {
            self.incidents.cover(t as i64);
            let multiplier = self.arrival_multiplier(t as i64);
            let mut edge = self.incidents.next_edge(t as i64);
            if self.config.daily_amplitude != 0.0 {
                edge = edge.min((t as i64).div_euclid(60_000) * 60_000 + 60_000);
            }
            if multiplier > 0.0 {
                let next = t + self.exp(mean_gap / multiplier);
                if next < edge as f64 {
                    self.next_arrival = next;
                    return;
                }
            }
            t = edge as f64;
        }
    }

    /// Factor on the session arrival rate at `t`: daily cycle times incident.
    fn arrival_multiplier(&self, t: i64) -> f64 {
        let hour = t.rem_euclid(86_400_000) as f64 / 3_600_000.0;
        let daily = 1.0 + self.config.daily_amplitude * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin();
        (daily * self.incidents.arrival_multiplier(t)).max(0.0)
    }

    /// Time of the bot burst's next view, or of the next burst's start.
    fn next_bot_time(&self) -> i64 {
        match &self.bot {
            Some(bot) => bot.next_ms().unwrap_or(i64::MAX),
            None => self.incidents.next_bot_start(),
        }
    }

    /// Starts the next bot burst, or emits the running one's next view.
    fn step_bot(&mut self) {
        let Some(bot) = self.bot.as_mut() else {
            self.bot = self.incidents.start_bot(self.config.seed).filter(|b| b.next_ms().is_some());
            return;
        };
        let view = bot.next_view();
        let session = Session {
            user: view.user,
            id: view.session,
            step: Step::Bot,
            device: "desktop",
            country: bot.country,
            ip: bot.ip.clone(),
            source: None,
            events_left: 0,
            first: false,
            started: view.ts,
        };
        if bot.next_ms().is_none() {
            self.bot = None;
        }
        self.emit_event(&session, view.ts, "page_view", &format!("/products/{}", view.product), None);
    }

    fn mean_events_per_session() -> f64 {
        5.5
    }

    fn exp(&mut self, mean: f64) -> f64 {
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        -u.ln() * mean
    }

    /// A session starting at `at`: a bot's when one is drawn and active then, a person's otherwise.
    fn start_session(&mut self, at: i64) {
        let id = self.next_session;
        self.next_session += 1;
        let bot = self.rng.random_bool(self.config.bot_share.clamp(0.0, 1.0));
        let bot = bot.then(|| self.rng.random_range(0..BOTS)).filter(|n| bot_active(*n, at));
        let session = if let Some(n) = bot {
            Session {
                user: format!("bot-{n}"),
                id: format!("s{id}"),
                step: Step::Bot,
                device: "desktop",
                country: "US",
                ip: format!("203.0.113.{n}"),
                source: None,
                events_left: self.rng.random_range(200..2000),
                first: true,
                started: at,
            }
        } else {
            let user = self.rng.random_range(0..self.config.users.max(1));
            Session {
                user: format!("u{user}"),
                id: format!("s{id}"),
                step: Step::Landing,
                // A user keeps their device and country across sessions.
                device: by_share(&DEVICES, spread(user, 1)),
                country: by_share(&COUNTRIES, spread(user, 2)),
                ip: format!("198.51.{}.{}", (user >> 8) % 256, user % 256),
                source: pick(&mut self.rng, &SOURCES),
                events_left: u32::MAX,
                first: true,
                started: at,
            }
        };
        self.sessions.insert(id, session);
        self.due.push(Reverse((at, id)));
    }

    /// Emits the session's next event and schedules the one after, or ends the session.
    fn step_session(&mut self, at: i64, id: u64) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        let incident = self.incidents.active(at).map(|i| (i.kind, i.start_ms));
        let payment_failing = matches!(incident, Some((IncidentKind::PaymentFailure, _)));
        let rng = &mut self.rng;
        let product = rng.random_range(1..500u32);
        let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
        let (event, page, props, next): (&str, String, Option<serde_json::Value>, Option<Step>) = match s.step {
            Step::Bot => ("page_view", format!("/products/{product}"), None, Some(Step::Bot)),
            Step::Landing => {
                let page = if rng.random_bool(0.7) { "/".to_string() } else { format!("/category/{category}") };
                ("page_view", page, None, rng.random_bool(0.75).then_some(Step::Browse))
            }
            Step::Browse => {
                let page = if rng.random_bool(0.5) { "/search".to_string() } else { format!("/category/{category}") };
                ("page_view", page, None, rng.random_bool(0.7).then_some(Step::Product))
            }
            Step::Product => {
                let next = match rng.random_range(0..100) {
                    0..35 => Some(Step::Product),
                    35..60 => Some(Step::Cart),
                    _ => None,
                };
                ("page_view", format!("/products/{product}"), None, next)
            }
            Step::Cart => {
                let props = serde_json::json!({"product_id": product, "price": 10 + product % 90});
                ("add_to_cart", "/cart".to_string(), Some(props), rng.random_bool(0.55).then_some(Step::Checkout))
            }
            Step::Checkout => {
                ("page_view", "/checkout".to_string(), None, rng.random_bool(0.6).then_some(Step::Purchase))
            }
            Step::Purchase => {
                let props = serde_json::json!({"order_value": rng.random_range(20..400)});
                if payment_failing && rng.random_bool(0.9) {
                    ("payment_failed", "/checkout/error".to_string(), Some(props), None)
                } else {
                    ("purchase", "/checkout/complete".to_string(), Some(props), None)
                }
            }
        };
        // Warm-up records that could not be delivered after the start are not built at all.
        let lateness_ms = self.config.lateness_seconds as i64 * 1000;
        let down = match incident {
            Some((IncidentKind::Outage, start)) => s.started < start && self.rng.random_bool(0.85),
            _ => false,
        };
        if at + 3 * lateness_ms + 2000 >= self.first_ms && !down {
            self.emit_event(&s, at, event, &page, props);
        }
        s.first = false;
        s.events_left = s.events_left.saturating_sub(1);
        let next = next.filter(|_| s.events_left > 0);
        if let Some(step) = next {
            s.step = step;
            let gap = if step == Step::Bot {
                self.exp(150.0)
            } else if self.rng.random_bool(0.03) {
                // a pause long enough to start a new session (the 30-minute rule)
                self.rng.random_range(31.0..90.0) * 60_000.0
            } else {
                2000.0 + self.exp(15_000.0)
            };
            self.due.push(Reverse((at + gap as i64, id)));
            self.sessions.insert(id, s);
        }
    }

    fn emit_event(&mut self, s: &Session, at: i64, event: &str, page: &str, props: Option<serde_json::Value>) {
        let referrer = s.first.then_some(match s.source {
            Some(("google", _, _)) => "https://www.google.com/",
            Some(("facebook", _, _)) => "https://www.facebook.com/",
            Some(("bing", _, _)) => "https://www.bing.com/",
            _ => "",
        });
        let source = if s.first { s.source } else { None };
        let event_id = format!("{:x}-{}", self.config.seed, self.seq);
        let out = Out {
            user_id: &s.user,
            event,
            ts: at,
            event_id: &event_id,
            page: Some(page),
            referrer: referrer.filter(|r| !r.is_empty()),
            session_id: &s.id,
            ip: &s.ip,
            device: s.device,
            country: s.country,
            utm_source: source.map(|x| x.0),
            utm_medium: source.map(|x| x.1),
            utm_campaign: source.map(|x| x.2),
            props,
        };
        let line = serde_json::to_vec(&out).expect("generated events serialize");
        self.emit(at, line, s.user.clone());
        // A click on most pages, a second after the view.
        if s.step != Step::Bot && self.rng.random_bool(0.3) {
            let click = format!(
                r#"{{"user_id":"{}","event":"click","ts":{},"event_id":"{:x}-{}","page":"{}","session_id":"{}","device":"{}","country":"{}","props":{{"element":"cta"}}}}"#,
                s.user,
                at + 1000,
                self.config.seed,
                self.seq,
                page,
                s.id,
                s.device,
                s.country
            );
            self.emit(at + 1000, click.into_bytes(), s.user.clone());
        }
    }

    /// Routes one record: usually now, sometimes late, duplicated or broken.
    fn emit(&mut self, ts: i64, line: Vec<u8>, key: String) {
        self.seq += 1;
        let lateness = self.config.lateness_seconds as f64 * 1000.0;
        let roll: f64 = self.rng.random();
        let (late, too_late, dup, bad) = (
            self.config.late_share,
            self.config.too_late_share,
            self.config.duplicate_share,
            self.config.malformed_share,
        );
        let (deliver, line) = if roll < late {
            (ts + self.rng.random_range(1000.0..(lateness * 0.8).max(1001.0)) as i64, line)
        } else if roll < late + too_late {
            (ts + self.rng.random_range((lateness * 1.3).max(1.0)..(lateness * 3.0).max(2.0)) as i64, line)
        } else if roll < late + too_late + dup {
            self.hold(ts, line.clone(), key.clone());
            (ts, line)
        } else if roll < late + too_late + dup + bad {
            (ts, self.break_line(line))
        } else {
            (ts, line)
        };
        self.hold(deliver, line, key);
    }

    fn hold(&mut self, deliver: i64, line: Vec<u8>, key: String) {
        self.seq += 1;
        self.held.push(Reverse((deliver, self.seq, line, key)));
    }

    fn break_line(&mut self, line: Vec<u8>) -> Vec<u8> {
        let text = String::from_utf8(line).expect("generated lines are UTF-8");
        match self.rng.random_range(0..7) {
            0 => text.as_bytes()[..text.len() / 2].to_vec(),
            1 => text.replacen("\"user_id\"", "\"uid\"", 1).into_bytes(),
            2 => text.replacen("\"ts\":", "\"ts\":true,\"was\":", 1).into_bytes(),
            3 => text.replacen("\"ts\":", "\"ts\":\"last tuesday\",\"was\":", 1).into_bytes(),
            4 => text.replacen("\"page\":\"", &format!("\"page\":\"{}", "x".repeat(70_000)), 1).into_bytes(),
            5 => {
                let mut bytes = text.into_bytes();
                bytes.insert(1, 0xff);
                bytes
            }
            _ => text.replacen("\"user_id\":\"", "\"user_id\":\"\",\"was\":\"", 1).into_bytes(),
        }
    }

    /// Event time of the next thing to happen in the simulation.
    fn next_sim_time(&self) -> i64 {
        let session = self.due.peek().map(|Reverse((t, _))| *t).unwrap_or(i64::MAX);
        session.min(self.next_arrival as i64).min(self.next_bot_time())
    }
}

impl Iterator for Generator {
    type Item = Generated;

    /// Records in delivery order.
    fn next(&mut self) -> Option<Generated> {
        loop {
            let sim = self.next_sim_time();
            if let Some(Reverse((deliver, _, _, _))) = self.held.peek() {
                if *deliver <= sim {
                    let Reverse((deliver_ms, _, line, key)) = self.held.pop().expect("peeked");
                    if deliver_ms >= self.first_ms {
                        return Some(Generated { key, line, deliver_ms });
                    }
                    continue;
                }
            }
            if self.next_bot_time() <= sim {
                self.step_bot();
            } else if (self.next_arrival as i64) <= sim {
                let at = self.next_arrival as i64;
                self.schedule_arrival();
                self.start_session(at);
            } else if let Some(Reverse((at, id))) = self.due.pop() {
                self.step_session(at, id);
            }
        }
    }
}
