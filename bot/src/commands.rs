//! `/clickflow <subcommand>`: parsed from the command text, answered from the read model.
//! Every path ends in a reply a person can act on: unknown names come back with what exists.

use alerting::Alerting;
use read::path_query::{NextQuery, TopQuery};
use read::query::TimeseriesQuery;
use read::retention_query::RetentionQuery;
use read::session_query::SessionsQuery;
use read::ReadModel;

use crate::render::{self, percent, Builder, Message};
use crate::suggest::did_you_mean;

/// A reply to a slash command.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub message: Message,
    /// Shown to the whole channel (asked with a trailing `public`); otherwise only to the caller.
    pub in_channel: bool,
}

impl Reply {
    /// The HTTP body Slack expects.
    pub fn json(&self) -> serde_json::Value {
        let mut v = self.message.json();
        v["response_type"] = if self.in_channel { "in_channel" } else { "ephemeral" }.into();
        v
    }
}

pub const HELP: &[(&str, &str)] = &[
    ("live", "active users, events per minute, top pages, and the last hour as a sparkline"),
    ("top pages|sources|countries|devices|events [N] [window]", "the top N (10) over a window (60m; e.g. 15m, 6h)"),
    ("sessions", "sessions, bounce rate, duration and entry pages over the session window"),
    ("funnels", "every funnel's conversion"),
    ("funnel <name>", "steps, conversion and drop-off of one funnel"),
    ("retention [name]", "retention definitions, or one cohort table"),
    ("path next <page>", "where people go after a page"),
    ("path top <from> [to]", "the most followed paths from a page (to another)"),
    ("alerts", "what is firing now"),
    ("limit <rule> <key>", "whether a key (an IP, a user) is over a rate limit now"),
    ("silence <alert|rule> <duration>", "mute an alert or a rule, e.g. `silence ip_burst 2h`"),
    ("help", "this list"),
];

const PUBLIC: &[&str] = &["public", "in_channel", "--public"];

/// Answers `text` (what follows `/clickflow`) for `user` at wall-clock `now_ms`.
pub fn answer(model: &ReadModel, alerting: &Alerting, text: &str, user: &str, now_ms: i64) -> Reply {
    let mut words: Vec<&str> = text.split_whitespace().collect();
    let in_channel = words.last().is_some_and(|w| PUBLIC.contains(&w.to_ascii_lowercase().as_str()));
    if in_channel {
        words.pop();
    }
    let message = match run(model, alerting, &words, user, now_ms) {
        Ok(m) => m,
        // Problems quote what was typed: escaped, so they cannot ping or link.
        Err(problem) => Builder::new().section(&format!(":warning: {}", render::escape(&problem))).build(),
    };
    Reply { message, in_channel }
}

type Answer = Result<Message, String>;

fn run(model: &ReadModel, alerting: &Alerting, words: &[&str], user: &str, now_ms: i64) -> Answer {
    let Some((command, args)) = words.split_first() else { return Ok(help()) };
    match command.to_ascii_lowercase().as_str() {
        "help" => Ok(help()),
        "live" => live(model),
        "top" => top(model, args),
        "sessions" => sessions(model),
        "funnels" => funnels(model),
        "funnel" => funnel(model, args),
        "retention" => retention(model, args),
        "path" | "paths" => path(model, args),
        "alerts" => alerts(model, alerting),
        "limit" => limit(model, alerting, args),
        "silence" => silence(alerting, args, user, now_ms),
        other => {
            let names: Vec<&str> = HELP.iter().map(|(usage, _)| usage.split(' ').next().unwrap()).collect();
            Err(format!(
                "there is no `{other}` command{}. Try `/clickflow help`; commands: {}",
                did_you_mean(other, names.iter().copied()),
                names.join(", ")
            ))
        }
    }
}

fn help() -> Message {
    let lines: Vec<String> = HELP.iter().map(|(usage, what)| format!("`/clickflow {usage}`: {what}")).collect();
    Builder::new()
        .header("clickflow: live clickstream numbers")
        .section(&lines.join("\n"))
        .context("Replies are visible only to you; add `public` at the end to post one to the channel.")
        .build()
}

