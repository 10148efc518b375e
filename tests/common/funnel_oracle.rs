//! From-scratch funnels for the reference: every user's events as strings, every possible start,
//! with no user logs, masks, registry or dataflow. Only the final aggregation into report numbers
//! is shared with the engine (`read::funnel_query::numbers`).

use std::collections::{BTreeMap, HashMap};

use read::funnel_query::{numbers, FunnelCells};
use read::model::FunnelDump;
use schema::event::sym;
use schema::funnels::{FunnelDef, Order, StepDef, Unit};
use views::funnels::{cells_of, Attempt};

use super::oracle::{Accepted, Spec};

pub fn field<'a>(e: &'a Accepted, name: &str) -> &'a str {
    match name {
        "utm_source" => &e.utm_source,
        "device" => &e.device,
        "country" => &e.country,
        "page" => e.page.as_deref().unwrap_or("(none)"),
        _ => unreachable!("validated"),
    }
}

/// Compiled once per pattern: the reference matches every event against every step.
fn regex_matches(pattern: &str, text: &str) -> bool {
    thread_local! {
        static COMPILED: std::cell::RefCell<HashMap<String, regex::Regex>> = Default::default();
    }
    COMPILED.with(|c| {
        c.borrow_mut().entry(pattern.to_string()).or_insert_with(|| regex::Regex::new(pattern).unwrap()).is_match(text)
    })
}

pub fn matches(step: &StepDef, e: &Accepted) -> bool {
    let page = e.page.as_deref().unwrap_or("");
    e.name == step.event
        && step.page.as_deref().is_none_or(|p| p == page)
        && step.page_prefix.as_deref().is_none_or(|p| page.starts_with(p))
        && step.page_regex.as_deref().is_none_or(|r| regex_matches(r, page))
        && [("utm_source", &step.utm_source), ("device", &step.device), ("country", &step.country)]
            .iter()
            .all(|(f, want)| want.as_deref().is_none_or(|w| field(e, f) == if w.is_empty() { "(none)" } else { w }))
        && step.props.iter().all(|(k, v)| {
            let want = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            e.props.get(k) == Some(&want)
        })
}

/// The attempt from `events[start]`: indices of the events completing each step.
fn attempt(def: &FunnelDef, events: &[&Accepted], start: usize) -> Option<Vec<usize>> {
    let n = def.steps.len();
    let end = events[start].ts + def.window_minutes as i64 * 60_000;
    let mut at = Vec::new();
    match def.order {
        Order::Ordered if !def.exclusions.is_empty() => {
            // Every ordered chain from `start`: the longest valid one, the earliest among equals.
            if !matches(&def.steps[0], events[start]) {
                return None;
            }
            let mut best: Option<Vec<usize>> = None;
            let mut chain = vec![start];
            search(def, events, end, &mut chain, &mut best);
            return best;
        }
        Order::Ordered | Order::Strict => {
            if !matches(&def.steps[0], events[start]) {
                return None;
            }
            at.push(start);
            for (i, e) in events.iter().enumerate().skip(start + 1) {
                if at.len() == n || e.ts > end {
                    break;
                }
                if matches(&def.steps[at.len()], e) {
                    at.push(i);
                } else if def.order == Order::Strict {
                    break;
                }
            }
        }
        Order::Unordered => {
            let mut done = vec![false; n];
            for (i, e) in events.iter().enumerate().skip(start) {
                if at.len() == n || e.ts > end {
                    break;
                }
                if let Some(s) = (0..n).find(|s| !done[*s] && matches(&def.steps[*s], e)) {
                    done[s] = true;
                    at.push(i);
                }
            }
            if at.first() != Some(&start) {
                return None;
            }
        }
    }
    valid(def, events, end, &at).then_some(at)
}

/// No exclusion event after a chain's step `from` and before its step `to` (or the window's end).
fn valid(def: &FunnelDef, events: &[&Accepted], end: i64, at: &[usize]) -> bool {
    let n = def.steps.len();
    def.exclusions.iter().all(|x| {
        let (from, to) = (x.from.unwrap_or(1) - 1, x.to.unwrap_or(n) - 1);
        let Some(&after) = at.get(from) else { return true };
        let before = at.get(to).copied().unwrap_or(usize::MAX);
        !(after + 1..before.min(events.len())).any(|i| events[i].ts <= end && matches(&x.step, events[i]))
    })
}

