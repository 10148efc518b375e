//! The funnel view: each user's funnel result as a pure function of the user's retained events
//! (see `userlog`). A user is re-evaluated once per epoch when their log changed, so a funnel
//! defined at run time and one defined in config from the start see the same data and give the
//! same numbers. Definitions and their semantics: `schema::funnels`. The property test checks
//! ordered attempts against a search over every chain (longest valid one, earliest among equals).

use parking_lot::Mutex;
use schema::cells::Dim;
use schema::event::{sym_or_none, Sym, NONE};
use schema::funnels::{prop_text, FunnelDef, FunnelStat, Order, StepDef, Unit};
use schema::ids::IdMap;
use schema::sessions::BREAKDOWNS as BREAKDOWN_SOURCES;
use schema::time::MS_PER_DAY;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::userlog::{LogEvent, PageTexts};

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
            props.push((schema::event::sym(key), schema::event::sym(&text)));
        }
        Ok(Matcher {
            props,
            name: schema::event::sym(&step.event),
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

/// A funnel compiled for evaluation.
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

impl Funnel {
    pub fn new(def: FunnelDef) -> Result<Funnel, String> {
        def.validate()?;
        let name = &def.name;
        let steps = def
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| Matcher::compile(s, &format!("funnel `{name}` step {}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let exclusions = def
            .exclusion_bounds()
            .enumerate()
            .map(|(i, (x, from, to))| {
                Matcher::compile(&x.step, &format!("funnel `{name}` exclusion {}", i + 1))
                    .map(|m| (m, from - 1, to - 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (breakdown, fingerprint) = (def.breakdown_dim(), def.fingerprint());
        Ok(Funnel { def, steps, exclusions, breakdown, fingerprint })
    }

    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// Whether adding `e` right after `before` (the user's previous event) can change a result:
    /// it matches a step or an exclusion, or, in a strict funnel, it separates a step from what
    /// follows it. Over sessions any event can join two sessions or move a cut: always.
    /// `steps`: `e`'s [`Self::step_mask`].
    pub fn relevant(&self, e: &LogEvent, steps: u32, before: Option<&LogEvent>, pages: &PageTexts) -> bool {
        self.def.over == Unit::Sessions
            || steps != 0
            || self.exclusions.iter().any(|(x, _, _)| x.matches(e, pages))
            || self.def.order == Order::Strict && before.is_some_and(|b| self.steps.iter().any(|s| s.matches(b, pages)))
    }

    /// The steps `e` matches: bit k for step k + 1 (counted per minute for funnel-drop alerts,
    /// and whether it can change a result).
    pub fn step_mask(&self, e: &LogEvent, pages: &PageTexts) -> u32 {
        self.steps.iter().enumerate().filter(|(_, s)| s.matches(e, pages)).fold(0, |m, (i, _)| m | 1 << i)
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
                ord: i as u64,
                name: schema::event::sym(n),
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
