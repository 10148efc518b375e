//! Funnels: definitions, and each user's funnel result as a pure function of the user's retained
//! events. Ingestion keeps every user's events for the window and re-evaluates a user once per
//! epoch when they changed, so a funnel defined at run time and one defined in config from the
//! start see the same data and give the same numbers.
//!
//! Semantics (documented in the README):
//! - An *attempt* starts at an event matching step 1 and must reach each later step within the
//!   conversion window from its start. `ordered`: each step after the previous one (events with
//!   equal times count in arrival order), other events may come between; `strict`: each step is
//!   the user's very next event; `unordered`: the steps in any order (an attempt starts at an
//!   event of any step; step N is reached when N distinct steps have happened; an event that
//!   matches several steps completes the lowest one not done yet, greedily).
//! - An attempt may not have an exclusion event strictly between its step `from` and step `to`
//!   (or after step `from` inside the window when `to` was not reached). Ordered funnels move
//!   step `from` to a later event (the chain goes on from there); otherwise, or when `from` is
//!   the first step, the attempt is cancelled. The property test checks ordered attempts against
//!   a search over every chain (longest valid one, earliest among equals).
//! - A user counts with their best attempt: most steps reached, then the earliest start. The
//!   breakdown value is that attempt's first event's (first touch).

use parking_lot::Mutex;

pub use crate::registry::RegistryError;

pub type FunnelRegistry = crate::registry::Registry<Funnel>;

impl crate::registry::Definition for Funnel {
    type Def = FunnelDef;
    const KIND: &'static str = "funnel";
    const ROUTE: &'static str = "/api/v1/funnels";
    const MAX: usize = MAX_FUNNELS;
    fn new(def: FunnelDef) -> Result<Funnel, String> {
        Funnel::new(def)
    }
    fn def(&self) -> &FunnelDef {
        &self.def
    }
    fn name(&self) -> &str {
        &self.def.name
    }
}
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::event::{Sym, NONE};
use crate::facts::Dim;
use crate::ids::IdMap;
// The acquisition breakdowns and their index in `LogEvent::source` (as for sessions).
use crate::session_cells::BREAKDOWNS as BREAKDOWN_SOURCES;

pub const MS_PER_DAY: i64 = 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Ordered,
    Strict,
    Unordered,
}

/// An event name plus optional conditions on its fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    pub event: String,
    /// `page` equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_prefix: Option<String>,
    /// `page` matches this regular expression (anywhere; anchor it with `^...$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// `props` entries that must all be present with these values (strings, numbers, booleans).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub props: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The text a property value is compared as: `"42"` for 42, `"true"` for true.
pub fn prop_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => return None,
        }),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionDef {
    #[serde(flatten)]
    pub step: StepDef,
    /// Between these steps (1-based, `from` < `to`); default: the whole funnel.
    #[serde(default)]
    pub from: Option<usize>,
    #[serde(default)]
    pub to: Option<usize>,
}

/// What a funnel counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Each user once, with their best attempt.
    #[default]
    Users,
    /// Each session once, with its best attempt inside the session.
    Sessions,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelDef {
    pub name: String,
    #[serde(default)]
    pub over: Unit,
    pub steps: Vec<StepDef>,
    #[serde(default)]
    pub order: Order,
    /// Conversion window from the first step (PostHog's default: 14 days).
    #[serde(default = "default_window")]
    pub window_minutes: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<ExclusionDef>,
    /// `utm_source`, `device`, `country` or `page` of the attempt's first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<String>,
}

fn default_window() -> u32 {
    14 * 24 * 60
}

pub const MAX_STEPS: usize = 20;
/// Funnels one engine computes (each is evaluated for every active user).
pub const MAX_FUNNELS: usize = 64;

/// A step ready to match: symbols and a compiled pattern.
#[derive(Debug)]
pub(crate) struct Matcher {
    name: Sym,
    page: Option<Sym>,
    prefix: Option<String>,
    regex: Option<regex::Regex>,
    fields: SmallVec<[(usize, Sym); 1]>,
    props: SmallVec<[(Sym, Sym); 1]>,
    /// Prefix and pattern results by page symbol (they depend on the page only).
    by_page: Mutex<IdMap<bool>>,
}

