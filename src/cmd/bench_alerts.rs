//! `clickflow bench alerts`: the default alert rules on a long generated stream with daily cycles
//! and labelled incidents (spike, outage, payment failure, bot burst, drift): recall, precision
//! and detection delay in event time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use dataflow::ingest::Ingest;
use dataflow::source::synthetic::SyntheticSource;
use dataflow::source::{InputClock, NoPartitions, Poll, Source, SourceError};
use dataflow::SourceFactory;
use generator::incidents::{self, Incident};
use read::model::Alert;

use crate::config::Config;

#[derive(clap::Args, Clone, Copy, PartialEq)]
pub struct Args {
    /// Days of event time.
    #[arg(long, default_value_t = 6.0)]
    days: f64,
    /// Events per second of event time.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Mean minutes between incidents.
    #[arg(long, default_value_t = 240.0)]
    every: f64,
    /// Daily cycle: traffic swings by this share around its mean.
    #[arg(long, default_value_t = 0.4)]
    amplitude: f64,
    /// An alert counts for an incident if it fires from its start to this many minutes after
    /// its end (the end of a spike looks like a drop for a while).
    #[arg(long, default_value_t = 30)]
    grace_minutes: i64,
}

pub fn main(config: &Config, args: &Args) -> Result<()> {
    let mut config = config.clone();
    config.views.alerts.history = 1_000_000;
    let mut generator = config.generator.clone();
    (generator.rate, generator.daily_amplitude, generator.bot_share) = (args.rate, args.amplitude, 0.0);
    generator.incidents.every_minutes = args.every;
    generator.lateness_seconds = config.engine.lateness_seconds;
    let day = 86_400_000;
    let span = (args.days * day as f64) as i64;
    // Ends well before now (the generated rate runs below the nominal one, so the stream is
    // longer than `span`): partition heads never pass the wall clock, and a stream reaching it
    // would leave its last minutes unjudged, depending on when the bench runs.
    let start = (chrono::Utc::now().timestamp_millis() / day - 2) * day - span * 3 / 2;
    let count = (args.rate * span as f64 / 1000.0) as u64;
    let engine = Arc::new(super::engine(&config)?);
    let alerts = super::alerting(&engine);
    let done = Arc::new(AtomicBool::new(false));
    let sources: SourceFactory = {
        let (generator, done) = (generator.clone(), done.clone());
        Arc::new(move |index, _| {
            Ok(if index == 0 {
                Box::new(Finishing(SyntheticSource::new(generator.clone(), 0, start, count, false), done.clone()))
                    as Box<dyn Source>
            } else {
                // The generator runs on worker 0 only, so one incident plan labels the stream.
                Box::new(NoPartitions(done.clone())) as Box<dyn Source>
            })
        })
    };
    eprintln!("bench alerts: {count} events, about {} days of event time at {}/s", args.days, args.rate);
    // Every page: an incident opening, or reopening within its hold-off (the history keeps an
    // incident once, with the time it first fired).
    let ran = Arc::new(AtomicBool::new(false));
    let pages = {
        let (mut changes, ran) = (engine.read_model.subscribe(), ran.clone());
        std::thread::spawn(move || {
            use tokio::sync::broadcast::error::TryRecvError;
            let mut pages = Vec::new();
            loop {
                match changes.try_recv() {
                    Ok(change) => pages.extend(
                        change.alerts.iter().filter(|c| c.action == read::model::AlertState::Firing).map(|c| {
                            let mut alert = c.alert.clone();
                            alert.fired_ms = alert.reopened_ms.unwrap_or(alert.fired_ms);
                            alert
                        }),
                    ),
                    Err(TryRecvError::Lagged(n)) => {
                        panic!("bench alerts: {n} changes missed; the figures would be wrong")
                    }
                    // Every publish happens before the engine returns and `ran` is set.
                    Err(TryRecvError::Empty) if ran.load(Ordering::Relaxed) => return pages,
                    Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
                    Err(TryRecvError::Closed) => return pages,
                }
            }
        })
    };
    let started = Instant::now();
    let progress = {
        let (model, alerts, done) = (engine.read_model.clone(), alerts.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(5));
                if let Some(as_of) = model.as_of_ms() {
                    let share = (as_of - start) as f64 / span as f64;
                    eprintln!("  {:>5.1}% of event time, {} alerts so far", 100.0 * share, alerts.history().1.len());
                }
            }
        })
    };
    engine.run(sources, super::discard_sinks())?;
    ran.store(true, Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    let _ = progress.join();
    let elapsed = started.elapsed();
    let clock = engine.read_model.clock();
    let alerts = pages.join().expect("the page collector");
    // The labels for the span generated (the rate varies, so the span is known only now).
    let end = clock.as_of_ms.unwrap_or(start);
    let plan: Vec<Incident> = incidents::plan(&generator.incidents, generator.seed, start, end);
    report(&plan, &alerts, args, start, end, count, elapsed);
    Ok(())
}