fn no_events(model: &ReadModel) -> Option<String> {
    model.clock().head_ms.is_none().then(|| {
        "no events have reached the views yet: check that traffic flows into Kafka (`/readyz` says how far \
         the engine is)"
            .to_string()
    })
}

fn clock_note(model: &ReadModel) -> String {
    let clock = model.clock();
    match (clock.head_ms, clock.as_of_ms) {
        (Some(head), Some(as_of)) => {
            format!("Newest event {} · complete up to {}", render::time(head), render::time(as_of))
        }
        (Some(head), None) => format!("Newest event {}", render::time(head)),
        _ => "No events yet".into(),
    }
}

fn live(model: &ReadModel) -> Answer {
    if let Some(problem) = no_events(model) {
        return Err(problem);
    }
    let live = model.live();
    let hour = model.timeseries(&TimeseriesQuery::default()).map_err(|e| e.0)?;
    let per_minute: Vec<i64> =
        hour.series.first().map(|s| s.points.iter().map(|p| p.value).collect()).unwrap_or_default();
    let total: i64 = per_minute.iter().sum();
    let pages: Vec<String> = live.top_pages.iter().map(|p| format!("{:>8}  {}", p.views, p.page)).collect();
    let mut b = Builder::new().header("Live traffic").fields(&[
        (format!("Active users ({} min)", live.active_window_minutes), live.active_users.to_string()),
        ("Events in the last minute".into(), live.events_per_minute.to_string()),
        ("This minute so far".into(), live.events_this_minute.to_string()),
        ("Events in the last hour".into(), total.to_string()),
    ]);
    b = b.section(&format!("*Last hour, events per minute*\n`{}`", render::sparkline(&per_minute)));
    if !pages.is_empty() {
        b = b.section(&format!("*Top pages, last {} min* (views)", live.top_window_minutes)).table(&pages);
    }
    Ok(b.context(&clock_note(model)).build())
}

fn top(model: &ReadModel, args: &[&str]) -> Answer {
    const KINDS: [&str; 5] = ["pages", "sources", "countries", "devices", "events"];
    let Some(kind) = args.first() else {
        return Err("top what? `/clickflow top pages|sources|countries|devices|events [N] [window]`".into());
    };
    let (metric, breakdown, label) = match kind.to_ascii_lowercase().as_str() {
        "pages" | "page" => ("page_views", "page", "page views"),
        "sources" | "source" => ("events", "utm_source", "events by utm_source"),
        "countries" | "country" => ("events", "country", "events by country"),
        "devices" | "device" => ("events", "device", "events by device"),
        "events" | "event" => ("events", "event", "events by name"),
        other => {
            return Err(format!("no `top {other}`{}; choose one of {}", did_you_mean(other, KINDS), KINDS.join(", ")))
        }
    };
    let mut n = 10usize;
    let mut window = 60i64;
    for arg in &args[1..] {
        if let Ok(count) = arg.parse::<usize>() {
            if !(1..=50).contains(&count) {
                return Err(format!("N is {count}; give 1 to 50"));
            }
            n = count;
        } else {
            window = parse_minutes(arg)?;
        }
    }
    if let Some(problem) = no_events(model) {
        return Err(problem);
    }
    let head = model.clock().head_ms.expect("checked above");
    let from = schema::event::minute_start_ms(schema::event::minute_of(head)) - (window - 1) * 60_000;
    let q = TimeseriesQuery {
        metric: Some(metric.into()),
        breakdown: Some(breakdown.into()),
        from: Some(from.to_string()),
        to: Some(head.to_string()),
        limit: Some(n),
    };
    let series = model.timeseries(&q).map_err(|e| e.0)?.series;
    let rows: Vec<String> =
        series.iter().enumerate().map(|(i, s)| format!("{:>2}. {:>9}  {}", i + 1, s.total, s.key)).collect();
    let b = Builder::new().header(&format!("Top {n} {kind}, last {}", minutes_text(window)));
    let b = if rows.is_empty() { b.section(&format!("No {label} in this window.")) } else { b.table(&rows) };
    Ok(b.context(&clock_note(model)).build())
}

