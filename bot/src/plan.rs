//! Decides what to send from the alerts the engine reports and what was already delivered. A pure
//! function of its inputs: the engine may report an alert many times (every tick, every restart),
//! and the state makes each notification happen once.

use std::collections::BTreeMap;

use read::model::{Alert, AlertState};

use crate::config::BotConfig;
use crate::state::{alert_key, Group, Op, ReplyKind, State, Tracked};

/// Active and recent alerts, one per occurrence (`id@started_ms`), the resolved copy winning.
pub fn occurrences(active: Vec<Alert>, history: Vec<Alert>) -> Vec<Alert> {
    let mut by_key: BTreeMap<String, Alert> = BTreeMap::new();
    for alert in active.into_iter().chain(history) {
        let key = alert_key(&alert);
        match by_key.get(&key) {
            Some(seen) if seen.state == AlertState::Resolved => {}
            _ => {
                by_key.insert(key, alert);
            }
        }
    }
    by_key.into_values().collect()
}

/// Queues what `alerts` call for; returns whether the state changed. `head_ms` is the engine's
/// newest event time, `now_ms` the wall clock.
pub fn plan(state: &mut State, config: &BotConfig, alerts: &[Alert], head_ms: Option<i64>, now_ms: i64) -> bool {
    let mut changed = false;
    for alert in alerts {
        let key = alert_key(alert);
        let resolved = alert.state == AlertState::Resolved;
        match state.alerts.get_mut(&key) {
            Some(tracked) => {
                let group = tracked.group;
                tracked.alert.value = alert.value;
                tracked.alert.baseline = alert.baseline;
                tracked.alert.silenced = alert.silenced;
                if resolved && !tracked.resolve_queued {
                    tracked.alert = alert.clone();
                    tracked.resolve_queued = true;
                    tracked.resolved_at_ms = Some(now_ms);
                    let channel = state.groups[&group].channel.clone();
                    state.push(&channel, Op::Reply { group, alert: key.clone(), kind: ReplyKind::Resolved });
                    state.push(&channel, Op::Update { group });
                    changed = true;
                } else if !resolved && tracked.resolve_queued {
                    // Reopened within the engine's hold-off: the same incident fires again, in
                    // its own thread and message rather than as a new page.
                    tracked.alert = alert.clone();
                    (tracked.resolve_queued, tracked.resolved_at_ms, tracked.notified_ms) = (false, None, now_ms);
                    let channel = state.groups[&group].channel.clone();
                    if !alert.silenced {
                        state.push(&channel, Op::Reply { group, alert: key.clone(), kind: ReplyKind::Reopened });
                    }
                    state.push(&channel, Op::Update { group });
                    changed = true;
                } else if !resolved && !alert.silenced && repeat_due(config, tracked, now_ms) {
                    tracked.notified_ms = now_ms;
                    let channel = state.groups[&group].channel.clone();
                    if state.groups[&group].ts.is_some() {
                        state.push(&channel, Op::Reply { group, alert: key.clone(), kind: ReplyKind::StillFiring });
                        changed = true;
                    }
                }
            }
            None => {
                // Muted when it fired: not delivered (Alertmanager's rule); it is if the silence
                // ends while it still fires.
                if alert.silenced {
                    continue;
                }
                if resolved {
                    // Fired and resolved before the bot saw it: recent ones are posted (as resolved,
                    // no thread), old ones are a rebuild replaying history and stay quiet.
                    let recent = head_ms.is_some_and(|head| {
                        head - alert.resolved_ms.unwrap_or(alert.fired_ms) <= config.resolved_max_age_minutes * 60_000
                    });
                    if !recent {
                        continue;
                    }
                }
                let group = join_or_open(state, config, alert, now_ms);
                state.alerts.insert(
                    key.clone(),
                    Tracked {
                        alert: alert.clone(),
                        group,
                        resolve_queued: resolved,
                        notified_ms: now_ms,
                        resolved_at_ms: resolved.then_some(now_ms),
                    },
                );
                changed = true;
            }
        }
    }
    changed | plan_digests(state, config, now_ms)
}