/// Depth-first over every extension of `chain`, in index order: the first valid chain found at
/// each length is the earliest.
fn search(def: &FunnelDef, events: &[&Accepted], end: i64, chain: &mut Vec<usize>, best: &mut Option<Vec<usize>>) {
    if valid(def, events, end, chain) && best.as_ref().is_none_or(|b| chain.len() > b.len()) {
        *best = Some(chain.clone());
    }
    if chain.len() == def.steps.len() {
        return;
    }
    let from = chain[chain.len() - 1] + 1;
    for i in from..events.len() {
        if events[i].ts > end {
            break;
        }
        if matches(&def.steps[chain.len()], events[i]) {
            chain.push(i);
            search(def, events, end, chain, best);
            chain.pop();
        }
    }
}

/// A user's events (sorted) cut into sessions: a new one after a gap over the timeout, or every
/// `max` from the first event of a gap-free run.
pub fn sessions<'a>(events: &[&'a Accepted], cfg: &schema::ViewConfig) -> Vec<Vec<&'a Accepted>> {
    let timeout = cfg.sessions.inactivity_minutes as i64 * 60_000;
    let max = cfg.sessions.max_hours as i64 * 3_600_000;
    let mut out: Vec<Vec<&Accepted>> = Vec::new();
    let (mut run_start, mut last, mut piece) = (0, i64::MIN, -1);
    for e in events {
        if out.is_empty() || e.ts - last > timeout {
            run_start = e.ts;
            piece = -1;
        }
        last = e.ts;
        if (e.ts - run_start) / max != piece {
            piece = (e.ts - run_start) / max;
            out.push(Vec::new());
        }
        out.last_mut().unwrap().push(*e);
    }
    out
}

/// Each user's last `max_events_per_user` events that are still in the window of `as_of`, in the
/// engine's order (time, then partition and position).
pub fn retained<'a>(spec: &Spec, accepted: &'a [Accepted], as_of: Option<i64>) -> BTreeMap<&'a str, Vec<&'a Accepted>> {
    let cfg = &spec.views;
    let mut users: BTreeMap<&str, Vec<&Accepted>> = BTreeMap::new();
    for e in accepted {
        users.entry(&e.user).or_default().push(e);
    }
    for events in users.values_mut() {
        events.sort_by_key(|e| e.ts); // stable: the accepted events are in partition order
        let keep_from = events.len().saturating_sub(cfg.max_events_per_user);
        let as_of = as_of.unwrap();
        let floor_minute = (as_of.div_euclid(60_000) + 1 - cfg.window_minutes as i64).max(0);
        *events = events[keep_from..].iter().copied().filter(|e| e.ts >= floor_minute * 60_000).collect();
    }
    users.retain(|_, events| !events.is_empty());
    users
}

/// Funnels of the spec's views config, over each user's retained events.
pub fn dump(spec: &Spec, accepted: &[Accepted], as_of: Option<i64>) -> BTreeMap<String, FunnelDump> {
    let cfg = &spec.views;
    let users = retained(spec, accepted, as_of);
    let mut out = BTreeMap::new();
    for (index, def) in cfg.funnels.iter().enumerate() {
        let mut cells = FunnelCells::default();
        let mut open = Vec::new();
        let mut names: HashMap<u64, String> = HashMap::new();
        for (user, events) in &users {
            let events = events.clone();
            let units = match def.over {
                Unit::Users => vec![events],
                Unit::Sessions => sessions(&events, cfg),
            };
            for events in units {
                let mut best: Option<Vec<usize>> = None;
                for start in 0..events.len() {
                    if let Some(at) = attempt(def, &events, start) {
                        if best.as_ref().is_none_or(|b| at.len() > b.len()) {
                            best = Some(at);
                        }
                    }
                }
                let Some(at) = best else { continue };
                let key = def.breakdown.as_deref().map(|f| field(events[at[0]], f).to_string());
                let key_sym = match key.as_deref() {
                    None | Some("(none)") => 0,
                    Some(k) => sym(k),
                };
                if let Some(k) = key {
                    names.insert(key_sym, k);
                }
                let result = Attempt {
                    steps: def.steps.len() as u8,
                    reached: at.len() as u8,
                    times: at.iter().map(|i| events[*i].ts).collect(),
                    key: key_sym,
                };
                for (_, k, day, stat, c) in cells_of(index as u32, &result) {
                    *cells.entry((k, day, stat)).or_default() += c;
                }
                if at.len() < def.steps.len() {
                    open.push((at.len() as u8 - 1, result.times[0], user.to_string()));
                }
            }
        }
        open.sort();
        let name = |k: u64| names.get(&k).cloned().unwrap_or_else(|| "(none)".to_string());
        out.insert(def.name.clone(), FunnelDump { numbers: numbers(def, &cells, &name), open_attempts: open });
    }
    out
}
