//! One alert per incident. Every rule watches a *series* (a metric of one dimension key, a
//! funnel's conversion, or one IP, user or device); the rules that watch the same series share one
//! incident. The first rule to fire opens it; another rule firing on that series while it is
//! open joins it (listed in `rules`, no second alert, no second page); it resolves once every
//! rule in it has; a rule firing within `hold_off_minutes` after that reopens it (the same alert,
//! `reopened` counted) instead of opening a new one.
//!
//! The engine judges buckets in the order they become final, so which rule opens an incident and
//! whether a run joins or reopens one does not depend on how publishes fell.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use read::model::{Alert, AlertChange, AlertState};

/// An incident: its alert as shown, and the rules firing in it now.
struct Incident {
    alert: Alert,
    firing: BTreeSet<String>,
}

impl Incident {
    /// Whether `rule`'s verdicts are the numbers shown: the opening rule's while it fires, then
    /// those of whichever rule still does.
    fn shows(&self, rule: &str) -> bool {
        self.alert.rule == rule || !self.firing.contains(&self.alert.rule)
    }
}

pub struct Incidents {
    hold_off_ms: i64,
    /// Alerts kept for the history.
    keep: usize,
    /// Incidents open at once that one rule may open (a flood of keys is one problem).
    max_open_per_rule: usize,
    /// The latest incident of each series, open or within its hold-off.
    by_series: BTreeMap<String, Incident>,
    /// Oldest fired first, whatever order the rules were judged in (a replay keeps the same
    /// newest `keep` however its publishes fell).
    history: VecDeque<Alert>,
    /// Alerts opened since the start, by rule (the history keeps only the newest).
    fired: BTreeMap<String, u64>,
    /// Incidents joined by a rule that did not open them, by rule.
    joined: BTreeMap<String, u64>,
    changes: Vec<AlertChange>,
}

impl Incidents {
    pub fn new(hold_off_minutes: u32, keep: usize, max_open_per_rule: usize) -> Incidents {
        Incidents {
            hold_off_ms: hold_off_minutes as i64 * 60_000,
            keep,
            max_open_per_rule,
            by_series: BTreeMap::new(),
            history: VecDeque::new(),
            fired: BTreeMap::new(),
            joined: BTreeMap::new(),
            changes: Vec::new(),
        }
    }

    /// Whether `rule` may fire on `series` at `fired_ms`: joining or reopening always may;
    /// opening only while the rule has fewer than the limit open.
    pub fn may_fire(&self, series: &str, rule: &str, fired_ms: i64) -> bool {
        self.continues(series, fired_ms).is_some() || self.open_by(rule) < self.max_open_per_rule
    }

    /// What a run firing on `series` at `fired_ms` does to its latest incident: joins it while
    /// open (`Some(false)`), reopens it within the hold-off (`Some(true)`), or neither (`None`:
    /// it opens a new one).
    fn continues(&self, series: &str, fired_ms: i64) -> Option<bool> {
        let incident = self.by_series.get(series)?;
        if !incident.firing.is_empty() {
            return Some(false);
        }
        incident.alert.resolved_ms.is_some_and(|resolved| fired_ms - resolved <= self.hold_off_ms).then_some(true)
    }

    fn open_by(&self, rule: &str) -> usize {
        self.by_series.values().filter(|i| !i.firing.is_empty() && i.alert.rule == rule).count()
    }

    /// `alert` (its rule's run, as it would open an incident) fires on `series`.
    pub fn fire(&mut self, series: &str, alert: Alert) {
        let rule = alert.rule.clone();
        let Some(reopen) = self.continues(series, alert.fired_ms) else {
            *self.fired.entry(rule.clone()).or_default() += 1;
            let at = self.history.partition_point(|a| (a.fired_ms, &a.id) <= (alert.fired_ms, &alert.id));
            self.history.insert(at, alert.clone());
            while self.history.len() > self.keep {
                self.history.pop_front();
            }
            self.changes.push(AlertChange { action: AlertState::Firing, alert: alert.clone() });
            self.by_series.insert(series.to_string(), Incident { alert, firing: [rule].into() });
            return;
        };
        let incident = self.by_series.get_mut(series).expect("matched above");
        incident.firing.insert(rule.clone());
        let shown = &mut incident.alert;
        if !shown.rules.contains(&rule) {
            *self.joined.entry(rule.clone()).or_default() += 1;
            shown.rules.push(rule);
        }
        shown.severity = shown.severity.max(alert.severity);
        if reopen {
            shown.state = AlertState::Firing;
            (shown.ended_ms, shown.resolved_ms) = (None, None);
            shown.reopened += 1;
            shown.reopened_ms = Some(alert.fired_ms);
            (shown.value, shown.baseline, shown.summary) = (alert.value, alert.baseline, alert.summary);
        }
        let shown = shown.clone();
        self.record(&shown);
        if reopen {
            self.changes.push(AlertChange { action: AlertState::Firing, alert: shown });
        }
    }

    /// The numbers of a verdict of `rule` on `series` (firing or recovering).
    pub fn update(&mut self, series: &str, rule: &str, value: f64, baseline: Option<f64>, summary: String) {
        if let Some(incident) = self.by_series.get_mut(series).filter(|i| i.firing.contains(rule) && i.shows(rule)) {
            (incident.alert.value, incident.alert.baseline, incident.alert.summary) = (value, baseline, summary);
        }
    }

    /// `rule` resolved on `series`; the incident resolves with the last of its rules.
    pub fn leave(&mut self, series: &str, rule: &str, ended_ms: i64, resolved_ms: i64) {
        let Some(incident) = self.by_series.get_mut(series) else { return };
        if !incident.firing.remove(rule) || !incident.firing.is_empty() {
            return;
        }
        incident.alert.state = AlertState::Resolved;
        (incident.alert.ended_ms, incident.alert.resolved_ms) = (Some(ended_ms), Some(resolved_ms));
        let alert = incident.alert.clone();
        self.record(&alert);
        self.changes.push(AlertChange { action: AlertState::Resolved, alert });
    }

    /// Writes an incident's new state over its entry in the history.
    fn record(&mut self, alert: &Alert) {
        let same = |a: &&mut Alert| a.id == alert.id && a.started_ms == alert.started_ms;
        if let Some(past) = self.history.iter_mut().rev().find(same) {
            *past = alert.clone();
        }
    }

    /// Forgets resolved incidents whose hold-off ended before `judged_ms` (no later run can
    /// reopen them: runs are judged in event-time order, give or take the settle time).
    pub fn forget_before(&mut self, judged_ms: i64, settle_ms: i64) {
        let horizon = self.hold_off_ms + settle_ms;
        self.by_series
            .retain(|_, i| !i.firing.is_empty() || i.alert.resolved_ms.is_none_or(|r| judged_ms - r <= horizon));
    }

    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.by_series.values().filter(|i| !i.firing.is_empty()).map(|i| &i.alert)
    }

    /// Oldest first.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &Alert> {
        self.history.iter()
    }

    pub fn fired(&self) -> &BTreeMap<String, u64> {
        &self.fired
    }

    pub fn joined(&self) -> &BTreeMap<String, u64> {
        &self.joined
    }

    pub fn take_changes(&mut self) -> Vec<AlertChange> {
        std::mem::take(&mut self.changes)
    }
}