fn sessions(model: &ReadModel) -> Answer {
    let s = model.sessions(&SessionsQuery::default()).map_err(|e| e.0)?;
    let sum = &s.summary;
    let entries: Vec<String> = s.top_entry_pages.iter().take(5).map(|k| format!("{:>8}  {}", k.count, k.key)).collect();
    let mut b = Builder::new().header("Sessions").fields(&[
        ("Sessions".into(), sum.totals.sessions.to_string()),
        ("In progress".into(), sum.totals.in_progress.to_string()),
        ("Bounce rate".into(), percent(sum.bounce_rate)),
        ("Average duration".into(), render::duration((sum.avg_duration_s * 1000.0) as i64)),
        ("Pages per session".into(), format!("{:.2}", sum.pages_per_session)),
        ("Events per session".into(), format!("{:.2}", sum.events_per_session)),
    ]);
    if !entries.is_empty() {
        b = b.section("*Top entry pages* (sessions)").table(&entries);
    }
    Ok(b.context(&format!("{} · session gap {} min", clock_note(model), s.inactivity_minutes)).build())
}

fn funnels(model: &ReadModel) -> Answer {
    let list = model.funnel_list();
    if list.funnels.is_empty() {
        return Err("no funnels are defined; add one in `[[views.funnels]]` or `POST /api/v1/funnels`".into());
    }
    let rows: Vec<String> = list
        .funnels
        .iter()
        .map(|f| format!("{:<24} {:>8} → {:>8}  {:>6}", f.name, f.entered, f.converted, percent(f.conversion)))
        .collect();
    Ok(Builder::new()
        .header("Funnels")
        .table(&rows)
        .context("entered → converted, conversion · `/clickflow funnel <name>` for the steps")
        .build())
}

fn funnel(model: &ReadModel, args: &[&str]) -> Answer {
    let names = model.funnels.names();
    let Some(name) = args.first() else {
        return Err(format!("which funnel? `/clickflow funnel <name>`; funnels: {}", listing(&names)));
    };
    if !names.iter().any(|n| n == name) {
        return Err(format!(
            "no funnel named `{name}`{}; funnels: {}",
            did_you_mean(name, names.iter().map(String::as_str)),
            listing(&names)
        ));
    }
    let report = model.funnel(name).map_err(|e| e.0)?;
    let first = report.numbers.steps.first().map_or(0, |s| s.users);
    let last = report.numbers.steps.last().map_or(0, |s| s.users);
    let rows: Vec<String> = report
        .numbers
        .steps
        .iter()
        .map(|s| {
            let time = s.median_time_s.map(|t| render::duration(t as i64 * 1000)).unwrap_or_default();
            format!(
                "{}. {:<16} {:>8} {:>7} {:>7}  -{:<7} {}",
                s.step,
                render::clip(&s.event, 16),
                s.users,
                percent(s.conversion_from_previous),
                percent(s.conversion_from_start),
                s.drop_off,
                time
            )
        })
        .collect();
    let conversion = if first == 0 { 0.0 } else { last as f64 / first as f64 };
    Ok(Builder::new()
        .header(&format!("Funnel {name}: {} converted", percent(conversion)))
        .table(&rows)
        .context(&format!(
            "step users, from previous, from start, drop-off, median time · window {} · {}",
            minutes_text(report.definition.window_minutes as i64),
            clock_note(model)
        ))
        .build())
}

