//! Funnels: definitions, and each user's funnel result as a pure function of the user's retained
//! events. Ingestion keeps every user's events for the window and re-evaluates a user once per
//! epoch when they changed, so a funnel defined at run time and one defined in config from the
//! start see the same data and give the same numbers.
//!
//! Semantics (documented in the README):
//! - An *attempt* starts at an event matching step 1 and must reach each later step within the
//!   conversion window from its start. `ordered`: each step at or after the previous one, other
//!   events may come between; `strict`: each step is the user's very next event; `unordered`: the
//!   steps in any order (an attempt starts at an event of any step; step N is reached when N
//!   distinct steps have happened).
//! - An exclusion event strictly between an attempt's step `from` and step `to` (or after step
//!   `from` inside the window when `to` was not reached) cancels the attempt.
//! - A user counts with their best attempt: most steps reached, then the earliest start. The
//!   breakdown value is that attempt's first event's (first touch).

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::event::{Sym, NONE};
use crate::facts::Dim;
use crate::ids::IdMap;

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelDef {
    pub name: String,
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

/// A step ready to match: symbols and a compiled pattern.
#[derive(Debug)]
struct Matcher {
    name: Sym,
    page: Option<Sym>,
    prefix: Option<String>,
    regex: Option<regex::Regex>,
    fields: SmallVec<[(usize, Sym); 1]>,
    /// Prefix and pattern results by page symbol (they depend on the page only).
    by_page: Mutex<IdMap<bool>>,
}

/// Page texts by symbol, kept with the events (every worker that evaluates sees the same).
pub type PageTexts = IdMap<Box<str>>;

fn sym_or_none(text: &str) -> Sym {
    if text.is_empty() {
        NONE
    } else {
        crate::event::sym(text)
    }
}

impl Matcher {
    fn compile(step: &StepDef, what: &str) -> Result<Matcher, String> {
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
        Ok(Matcher {
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

    fn matches(&self, e: &LogEvent, pages: &PageTexts) -> bool {
        if e.name != self.name || self.page.is_some_and(|p| p != e.page) {
            return false;
        }
        if self.fields.iter().any(|(i, v)| e.source[*i] != *v) {
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
    /// Index into `LogEvent::source` (0..3) or 3 for `page`.
    breakdown: Option<usize>,
    /// Changes whenever the definition does: results computed under another are recomputed.
    pub fingerprint: u64,
}

pub const BREAKDOWNS: &str = "utm_source, device, country, page";

impl Funnel {
    pub fn new(def: FunnelDef) -> Result<Funnel, String> {
        let name = &def.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("funnel name `{name}`: use letters, digits, `_` and `-` (it appears in URLs)"));
        }
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
            exclusions.push((Matcher::compile(&x.step, &what)?, from - 1, to - 1));
        }
        let breakdown = match def.breakdown.as_deref() {
            None => None,
            Some("utm_source") => Some(0),
            Some("device") => Some(1),
            Some("country") => Some(2),
            Some("page") => Some(3),
            Some(other) => {
                return Err(format!("funnel `{name}`: unknown breakdown `{other}`; use one of: {BREAKDOWNS}"))
            }
        };
        let fingerprint = xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(&def).expect("serialisable"));
        Ok(Funnel { def, steps, exclusions, breakdown, fingerprint })
    }

    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    pub fn window_ms(&self) -> i64 {
        self.def.window_minutes as i64 * 60_000
    }

    pub fn breakdown_dim(&self) -> Option<Dim> {
        match self.breakdown? {
            0 => Some(Dim::UtmSource),
            1 => Some(Dim::Device),
            2 => Some(Dim::Country),
            _ => Some(Dim::Page),
        }
    }

    /// The user's best attempt over their events (sorted by time, then arrival).
    pub fn evaluate(&self, events: &[LogEvent], pages: &PageTexts) -> Option<Attempt> {
        let n = self.steps.len();
        // Which steps (bit i) and exclusions (bit 32 + j) each event matches.
        let masks: Vec<u64> = events
            .iter()
            .map(|e| {
                let mut m = 0u64;
                for (i, s) in self.steps.iter().enumerate() {
                    if s.matches(e, pages) {
                        m |= 1 << i;
                    }
                }
                for (j, (x, _, _)) in self.exclusions.iter().enumerate() {
                    if x.matches(e, pages) {
                        m |= 1 << (32 + j);
                    }
                }
                m
            })
            .collect();
        let entry_mask = if self.def.order == Order::Unordered { (1u64 << n) - 1 } else { 1 };
        let mut best: Option<Attempt> = None;
        for start in 0..events.len() {
            if masks[start] & entry_mask == 0 {
                continue;
            }
            let Some(attempt) = self.attempt(events, &masks, start) else { continue };
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
    fn attempt(&self, events: &[LogEvent], masks: &[u64], start: usize) -> Option<Attempt> {
        let n = self.steps.len();
        let end = events[start].ts.saturating_add(self.window_ms());
        // The event index at which each step was reached, in step order.
        let mut at: SmallVec<[usize; 8]> = SmallVec::new();
        match self.def.order {
            Order::Ordered => {
                at.push(start);
                for (i, m) in masks.iter().enumerate().skip(start + 1) {
                    if at.len() == n || events[i].ts > end {
                        break;
                    }
                    if m & (1 << at.len()) != 0 {
                        at.push(i);
                    }
                }
            }
            Order::Strict => {
                at.push(start);
                for (i, m) in masks.iter().enumerate().skip(start + 1) {
                    if at.len() == n || events[i].ts > end || m & (1 << at.len()) == 0 {
                        break;
                    }
                    at.push(i);
                }
            }
            Order::Unordered => {
                let mut done = 0u64;
                for (i, m) in masks.iter().enumerate().skip(start) {
                    if at.len() == n || events[i].ts > end {
                        break;
                    }
                    let new = m & ((1u64 << n) - 1) & !done;
                    if new != 0 {
                        // One event completes one step: the lowest new one.
                        done |= new & new.wrapping_neg();
                        at.push(i);
                    }
                }
            }
        }
        for (j, (_, from, to)) in self.exclusions.iter().enumerate() {
            let Some(&after) = at.get(*from) else { continue };
            let before = at.get(*to).copied().unwrap_or(usize::MAX);
            let excluded = masks
                .iter()
                .enumerate()
                .skip(after + 1)
                .take_while(|(i, _)| *i < before && events[*i].ts <= end)
                .any(|(_, m)| m & (1 << (32 + j)) != 0);
            if excluded {
                return None;
            }
        }
        let first = &events[start];
        let key = match self.breakdown {
            None => NONE,
            Some(3) => first.page,
            Some(i) => first.source[i],
        };
        Some(Attempt { reached: at.len() as u8, times: at.iter().map(|i| events[*i].ts).collect(), key })
    }
}

/// One event as funnels (and later paths and retention) need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    pub ts: i64,
    pub name: Sym,
    pub page: Sym,
    /// `utm_source`, `device`, `country`.
    pub source: [Sym; 3],
}

/// A user's best attempt: steps reached (1..=n), the time of each, and the breakdown value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub reached: u8,
    pub times: SmallVec<[i64; 4]>,
    pub key: Sym,
}

impl Attempt {
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

/// The funnels of the engine: from config at start, then added through the API. Ingestion picks
/// up new ones between epochs and computes them over the events it still keeps.
#[derive(Default)]
pub struct FunnelRegistry {
    funnels: RwLock<Vec<std::sync::Arc<Funnel>>>,
    version: AtomicU64,
}

impl FunnelRegistry {
    pub fn new(defs: &[FunnelDef]) -> Result<FunnelRegistry, String> {
        let registry = FunnelRegistry::default();
        for def in defs {
            registry.add(def.clone())?;
        }
        Ok(registry)
    }

    /// Adds a funnel; its name must be new.
    pub fn add(&self, def: FunnelDef) -> Result<std::sync::Arc<Funnel>, String> {
        let funnel = std::sync::Arc::new(Funnel::new(def)?);
        let mut funnels = self.funnels.write();
        if funnels.iter().any(|f| f.def.name == funnel.def.name) {
            return Err(format!("a funnel named `{}` exists already; choose another name", funnel.def.name));
        }
        funnels.push(funnel.clone());
        self.version.fetch_add(1, Ordering::Release);
        Ok(funnel)
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn all(&self) -> Vec<std::sync::Arc<Funnel>> {
        self.funnels.read().clone()
    }

    /// Index and funnel by name.
    pub fn get(&self, name: &str) -> Option<(u32, std::sync::Arc<Funnel>)> {
        self.funnels.read().iter().enumerate().find(|(_, f)| f.def.name == name).map(|(i, f)| (i as u32, f.clone()))
    }

    pub fn names(&self) -> Vec<String> {
        self.funnels.read().iter().map(|f| f.def.name.clone()).collect()
    }
}