fn repeat_due(config: &BotConfig, tracked: &Tracked, now_ms: i64) -> bool {
    config.repeat_interval_minutes > 0 && now_ms - tracked.notified_ms >= config.repeat_interval_minutes as i64 * 60_000
}

/// The unposted group of the alert's rule and channel still in its wait, or a new one.
fn join_or_open(state: &mut State, config: &BotConfig, alert: &Alert, now_ms: i64) -> u64 {
    let channel = config.channel_for(alert).to_string();
    let wait_ms = config.group_wait_seconds as i64 * 1000;
    let key = alert_key(alert);
    let open = state.groups.iter_mut().find(|(_, g)| {
        !g.sealed && g.ts.is_none() && g.rule == alert.rule && g.channel == channel && now_ms < g.opened_ms + wait_ms
    });
    if let Some((id, group)) = open {
        group.alerts.push(key);
        return *id;
    }
    let id = state.next_group;
    state.next_group += 1;
    state.groups.insert(
        id,
        Group {
            channel: channel.clone(),
            rule: alert.rule.clone(),
            alerts: vec![key],
            ts: None,
            channel_id: None,
            sealed: false,
            acked_by: None,
            snoozed_until_ms: None,
            snoozed_by: None,
            opened_ms: now_ms,
        },
    );
    state.push(&channel, Op::Post { group: id, not_before_ms: now_ms + wait_ms });
    id
}