/// Page texts by symbol, kept with the events (every worker that evaluates sees the same).
pub type PageTexts = IdMap<Box<str>>;

/// A field value in a step; empty or `(none)` (as answers show it) means absent.
pub(crate) fn sym_or_none(text: &str) -> Sym {
    if text.is_empty() || text == crate::event::NONE_TEXT {
        NONE
    } else {
        crate::event::sym(text)
    }
}

impl Matcher {
    pub(crate) fn compile(step: &StepDef, what: &str) -> Result<Matcher, String> {
        if step.event.is_empty() {
            return Err(format!("{what}: `event` must not be empty"));
        }
        let regex = step
            .page_regex
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| format!("{what}: page_regex does not compile: {e}"))?;
        let mut fields = SmallVec::new();
        for (i, value) in [&step.utm_source, &step.device, &step.country].into_iter().enumerate() {
            if let Some(v) = value {
                fields.push((i, sym_or_none(v)));
            }
        }
        let mut props = SmallVec::new();
        for (key, value) in &step.props {
            let text =
                prop_text(value).ok_or_else(|| format!("{what}: props.{key} must be a string, number or boolean"))?;
            props.push((crate::event::sym(key), crate::event::sym(&text)));
        }
        Ok(Matcher {
            props,
            name: crate::event::sym(&step.event),
            page: step.page.as_deref().map(sym_or_none),
            prefix: step.page_prefix.clone(),
            regex,
            fields,
            by_page: Mutex::new(IdMap::default()),
        })
    }

    fn needs_text(&self) -> bool {
        self.prefix.is_some() || self.regex.is_some()
    }

    pub(crate) fn matches(&self, e: &LogEvent, pages: &PageTexts) -> bool {
        if e.name != self.name || self.page.is_some_and(|p| p != e.page) {
            return false;
        }
        if self.fields.iter().any(|(i, v)| e.source[*i] != *v) {
            return false;
        }
        if !self.props.iter().all(|p| e.props.as_deref().is_some_and(|have| have.contains(p))) {
            return false;
        }
        if !self.needs_text() {
            return true;
        }
        *self.by_page.lock().entry(e.page).or_insert_with(|| {
            let text = pages.get(&e.page).map(|t| &**t).unwrap_or("");
            self.prefix.as_deref().is_none_or(|p| text.starts_with(p))
                && self.regex.as_ref().is_none_or(|r| r.is_match(text))
        })
    }
}

/// A validated funnel.
#[derive(Debug)]
pub struct Funnel {
    pub def: FunnelDef,
    steps: Vec<Matcher>,
    exclusions: Vec<(Matcher, usize, usize)>,
    /// `utm_source`, `device`, `country` or `page`.
    breakdown: Option<Dim>,
    /// Changes whenever the definition does: results computed under another are recomputed.
    pub fingerprint: u64,
}

pub const BREAKDOWNS: &str = "utm_source, device, country, page";

