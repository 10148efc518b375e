//! How alerts look in Slack: one message per group (updated as alerts resolve), thread replies,
//! and digests.

use read::model::{Alert, AlertState};
use read::ReadModel;
use schema::alert_rules::Severity;
use slack_morphism::prelude::SlackBlockButtonStyle;

use crate::render::{self, Builder, Message};
use crate::state::{Group, ReplyKind, Tracked};

pub const ACK: &str = "ack";
pub const SNOOZE_1H: &str = "snooze_1h";
pub const SNOOZE_1D: &str = "snooze_1d";
/// Alerts listed one by one in a group message; more are counted.
const LISTED: usize = 20;

fn emoji(alert: &Alert) -> &'static str {
    match (alert.state, alert.severity) {
        (AlertState::Resolved, _) => ":white_check_mark:",
        (_, Severity::Critical) => ":red_circle:",
        (_, Severity::Warning) => ":large_orange_circle:",
        (_, Severity::Info) => ":large_blue_circle:",
    }
}

fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// One line about an alert: state, id, summary, numbers and times.
pub fn line(alert: &Alert) -> String {
    let baseline = alert.baseline.map(|b| format!(" · baseline {}", number(b))).unwrap_or_default();
    let when = match alert.resolved_ms {
        Some(resolved) => format!(
            "resolved {} after {}",
            render::time(resolved),
            render::duration(alert.ended_ms.unwrap_or(resolved) - alert.started_ms)
        ),
        None => format!("since {}", render::time(alert.started_ms)),
    };
    let muted = if alert.silenced { " · :mute: silenced" } else { "" };
    format!(
        "{} *{}* ({}) {}\nvalue {}{baseline} · {when}{muted}",
        emoji(alert),
        render::escape(&alert.id),
        alert.severity.as_str(),
        render::escape(&alert.summary),
        number(alert.value)
    )
}

/// The group's message as it should read now.
pub fn group_message(id: u64, group: &Group, alerts: &[&Tracked], now_ms: i64) -> Message {
    let firing = alerts.iter().filter(|t| t.alert.state == AlertState::Firing).count();
    let severity = alerts.iter().map(|t| t.alert.severity).max().unwrap_or_default();
    let title = if firing == 0 {
        format!("Resolved: {}", group.rule)
    } else if alerts.len() == 1 {
        format!("[{}] {}", severity.as_str().to_uppercase(), group.rule)
    } else {
        format!("[{}] {}: {firing} of {} firing", severity.as_str().to_uppercase(), group.rule, alerts.len())
    };
    let mut b = Builder::new().header(&title);
    for tracked in alerts.iter().take(LISTED) {
        b = b.section(&line(&tracked.alert));
    }
    if alerts.len() > LISTED {
        b = b.context(&format!("and {} more alerts of this rule", alerts.len() - LISTED));
    }
    if let Some(first) = alerts.first() {
        let labels: Vec<String> = first.alert.labels.iter().map(|(k, v)| render::escape(&format!("{k}={v}"))).collect();
        b = b.context(&format!("{} · `GET {}`", labels.join(" "), first.alert.link));
    }
    let mut notes = Vec::new();
    if let Some(user) = &group.acked_by {
        notes.push(format!(":eyes: Acknowledged by <@{user}>"));
    }
    if let (Some(until), Some(user)) = (group.snoozed_until_ms, &group.snoozed_by) {
        if until > now_ms {
            notes.push(format!(":zzz: Snoozed by <@{user}> until {}", render::time(until)));
        }
    }
    if !notes.is_empty() {
        b = b.context(&notes.join(" · "));
    }
    if firing > 0 {
        let value = id.to_string();
        b = b.buttons(&[
            (ACK, "Acknowledge", value.clone(), Some(SlackBlockButtonStyle::Primary)),
            (SNOOZE_1H, "Snooze 1 h", value.clone(), None),
            (SNOOZE_1D, "Snooze 1 day", value, None),
        ]);
    }
    b.build()
}

pub fn reply(tracked: &Tracked, kind: ReplyKind) -> Message {
    let text = match kind {
        ReplyKind::Resolved => format!("Resolved: {}", line(&tracked.alert)),
        ReplyKind::StillFiring => format!(":repeat: Still firing: {}", line(&tracked.alert)),
        ReplyKind::Reopened => format!(":rotating_light: Firing again: {}", line(&tracked.alert)),
    };
    Builder::new().section(&text).build()
}

/// The key numbers, funnels and firing alerts.
pub fn digest(model: &ReadModel, alerting: &alerting::Alerting, every: crate::config::Every) -> Message {
    let live = model.live();
    let sessions = model.sessions(&Default::default()).ok();
    let funnels = model.funnel_list();
    let (_, active) = alerting.active();
    let title = match every {
        crate::config::Every::Hourly => "Hourly digest",
        crate::config::Every::Daily => "Daily digest",
    };
    let mut fields = vec![
        (format!("Active users ({} min)", live.active_window_minutes), live.active_users.to_string()),
        ("Events per minute".to_string(), live.events_per_minute.to_string()),
    ];
    if let Some(s) = &sessions {
        fields.push(("Sessions".into(), s.summary.totals.sessions.to_string()));
        fields.push(("Bounce rate".into(), render::percent(s.summary.bounce_rate)));
    }
    let mut b = Builder::new().header(title).fields(&fields);
    let rows: Vec<String> = funnels
        .funnels
        .iter()
        .map(|f| format!("{:<24} {:>8} → {:>8}  {:>6}", f.name, f.entered, f.converted, render::percent(f.conversion)))
        .collect();
    if !rows.is_empty() {
        b = b.section("*Funnels*").table(&rows);
    }
    b = if active.is_empty() {
        b.section(":white_check_mark: No alerts firing.")
    } else {
        let lines: Vec<String> = active.iter().take(LISTED).map(line).collect();
        b.section(&format!("*{} alert(s) firing*\n{}", active.len(), lines.join("\n")))
    };
    b.build()
}