fn retention(model: &ReadModel, args: &[&str]) -> Answer {
    let list = model.retention_list();
    let names: Vec<String> = list.retention.iter().map(|r| r.name.clone()).collect();
    let Some(name) = args.first() else {
        if names.is_empty() {
            return Err("no retention definitions; add one in `[[views.retention]]`".into());
        }
        let rows: Vec<String> = list
            .retention
            .iter()
            .map(|r| {
                let p1 = r.period_1_percent.map(|p| format!("{p:.1}%")).unwrap_or("-".into());
                format!("{:<24} {:>8} users  period 1: {p1}", r.name, r.users)
            })
            .collect();
        return Ok(Builder::new()
            .header("Retention")
            .table(&rows)
            .context("`/clickflow retention <name>` for cohorts")
            .build());
    };
    if !names.iter().any(|n| n == name) {
        return Err(format!(
            "no retention definition named `{name}`{}; there are: {}",
            did_you_mean(name, names.iter().map(String::as_str)),
            listing(&names)
        ));
    }
    let report = model.retention_report(name, &RetentionQuery::default()).map_err(|e| e.0)?;
    let average: Vec<String> =
        report.matrix.average.iter().map(|p| format!("P{} {:.1}%", p.period, p.percent)).collect();
    let rows: Vec<String> = report
        .matrix
        .cohorts
        .iter()
        .rev()
        .take(12)
        .map(|c| {
            let cells: Vec<String> = c.percent.iter().map(|p| format!("{p:>5.1}")).collect();
            format!("{} {:>7}  {}", c.cohort, c.size, cells.join(" "))
        })
        .collect();
    Ok(Builder::new()
        .header(&format!("Retention {name}"))
        .section(&format!("*Average:* {}", average.join(" · ")))
        .table(&rows)
        .context(&format!("cohort, size, % returned per period (newest first) · {}", clock_note(model)))
        .build())
}

fn path(model: &ReadModel, args: &[&str]) -> Answer {
    match args {
        ["next", page, ..] => {
            let next =
                model.path_next(&NextQuery { page: Some(page.to_string()), limit: Some(10) }).map_err(|e| e.0)?;
            let n = &next.neighbors;
            let rows: Vec<String> =
                n.next.iter().map(|s| format!("{:>8} {:>6}  {}", s.count, percent(s.share), s.page)).collect();
            let b = Builder::new().header(&format!("After {}", n.page));
            let b = if rows.is_empty() { b.section("Nobody moved on from this page.") } else { b.table(&rows) };
            Ok(b.context(&format!("{} transitions out · {}", n.total_out, clock_note(model))).build())
        }
        ["top", from, rest @ ..] => {
            let q = TopQuery {
                from: Some(from.to_string()),
                to: rest.first().map(|t| t.to_string()),
                ..Default::default()
            };
            let top = model.path_top(&q).map_err(|e| e.0)?;
            let rows: Vec<String> =
                top.paths.iter().map(|p| format!("~{:>7.0}  {}", p.sessions, p.pages.join(" → "))).collect();
            let title = match rest.first() {
                Some(to) => format!("Paths from {from} to {to}"),
                None => format!("Paths from {from}"),
            };
            let b = Builder::new().header(&title);
            let b = if rows.is_empty() { b.section("No path found.") } else { b.table(&rows) };
            Ok(b.context(&format!("estimated sessions · {}", clock_note(model))).build())
        }
        [other, ..] if *other != "next" && *other != "top" => Err(format!(
            "no `path {other}`{}; use `path next <page>` or `path top <from> [to]`",
            did_you_mean(other, ["next", "top"])
        )),
        _ => Err("give a page: `path next <page>` or `path top <from> [to]`".into()),
    }
}

fn alerts(model: &ReadModel, alerting: &Alerting) -> Answer {
    let (_, active) = alerting.active();
    if active.is_empty() {
        return Ok(Builder::new().section(":white_check_mark: No alerts firing.").context(&clock_note(model)).build());
    }
    let mut b = Builder::new().header(&format!("{} alert(s) firing", active.len()));
    for alert in &active {
        b = b.section(&crate::alert_message::line(alert));
    }
    Ok(b.context(&clock_note(model)).build())
}