/// Queues a digest when a configured period begins (not at start-up: the first one waits for the
/// next boundary, so a restart does not repeat the last one).
fn plan_digests(state: &mut State, config: &BotConfig, now_ms: i64) -> bool {
    let mut changed = false;
    for digest in &config.digests {
        let period = now_ms.div_euclid(digest.every.period_ms());
        let key = format!("{}|{:?}", digest.channel, digest.every).to_ascii_lowercase();
        match state.digests.get(&key) {
            Some(last) if *last >= period => {}
            Some(_) => {
                state.digests.insert(key, period);
                state.push(&digest.channel, Op::Digest { every: digest.every });
                changed = true;
            }
            None => {
                state.digests.insert(key, period);
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Digest, Every};
    use schema::alert_rules::Severity;

    const NOW: i64 = 1_795_132_800_000;

    fn alert(rule: &str, started_ms: i64) -> Alert {
        Alert {
            id: rule.into(),
            rule: rule.into(),
            rules: vec![rule.into()],
            key: None,
            severity: Severity::Warning,
            labels: Default::default(),
            state: AlertState::Firing,
            value: 1.0,
            baseline: None,
            summary: "s".into(),
            started_ms,
            fired_ms: started_ms + 180_000,
            ended_ms: None,
            resolved_ms: None,
            reopened: 0,
            reopened_ms: None,
            link: String::new(),
            silenced: false,
        }
    }

    fn ops(state: &State) -> Vec<Op> {
        state.queues.values().flatten().cloned().collect()
    }

    #[test]
    fn a_long_running_alert_is_renotified_in_its_thread_each_repeat_interval() {
        let config = BotConfig { repeat_interval_minutes: 60, ..BotConfig::default() };
        let mut state = State::default();
        let a = alert("spike", NOW - 600_000);
        plan(&mut state, &config, std::slice::from_ref(&a), Some(NOW), NOW);
        state.groups.get_mut(&0).unwrap().ts = Some("1.0".into());
        state.queues.clear();
        plan(&mut state, &config, std::slice::from_ref(&a), Some(NOW), NOW + 59 * 60_000);
        assert!(ops(&state).is_empty());
        plan(&mut state, &config, std::slice::from_ref(&a), Some(NOW), NOW + 60 * 60_000);
        let key = alert_key(&a);
        assert_eq!(ops(&state), vec![Op::Reply { group: 0, alert: key, kind: ReplyKind::StillFiring }]);
        plan(&mut state, &config, std::slice::from_ref(&a), Some(NOW), NOW + 61 * 60_000);
        assert_eq!(ops(&state).len(), 1, "once per interval");
    }

    #[test]
    fn silenced_and_long_resolved_alerts_are_not_posted_but_recent_resolved_ones_are() {
        let config = BotConfig::default();
        let mut state = State::default();
        let mut muted = alert("muted", NOW);
        muted.silenced = true;
        let mut old = alert("old", NOW - 86_400_000);
        old.state = AlertState::Resolved;
        old.resolved_ms = Some(NOW - 86_000_000);
        let mut recent = alert("recent", NOW - 900_000);
        recent.state = AlertState::Resolved;
        recent.resolved_ms = Some(NOW - 300_000);
        plan(&mut state, &config, &[muted.clone(), old, recent.clone()], Some(NOW), NOW);
        let tracked: Vec<&String> = state.alerts.keys().collect();
        assert_eq!(tracked, vec![&alert_key(&recent)]);
        assert!(state.alerts[&alert_key(&recent)].resolve_queued, "posted as resolved: no thread reply");
        assert_eq!(ops(&state).len(), 1);
        // The silence ends while it still fires: now it is delivered.
        muted.silenced = false;
        plan(&mut state, &config, &[muted.clone()], Some(NOW), NOW + 1000);
        assert!(state.alerts.contains_key(&alert_key(&muted)));
    }

    #[test]
    fn the_same_condition_firing_again_is_a_new_message() {
        let config = BotConfig::default();
        let mut state = State::default();
        let mut first = alert("spike", NOW - 3_600_000);
        plan(&mut state, &config, std::slice::from_ref(&first), Some(NOW), NOW);
        first.state = AlertState::Resolved;
        first.resolved_ms = Some(NOW - 3_000_000);
        let again = alert("spike", NOW - 600_000);
        plan(&mut state, &config, &[first, again], Some(NOW), NOW + 60_000);
        assert_eq!(state.groups.len(), 2, "a new occurrence (new started_ms) gets its own message");
    }

    #[test]
    fn an_incident_reopened_within_the_hold_off_fires_again_in_its_thread() {
        let config = BotConfig::default();
        let mut state = State::default();
        let mut incident = alert("spike", NOW - 3_600_000);
        plan(&mut state, &config, std::slice::from_ref(&incident), Some(NOW), NOW);
        state.groups.get_mut(&0).unwrap().ts = Some("1.0".into());
        incident.state = AlertState::Resolved;
        incident.resolved_ms = Some(NOW - 3_000_000);
        plan(&mut state, &config, std::slice::from_ref(&incident), Some(NOW), NOW + 1000);
        state.queues.clear();
        incident.state = AlertState::Firing;
        (incident.resolved_ms, incident.reopened) = (None, 1);
        plan(&mut state, &config, std::slice::from_ref(&incident), Some(NOW), NOW + 2000);
        let key = alert_key(&incident);
        assert_eq!(
            ops(&state),
            vec![Op::Reply { group: 0, alert: key.clone(), kind: ReplyKind::Reopened }, Op::Update { group: 0 }]
        );
        assert_eq!(state.groups.len(), 1, "no new message");
        assert!(!state.alerts[&key].resolve_queued, "it can resolve again");
    }

    #[test]
    fn digests_are_queued_at_each_period_boundary_but_not_at_start_up() {
        let config = BotConfig {
            digests: vec![Digest { channel: "#daily".into(), every: Every::Daily }],
            ..BotConfig::default()
        };
        let mut state = State::default();
        let day = 86_400_000;
        let start = (NOW / day) * day + 3_600_000;
        plan(&mut state, &config, &[], None, start);
        assert!(ops(&state).is_empty(), "not on start-up");
        plan(&mut state, &config, &[], None, start + 20 * 3_600_000);
        assert!(ops(&state).is_empty());
        plan(&mut state, &config, &[], None, start + 23 * 3_600_000);
        assert_eq!(ops(&state), vec![Op::Digest { every: Every::Daily }]);
        plan(&mut state, &config, &[], None, start + 24 * 3_600_000);
        assert_eq!(ops(&state).len(), 1, "once per day");
    }
}
