//! `clickflow replay FILE`: the same dataflow over a file, as fast as it goes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dataflow::source::file::SharedFile;
use dataflow::source::Source;
use dataflow::SourceFactory;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// NDJSON events, plain or gzip.
    file: PathBuf,
    /// Write every view's final state, the reject counts and the alerts that fired as JSON.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Where rejected lines go, with reason and line number (default: engine.dead_letter_file,
    /// else dead-letters.ndjson).
    #[arg(long)]
    dead_letters: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Do not judge the alert rules (the views alone: on a 13-day file the rules cost about a
    /// third of the replay's time).
    #[arg(long)]
    no_alerts: bool,
}

pub fn main(config: Config, args: Args) -> Result<()> {
    let engine = super::engine(&config)?;
    // The rules are judged on every published snapshot, as in `run`.
    let alerts = (!args.no_alerts).then(|| super::alerting(&engine));
    let shared = SharedFile::open(&args.file)?;
    let sources: SourceFactory = {
        let shared = shared.clone();
        Arc::new(move |_, _| Ok(Box::new(shared.source()) as Box<dyn Source>))
    };
    let dead_letters = args
        .dead_letters
        .or(config.engine.dead_letter_file.clone())
        .unwrap_or_else(|| PathBuf::from("dead-letters.ndjson"));
    let sinks = super::file_sinks(&dead_letters)?;
    let progress = (!args.quiet).then(|| progress_bar(shared.clone()));
    let started = Instant::now();
    engine.run(sources, sinks)?;
    if let Some((bar, handle)) = progress {
        bar.finish_and_clear();
        handle.abort();
    }
    let elapsed = started.elapsed();
    let lines = shared.lines_done();
    let rejects = engine.read_model.rejects();
    // Blank lines and filtered events are counted but not written as dead letters.
    let unwritten: i64 = ["blank", "filtered"].iter().filter_map(|r| rejects.by_reason.get(*r)).copied().sum();
    let dead_lettered = rejects.total - unwritten;
    eprintln!(
        "replayed {lines} lines in {:.2} s: {:.0} events/s ({:.1} MB/s); {} accepted, {} rejected{}",
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64(),
        shared.bytes_read() as f64 / elapsed.as_secs_f64() / 1e6,
        engine.read_model.accepted(),
        rejects.total,
        if dead_lettered > 0 { format!(" (see {})", dead_letters.display()) } else { String::new() }
    );
    for (reason, n) in &rejects.by_reason {
        eprintln!("  {reason}: {n}");
    }
    let history = alerts.as_ref().map(|alerts| {
        let (_, mut history) = alerts.history();
        history.reverse();
        let firing = alerts.active().1.len();
        eprintln!("{}", alert_summary(&alerts.fired(), firing, history.len(), config.views.alerts.history));
        let joined = alerts.joined();
        if !joined.is_empty() {
            eprintln!("  rules that also fired within those alerts (same series): {}", by_rule(&joined).join(", "));
        }
        history
    });
    if let Some(path) = args.dump {
        let file = std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let mut dump = serde_json::to_value(engine.read_model.dump())?;
        if let Some(history) = &history {
            dump["alerts"] = serde_json::to_value(history)?;
        }
        serde_json::to_writer_pretty(&mut out, &dump)?;
        std::io::Write::flush(&mut out)?;
        eprintln!("wrote {}", path.display());
    }
    // Everything is written: end here rather than free the views' state (seconds after a big
    // replay, for nothing).
    std::process::exit(0)
}

/// "3 alerts fired: 2 ip_burst, 1 traffic_anomaly (1 still firing at the end)", from the alerts
/// fired by rule; the dump's history keeps the newest `kept` of them.
fn alert_summary(fired: &BTreeMap<String, u64>, firing: usize, in_history: usize, kept: usize) -> String {
    let total: u64 = fired.values().sum();
    if total == 0 {
        return "no alert fired".to_string();
    }
    let listed = by_rule(fired);
    let plural = if total == 1 { "alert" } else { "alerts" };
    let newest = if total > in_history as u64 {
        format!("; the dump keeps the newest {in_history} (raise alerts.history, now {kept}, to keep more)")
    } else {
        String::new()
    };
    format!("{total} {plural} fired: {} ({firing} still firing at the end{newest})", listed.join(", "))
}

/// "2 ip_burst", "1 traffic_anomaly": most first.
fn by_rule(counts: &BTreeMap<String, u64>) -> Vec<String> {
    let mut rules: Vec<(&String, &u64)> = counts.iter().collect();
    rules.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    rules.iter().map(|(rule, n)| format!("{n} {rule}")).collect()
}

struct Abort(Arc<std::sync::atomic::AtomicBool>);

impl Abort {
    fn abort(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn progress_bar(shared: Arc<SharedFile>) -> (ProgressBar, Abort) {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (b, d) = (bar.clone(), done.clone());
    std::thread::spawn(move || {
        let start = Instant::now();
        while !d.load(std::sync::atomic::Ordering::Relaxed) {
            let lines = shared.lines_done();
            let mb = shared.bytes_read() as f64 / 1e6;
            let rate = lines as f64 / start.elapsed().as_secs_f64().max(1e-3);
            b.set_message(format!("{lines} lines, {mb:.0} MB read, {rate:.0} events/s"));
            b.tick();
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    (bar, Abort(done))
}
