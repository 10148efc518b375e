//! Every alert rule kind end to end: crafted traffic with a scraper, a click bot, a bot farm on
//! one IP, a traffic spike and a payment outage goes through Kafka (librdkafka's mock cluster)
//! into `clickflow run` with the rules of `examples/funnels.toml`; the alerts read over HTTP equal
//! a from-scratch evaluation of the same rules, and the rate-limit query answers for a busy IP.

mod common;

use common::alert_oracle::{self, Settings};
use common::e2e::{settled, spec, START};
use common::kafka::*;
use common::oracle::{self, Accepted};
use rdkafka::mocking::MockCluster;
use std::collections::BTreeSet;

/// `(ts, user, event, page, ip)`.
type Ev = (i64, String, &'static str, String, String);

fn traffic() -> Vec<Ev> {
    let mut next = common::xorshift(0x9e37_79b9_7f4a_7c15);
    let mut events = Vec::new();
    for minute in 0..90i64 {
        let at = |s: u64| START + minute * 60_000 + s as i64 * 1000;
        // Regular shoppers; three times as many during the spike.
        let users = if (60..66).contains(&minute) { 120 } else { 40 };
        for u in 0..users {
            if next(2) == 0 {
                continue;
            }
            let (event, page) = match next(100) {
                0..40 => ("page_view", format!("/products/{}", next(20))),
                40..55 => ("page_view", "/".to_string()),
                55..70 => ("click", "/".to_string()),
                70..82 => ("add_to_cart", "/cart".to_string()),
                82..92 => ("page_view", "/checkout".to_string()),
                // Payments fail for a quarter of an hour.
                _ if (70..85).contains(&minute) => ("payment_failed", "/checkout/error".to_string()),
                _ => ("purchase", "/checkout/complete".to_string()),
            };
            events.push((at(next(60)), format!("u{u}"), event, page, format!("10.2.0.{}", u % 200)));
        }
        // A scraper: 80 page views a minute from one user.
        if (20..26).contains(&minute) {
            for s in 0..80 {
                events.push((
                    at(s * 3 / 4),
                    "scraper".into(),
                    "page_view",
                    format!("/products/{s}"),
                    "10.3.0.1".into(),
                ));
            }
        }
        // A click bot: clicks and never a page view.
        if (30..37).contains(&minute) {
            for s in 0..5 {
                events.push((at(s * 11), "clicker".into(), "click", "/".into(), "10.4.0.1".into()));
            }
        }
        // Minutes 85..89: another IP over the rate limit, within the lateness of the end (final
        // only once the input is known to be complete: a replayed file read to its end).
        if (85..89).contains(&minute) {
            for s in 0..130 {
                events.push((at(s * 2 / 5), "crawler".into(), "page_view", "/".into(), "10.6.0.1".into()));
            }
        }
        // The last minute: one IP over the page-view rate limit (too recent to be final).
        if minute == 89 {
            for s in 0..150 {
                events.push((at(s * 2 / 5), "hammer".into(), "page_view", "/".into(), "10.5.0.1".into()));
            }
        }
        // A bot farm: 25 users behind one IP, 200 page views a minute together.
        if (40..50).contains(&minute) {
            for s in 0..200u64 {
                let user = format!("farm{}", s % 25);
                events.push((at(s * 3 / 10), user, "page_view", format!("/products/{}", s % 7), "10.9.9.9".into()));
            }
        }
    }
    events.sort();
    events
}

fn record((ts, user, event, page, ip): &Ev) -> (String, Vec<u8>) {
    let line = serde_json::json!({"user_id": user, "event": event, "ts": ts, "page": page, "ip": ip});
    (user.clone(), serde_json::to_vec(&line).unwrap())
}

fn accepted((ts, user, event, page, ip): &Ev) -> Accepted {
    Accepted {
        ts: *ts,
        user: user.clone(),
        name: event.to_string(),
        page: Some(page.clone()),
        utm_source: "(none)".into(),
        device: "(none)".into(),
        country: "(none)".into(),
        partition: 0,
        ip: Some(ip.clone()),
        props: Default::default(),
    }
}

/// `(id, started, fired, resolved, rules, reopened)` of a JSON list of alerts, as the reference
/// gives them.
fn fired(alerts: &serde_json::Value) -> alert_oracle::Fired {
    let alerts = alerts.as_array().expect("a list of alerts");
    alerts
        .iter()
        .map(|a| {
            let at = |f: &str| a[f].as_i64();
            (
                a["id"].as_str().unwrap().to_string(),
                at("started_ms").unwrap(),
                at("fired_ms").unwrap(),
                at("resolved_ms"),
                a["rules"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect(),
                a["reopened"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

/// The alerts the reference fires on `events` with the rules of `examples/funnels.toml`, with
/// `as_of` `behind_ms` before the newest event.
fn reference_alerts(events: &[Ev], behind_ms: i64) -> alert_oracle::Fired {
    let views = spec().views;
    let settings = Settings {
        fire_after: views.alerts.fire_after,
        resolve_after: views.alerts.resolve_after,
        lateness_ms: behind_ms,
        hold_off_minutes: views.alerts.hold_off_minutes as i64,
    };
    let all: Vec<Accepted> = events.iter().map(accepted).collect();
    alert_oracle::alerts(&all, &views.alerts.rules, &views.funnels, &settings)
}

#[test]
fn every_rule_kind_fires_from_kafka_to_the_alerts_api_as_the_reference_says() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let events = traffic();
    let records: Vec<(String, Vec<u8>)> = events.iter().map(record).collect();
    produce(&brokers, "clicks", &records);

    let views = spec().views;
    let expected = reference_alerts(&events, 300_000);
    // Every rule fires, opening an incident or joining one of its series.
    let kinds: BTreeSet<&str> = expected.iter().flat_map(|a| a.4.iter().map(String::as_str)).collect();
    assert_eq!(kinds.len(), views.alerts.rules.len(), "every example rule fires on this traffic: {kinds:?}");
    assert!(expected.iter().any(|a| a.4.len() > 1), "rules on one series share an incident");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Only the example's rules: the reference does not model the built-in seasonal ones.
    let mut command = run_command(&brokers, port, dir.path(), "", &[]);
    command.env("CLICKFLOW__VIEWS__ALERTS__BUILTIN", "false");
    let _run = Running(command.spawn().unwrap());
    let reference = oracle::dump(&spec(), &by_partition(&records));
    settled(port, records.len(), reference.live.clock.as_of_ms);

    let history = get_json(port, "/api/v1/alerts/history").unwrap();
    assert_eq!(fired(&history["alerts"]), expected);
    let active = get_json(port, "/api/v1/alerts").unwrap();
    let firing: BTreeSet<String> =
        active["alerts"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    let unresolved: BTreeSet<String> = expected.iter().filter(|a| a.3.is_none()).map(|a| a.0.clone()).collect();
    assert_eq!(firing, unresolved);
    // The farm's IP is one incident, whichever of the rules on that IP fired first.
    let farm = history["alerts"].as_array().unwrap().iter().find(|a| a["key"] == "10.9.9.9").unwrap();
    assert!(farm["rules"].as_array().unwrap().contains(&"crowded_ip".into()), "{farm}");
    assert_eq!(farm["labels"]["ip"], "10.9.9.9");
    assert_eq!(farm["severity"], "warning");

    // The rate-limit query reads the newest minute, which `as_of` has not made final yet: the
    // IP is over now, and back under when that minute leaves the one-minute window.
    let hammer = get_json(port, "/api/v1/limits/page_view_rate_limit/10.5.0.1").unwrap();
    assert_eq!(hammer["count"].as_i64(), Some(150));
    assert_eq!(hammer["over"].as_bool(), Some(true));
    assert_eq!(hammer["until_ms"].as_i64(), Some(START + 90 * 60_000));
    let over = get_json(port, "/api/v1/limits/page_view_rate_limit").unwrap();
    assert_eq!(over["over"][0]["key"], "10.5.0.1");
    let quiet = get_json(port, "/api/v1/limits/page_view_rate_limit/10.9.9.9").unwrap();
    assert_eq!((quiet["count"].as_i64(), quiet["over"].as_bool()), (Some(0), Some(false)));
    let unknown = ureq::get(&format!("http://127.0.0.1:{port}/api/v1/limits/nope/1.2.3.4")).call();
    assert!(
        matches!(unknown, Err(ureq::Error::Status(404, _))),
        "an unknown rule is a 404 naming the rate-limit rules"
    );
}

/// The same traffic replayed from a file: `replay --dump` carries the alerts the reference
/// fires, and the replay says how many fired, by rule.
#[test]
fn a_replay_dumps_and_summarises_the_alerts_the_reference_fires() {
    let dir = tempfile::tempdir().unwrap();
    let (file, dump_path) = (dir.path().join("traffic.ndjson"), dir.path().join("dump.json"));
    let events = traffic();
    let mut lines = Vec::new();
    for e in &events {
        lines.extend(record(e).1);
        lines.push(b'\n');
    }
    std::fs::write(&file, lines).unwrap();
    // The file read to its end is complete: `as_of` is its newest event, and the minutes of
    // the last lateness are judged too.
    let expected = reference_alerts(&events, 0);
    assert!(expected.len() > reference_alerts(&events, 300_000).len(), "the traffic fires alerts in its last minutes");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clickflow"))
        .args(["replay", "--quiet", "--workers", "2", "--config", common::EXAMPLE_CONFIG, "--dump"])
        .arg(&dump_path)
        .arg(&file)
        .arg("--dead-letters")
        .arg(dir.path().join("dead.ndjson"))
        .env("CLICKFLOW__VIEWS__ALERTS__BUILTIN", "false")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dump: serde_json::Value = serde_json::from_slice(&std::fs::read(&dump_path).unwrap()).unwrap();
    assert_eq!(fired(&dump["alerts"]), expected);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let fired = dump["alerts"].as_array().unwrap().len();
    // The bot farm's IP is one incident: opened by one rule, joined by crowded_ip.
    let opened = expected.iter().filter(|a| a.0.starts_with("crowded_ip:")).count();
    let joined =
        expected.iter().filter(|a| !a.0.starts_with("crowded_ip:") && a.4.contains(&"crowded_ip".into())).count();
    assert!(opened + joined > 0, "the farm is caught");
    let summary = stderr.lines().find(|l| l.contains(" alerts fired: ")).unwrap_or_default();
    let joins = stderr.lines().find(|l| l.contains("also fired within")).unwrap_or_default();
    assert!(
        summary.starts_with(&format!("{fired} alerts fired: "))
            && (opened == 0 || summary.contains(&format!("{opened} crowded_ip")))
            && (joined == 0 || joins.contains(&format!("{joined} crowded_ip"))),
        "the replay summarises the alerts by rule: {stderr}"
    );
}