/// The generator's source, flagging the other workers when it is done.
struct Finishing(SyntheticSource, Arc<AtomicBool>);

impl Source for Finishing {
    fn poll(&mut self, ingest: &mut Ingest, deadline: Instant) -> Result<Poll, SourceError> {
        let poll = self.0.poll(ingest, deadline)?;
        if matches!(poll, Poll::Done) {
            self.1.store(true, Ordering::Relaxed);
        }
        Ok(poll)
    }
    fn clock(&self, lateness_ms: i64, as_of: Option<i64>) -> InputClock {
        self.0.clock(lateness_ms, as_of)
    }
}

#[derive(Default)]
struct KindRow {
    planted: usize,
    detected: usize,
    /// Event time from each detected incident's start to the first alert.
    delays: Vec<i64>,
    /// Alerts per rule that matched an incident of this kind.
    rules: BTreeMap<String, usize>,
}

fn report(plan: &[Incident], alerts: &[Alert], args: &Args, start: i64, end: i64, count: u64, elapsed: Duration) {
    let grace = args.grace_minutes * 60_000;
    let matches = |i: &Incident, a: &Alert| a.fired_ms >= i.start_ms && a.fired_ms <= i.end_ms + grace;
    // Recall counts the incidents judged in full (up to their grace); precision matches alerts
    // against every incident, including one still running at the end.
    let judged: Vec<&Incident> = plan.iter().filter(|i| i.end_ms + grace <= end).collect();
    let mut by_kind: BTreeMap<String, KindRow> = BTreeMap::new();
    for i in &judged {
        let kind = serde_json::to_value(i.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let row = by_kind.entry(kind).or_default();
        row.planted += 1;
        let hits: Vec<&Alert> = alerts.iter().filter(|a| matches(i, a)).collect();
        if let Some(first) = hits.iter().map(|a| a.fired_ms).min() {
            row.detected += 1;
            row.delays.push(first - i.start_ms);
        }
        for a in hits {
            *row.rules.entry(a.rule.clone()).or_default() += 1;
        }
    }
    println!(
        "\n{count} events, {:.1} days of event time at {}/s (daily amplitude {}), replayed in {:.1} s\n",
        (end - start) as f64 / 86_400_000.0,
        args.rate,
        args.amplitude,
        elapsed.as_secs_f64()
    );
    println!("| incident | planted | detected | recall | delay median | delay max | rules that fired |\n|---|---|---|---|---|---|---|");
    let (mut planted, mut detected) = (0, 0);
    for (kind, KindRow { planted: n, detected: hit, mut delays, rules }) in by_kind {
        delays.sort();
        let minutes = |ms: Option<&i64>| ms.map(|d| format!("{:.1} min", *d as f64 / 60_000.0)).unwrap_or("-".into());
        let rules: Vec<String> = rules.into_iter().map(|(r, n)| format!("{r} ({n})")).collect();
        println!(
            "| {kind} | {n} | {hit} | {:.2} | {} | {} | {} |",
            hit as f64 / n as f64,
            minutes(delays.get(delays.len() / 2)),
            minutes(delays.last()),
            rules.join(", ")
        );
        (planted, detected) = (planted + n, detected + hit);
    }
    let true_alerts = alerts.iter().filter(|a| plan.iter().any(|i| matches(i, a))).count();
    let mut false_by_rule: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in alerts.iter().filter(|a| !plan.iter().any(|i| matches(i, a))) {
        let at = schema::time::rfc3339(a.fired_ms);
        false_by_rule.entry(&a.rule).or_default().push(format!("{} at {at} ({})", a.id, a.summary));
    }
    println!(
        "\nrecall {:.2} ({detected}/{planted} incidents), precision {:.2} ({true_alerts}/{} alerts fired during an incident or {} min after)",
        detected as f64 / planted.max(1) as f64,
        true_alerts as f64 / alerts.len().max(1) as f64,
        alerts.len(),
        args.grace_minutes
    );
    for (rule, list) in false_by_rule {
        println!("  false alarms of {rule}: {}", list.join("; "));
    }
}
