//! Decides what to send from the alerts the engine reports and what was already delivered. A pure
//! function of its inputs: the engine may report an alert many times (every tick, every restart),
//! and the state makes each notification happen once.

use std::collections::BTreeMap;

use views::alert_engine::{Alert, AlertState};

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
                    let channel = state.groups[&group].channel.clone();
                    state.push(&channel, Op::Reply { group, alert: key.clone(), kind: ReplyKind::Resolved });
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
                    Tracked { alert: alert.clone(), group, resolve_queued: resolved, notified_ms: now_ms },
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
        g.ts.is_none() && g.rule == alert.rule && g.channel == channel && now_ms < g.opened_ms + wait_ms
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