impl Funnel {
    pub fn new(def: FunnelDef) -> Result<Funnel, String> {
        let name = &def.name;
        crate::registry::check_name(name, "funnel")?;
        if def.steps.len() < 2 || def.steps.len() > MAX_STEPS {
            return Err(format!("funnel `{name}`: give 2 to {MAX_STEPS} steps, not {}", def.steps.len()));
        }
        if def.window_minutes == 0 {
            return Err(format!("funnel `{name}`: window_minutes must be at least 1"));
        }
        let steps = def
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| Matcher::compile(s, &format!("funnel `{name}` step {}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let n = def.steps.len();
        let mut exclusions = Vec::new();
        for (i, x) in def.exclusions.iter().enumerate() {
            let (from, to) = (x.from.unwrap_or(1), x.to.unwrap_or(n));
            if from < 1 || to > n || from >= to {
                return Err(format!(
                    "funnel `{name}` exclusion {}: need 1 <= from < to <= {n}, got from {from} to {to}",
                    i + 1
                ));
            }
            let what = format!("funnel `{name}` exclusion {}", i + 1);
            // Steps strictly between `from` and `to` (1-based) are indices from..to - 1.
            if let Some(k) = (from..to - 1).find(|k| def.steps[*k] == x.step) {
                return Err(format!("{what} is the same as step {}, which it would always cancel", k + 1));
            }
            exclusions.push((Matcher::compile(&x.step, &what)?, from - 1, to - 1));
        }
        let breakdown = def
            .breakdown
            .as_deref()
            .map(|b| {
                Dim::parse(b)
                    .filter(|d| *d == Dim::Page || BREAKDOWN_SOURCES.iter().any(|(s, _)| s == d))
                    .ok_or_else(|| format!("funnel `{name}`: unknown breakdown `{b}`; use one of: {BREAKDOWNS}"))
            })
            .transpose()?;
        let fingerprint = xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(&def).expect("serialisable"));
        Ok(Funnel { def, steps, exclusions, breakdown, fingerprint })
    }

    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// Whether adding `e` right after `before` (the user's previous event) can change a result:
    /// it matches a step or an exclusion, or, in a strict funnel, it separates a step from what
    /// follows it. Over sessions any event can join two sessions or move a cut: always.
    pub fn relevant(&self, e: &LogEvent, before: Option<&LogEvent>, pages: &PageTexts) -> bool {
        let step = |e: &LogEvent| self.steps.iter().any(|s| s.matches(e, pages));
        self.def.over == Unit::Sessions
            || step(e)
            || self.exclusions.iter().any(|(x, _, _)| x.matches(e, pages))
            || self.def.order == Order::Strict && before.is_some_and(step)
    }

    /// 1-based numbers of the steps `e` matches (counted per minute for funnel-drop alerts).
    pub fn matching_steps<'a>(&'a self, e: &'a LogEvent, pages: &'a PageTexts) -> impl Iterator<Item = usize> + 'a {
        self.steps.iter().enumerate().filter(move |(_, s)| s.matches(e, pages)).map(|(i, _)| i + 1)
    }

    pub fn window_ms(&self) -> i64 {
        self.def.window_minutes as i64 * 60_000
    }

    pub fn breakdown_dim(&self) -> Option<Dim> {
        self.breakdown
    }

    /// The best attempt of each counted unit: the user's, or each session's.
    pub fn evaluate_units(
        &self,
        events: &[LogEvent],
        pages: &PageTexts,
        sessions: &crate::sessions::SessionConfig,
    ) -> SmallVec<[Attempt; 1]> {
        match self.def.over {
            Unit::Users => self.evaluate(events, pages).into_iter().collect(),
            Unit::Sessions => {
                let times: Vec<i64> = events.iter().map(|e| e.ts).collect();
                crate::sessions::split(&times, sessions)
                    .into_iter()
                    .filter_map(|r| self.evaluate(&events[r], pages))
                    .collect()
            }
        }
    }

    /// The user's best attempt over their events (sorted by time, then arrival).
    ///
    /// Linear in the events: the next event of each step after every position is precomputed, so
    /// an attempt follows its steps by jumps instead of scanning (a bot whose every page view
    /// starts an attempt would otherwise cost the square of its events).
    pub fn evaluate(&self, events: &[LogEvent], pages: &PageTexts) -> Option<Attempt> {
        let n = self.steps.len();
        let len = events.len();
        let mut masks: Vec<u32> = Vec::with_capacity(len);
        let mut exclusions: Vec<Vec<u32>> = vec![vec![0]; self.exclusions.len()];
        for e in events {
            let mut m = 0u32;
            for (i, s) in self.steps.iter().enumerate() {
                if s.matches(e, pages) {
                    m |= 1 << i;
                }
            }
            masks.push(m);
            for (j, (x, _, _)) in self.exclusions.iter().enumerate() {
                let seen = *exclusions[j].last().expect("starts at zero");
                exclusions[j].push(seen + x.matches(e, pages) as u32);
            }
        }
        let entry_mask = if self.def.order == Order::Unordered { (1u32 << n) - 1 } else { 1 };
        if !masks.iter().any(|m| m & entry_mask != 0) {
            return None;
        }
        // next[k][i]: the first index >= i whose event matches step k (len: none).
        let mut next = vec![vec![len as u32; len + 1]; n];
        for i in (0..len).rev() {
            for (k, row) in next.iter_mut().enumerate() {
                row[i] = if masks[i] & (1 << k) != 0 { i as u32 } else { row[i + 1] };
            }
        }
        let ctx = Context { events, masks: &masks, next: &next, exclusions: &exclusions };
        let mut best: Option<Attempt> = None;
        for (start, mask) in masks.iter().enumerate() {
            if mask & entry_mask == 0 {
                continue;
            }
            let Some(attempt) = self.attempt(&ctx, start) else { continue };
            if best.as_ref().is_none_or(|b| attempt.reached > b.reached) {
                best = Some(attempt);
            }
            if best.as_ref().is_some_and(|b| b.reached as usize == n) {
                break;
            }
        }
        best
    }

    /// The attempt starting at `events[start]`, or `None` when an exclusion cancels it.
    fn attempt(&self, c: &Context<'_>, start: usize) -> Option<Attempt> {
        let (n, len) = (self.steps.len(), c.events.len());
        let end = c.events[start].ts.saturating_add(self.window_ms());
        // Events after this index are outside the window.
        let last = start + c.events[start..].partition_point(|e| e.ts <= end);
        // The event index at which each step was reached, in step order.
        let mut at: SmallVec<[usize; 8]> = SmallVec::new();
        at.push(start);
        match self.def.order {
            Order::Ordered => {
                // Each step takes its earliest event; when an exclusion falls after step `from`
                // (before step `to`), step `from` moves to it or later and the later steps follow.
                let mut floor: SmallVec<[usize; 8]> = smallvec::smallvec![0; n];
                loop {
                    at.truncate(1);
                    while at.len() < n {
                        let k = at.len();
                        let j = c.next[k][(at[k - 1] + 1).max(floor[k])] as usize;
                        if j >= last {
                            break;
                        }
                        at.push(j);
                    }
                    match self.excluded(c, &at, last) {
                        None => break,
                        Some((0, _)) => return None,
                        // The excluding event itself may serve as step `from`.
                        Some((from, x)) => floor[from] = x,
                    }
                }
            }
            Order::Strict => {
                while at.len() < n {
                    let j = at[at.len() - 1] + 1;
                    if j >= last || c.masks[j] & (1 << at.len()) == 0 {
                        break;
                    }
                    at.push(j);
                }
            }
            Order::Unordered => {
                // Each event completes the lowest step it matches that is not done yet.
                let mut done = 1u32 << c.masks[start].trailing_zeros();
                while at.len() < n {
                    let pos = at[at.len() - 1] + 1;
                    let candidate =
                        (0..n).filter(|k| done & (1 << k) == 0).map(|k| (c.next[k][pos.min(len)] as usize, k)).min();
                    match candidate {
                        Some((j, k)) if j < last => {
                            done |= 1 << k;
                            at.push(j);
                        }
                        _ => break,
                    }
                }
            }
        }
        if self.excluded(c, &at, last).is_some() {
            return None;
        }
        let first = &c.events[start];
        let key = match self.breakdown {
            None => NONE,
            Some(Dim::Page) => first.page,
            Some(dim) => BREAKDOWN_SOURCES.iter().find(|(d, _)| *d == dim).map_or(NONE, |(_, i)| first.source[*i]),
        };
        let times = at.iter().map(|i| c.events[*i].ts).collect();
        Some(Attempt { steps: n as u8, reached: at.len() as u8, times, key })
    }
}