fn limit(model: &ReadModel, alerting: &Alerting, args: &[&str]) -> Answer {
    let [rule, key, ..] = args else {
        return Err(format!(
            "give a rule and a key: `/clickflow limit <rule> <key>`; rules: {}",
            listing(&alerting.rules.names())
        ));
    };
    let status = alerting.limit(rule, key).map_err(|e| e.0)?;
    let verdict = if status.over {
        let until = status.until_ms.map(|u| format!(", back under at {}", render::time(u))).unwrap_or_default();
        format!(":no_entry: `{}` is *over* `{}`{until}", render::escape(key), render::escape(rule))
    } else {
        format!(":white_check_mark: `{}` is under `{}`", render::escape(key), render::escape(rule))
    };
    Ok(Builder::new()
        .section(&format!("{verdict}: {} of {} events in {} min", status.count, status.limit, status.window_minutes))
        .context(&clock_note(model))
        .build())
}

fn silence(alerting: &Alerting, args: &[&str], user: &str, now_ms: i64) -> Answer {
    let [target, duration, ..] = args else {
        return Err(
            "give what and how long: `/clickflow silence <alert|rule> <duration>`, e.g. `silence ip_burst 2h`".into()
        );
    };
    let minutes = parse_minutes(duration)?;
    let rules = alerting.rules.names();
    let (_, history) = alerting.history();
    let known = rules.iter().any(|r| r == target) || history.iter().any(|a| a.id == *target);
    if !known {
        let ids: Vec<&str> = history.iter().map(|a| a.id.as_str()).collect();
        return Err(format!(
            "`{target}` is neither a rule nor an alert{}; rules: {}",
            did_you_mean(target, rules.iter().map(String::as_str).chain(ids.iter().copied())),
            listing(&rules)
        ));
    }
    let until = now_ms + minutes * 60_000;
    let silence = alerting.silence(target.to_string(), until, Some(format!("from Slack by <@{user}>")))?;
    Ok(Builder::new()
        .section(&format!(
            ":mute: `{target}` silenced for {} (until {}) by <@{user}>; silence id {}",
            minutes_text(minutes),
            render::time(until),
            silence.id
        ))
        .build())
}

/// `15m`, `2h`, `1d`, or bare minutes.
pub fn parse_minutes(text: &str) -> Result<i64, String> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = digits
        .parse::<i64>()
        .or_else(|e| if digits.is_empty() { Err(e) } else { Ok(i64::MAX) })
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 15m, 2h or 1d"))?;
    let per = match unit {
        "" | "m" | "min" | "mins" | "minutes" => 1,
        "h" | "hr" | "hours" => 60,
        "d" | "day" | "days" => 1440,
        _ => return Err(format!("`{text}`: unknown unit `{unit}`; use m, h or d")),
    };
    let minutes = n.checked_mul(per).unwrap_or(i64::MAX);
    if !(1..=30 * 1440).contains(&minutes) {
        return Err(format!("`{text}` is out of range; give 1 minute to 30 days"));
    }
    Ok(minutes)
}

fn minutes_text(minutes: i64) -> String {
    render::duration(minutes * 60_000)
}

fn listing(names: &[String]) -> String {
    if names.is_empty() {
        "none defined".into()
    } else {
        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_huge_ones_are_refused_without_overflow() {
        assert_eq!(parse_minutes("90"), Ok(90));
        assert_eq!(parse_minutes("2h"), Ok(120));
        assert_eq!(parse_minutes("1d"), Ok(1440));
        assert!(parse_minutes("9999999999999999999d").unwrap_err().contains("out of range"));
        assert!(parse_minutes("999999999999999h").unwrap_err().contains("out of range"));
        assert!(parse_minutes("soon").unwrap_err().contains("not a duration"));
        assert!(parse_minutes("3w").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn what_users_typed_is_quoted_as_text() {
        let defs = schema::registry::Definitions::new(&schema::ViewConfig::default()).unwrap();
        let model = ReadModel::new(schema::ViewConfig::default(), &defs);
        let alerting = Alerting::new(model.clone(), &defs);
        let reply = answer(&model, &alerting, "funnel <!channel>", "U1", 0);
        assert!(reply.message.text.contains("&lt;!channel&gt;"), "{}", reply.message.text);
        assert!(!reply.message.text.contains("<!channel>"));
    }
}