impl Funnel {
    /// The first exclusion the chain `at` violates: an excluding event after its step `from` and
    /// before its step `to` (or the window's end, `last`). Returns `from` and the index of the
    /// last such event.
    fn excluded(&self, c: &Context<'_>, at: &[usize], last: usize) -> Option<(usize, usize)> {
        for (j, (_, from, to)) in self.exclusions.iter().enumerate() {
            let Some(&after) = at.get(*from) else { continue };
            let before = at.get(*to).copied().unwrap_or(last);
            let prefix = &c.exclusions[j];
            if before > after + 1 && prefix[before] > prefix[after + 1] {
                // The last excluding event before `before`: where the prefix count last rose.
                let x = (after + 1..before).rev().find(|i| prefix[i + 1] > prefix[*i]).expect("counted");
                return Some((*from, x));
            }
        }
        None
    }
}

/// What one evaluation precomputes over a user's events.
struct Context<'a> {
    events: &'a [LogEvent],
    /// Steps matched by each event (bit k: step k).
    masks: &'a [u32],
    next: &'a [Vec<u32>],
    /// Per exclusion, prefix counts of matching events.
    exclusions: &'a [Vec<u32>],
}

/// One event as funnels (and later paths and retention) need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    pub ts: i64,
    pub name: Sym,
    pub page: Sym,
    /// `utm_source`, `device`, `country`.
    pub source: [Sym; 3],
    /// `(key, value)` symbols of `props`, if any.
    pub props: Option<Box<[(Sym, Sym)]>>,
    /// Its path node (cleaned page or conversion event), `NONE` if it is not a path step.
    #[serde(default)]
    pub node: Sym,
}

/// A user's best attempt: steps reached (1..=n), the time of each, and the breakdown value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Steps of the funnel it was computed for (a definition may change across restarts).
    pub steps: u8,
    pub reached: u8,
    pub times: SmallVec<[i64; 4]>,
    pub key: Sym,
}

impl Attempt {
    /// Not converted: `(last step reached, 0-based; start time)`.
    pub fn open(&self) -> Option<(u8, i64)> {
        (self.reached < self.steps).then(|| (self.reached - 1, self.times[0]))
    }

    pub fn day(&self) -> u32 {
        self.times[0].div_euclid(MS_PER_DAY).max(0) as u32
    }
}

/// One aggregate of a funnel's results; the fact's diff carries the count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FunnelStat {
    /// Users whose best attempt reached this step (0-based) or further.
    Reached(u8),
    /// Users who took this many whole seconds from the previous step to this one (0-based).
    StepSecs(u8, u32),
}

/// `(funnel, breakdown value, day of the attempt's start, stat, count)`.
pub type FunnelCell = (u32, Sym, u32, FunnelStat, i64);

/// The aggregate cells of one user's result.
pub fn cells_of(funnel: u32, a: &Attempt) -> impl Iterator<Item = FunnelCell> + '_ {
    let (key, day) = (a.key, a.day());
    let reached = (0..a.reached).map(move |i| (funnel, key, day, FunnelStat::Reached(i), 1));
    let secs = a
        .times
        .windows(2)
        .enumerate()
        .map(move |(i, w)| (funnel, key, day, FunnelStat::StepSecs(i as u8 + 1, ((w[1] - w[0]) / 1000) as u32), 1));
    reached.chain(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: serde_json::Value) -> FunnelDef {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn definitions_are_checked_with_messages_that_say_what_to_change() {
        let err = |j| Funnel::new(def(j)).unwrap_err();
        assert!(err(serde_json::json!({"name": "a b", "steps": [{"event": "x"}, {"event": "y"}]}))
            .contains("letters, digits"));
        assert!(err(serde_json::json!({"name": "f", "steps": [{"event": "x"}]})).contains("2 to 20 steps"));
        assert!(err(serde_json::json!({"name": "f", "breakdown": "os", "steps": [{"event": "x"}, {"event": "y"}]}))
            .contains("utm_source, device, country, page"));
        let same = serde_json::json!({"name": "f", "steps": [{"event": "x"}, {"event": "y"}, {"event": "z"}],
            "exclusions": [{"event": "y", "from": 1, "to": 3}]});
        assert!(err(same).contains("same as step 2"));
        let bounds = serde_json::json!({"name": "f", "steps": [{"event": "x"}, {"event": "y"}],
            "exclusions": [{"event": "q", "from": 2, "to": 2}]});
        assert!(err(bounds).contains("1 <= from < to <= 2"));
    }

    #[test]
    fn an_exclusion_moves_the_step_it_follows_instead_of_cancelling_a_clean_path() {
        let funnel = Funnel::new(def(serde_json::json!({"name": "f",
            "steps": [{"event": "a"}, {"event": "b"}, {"event": "c"}],
            "exclusions": [{"event": "x", "from": 2, "to": 3}]})))
        .unwrap();
        let events: Vec<LogEvent> = ["a", "b", "x", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| LogEvent {
                ts: i as i64 * 1000,
                name: crate::event::sym(n),
                page: NONE,
                source: [NONE; 3],
                props: None,
                node: NONE,
            })
            .collect();
        let pages = PageTexts::default();
        let best = funnel.evaluate(&events, &pages).unwrap();
        assert_eq!((best.reached, best.times.to_vec()), (3, vec![0, 3000, 4000]));
        // Without a `b` after the `x`, the attempt stops before step 2.
        let best = funnel.evaluate(&events[..3], &pages).unwrap();
        assert_eq!(best.reached, 1);
    }
}
