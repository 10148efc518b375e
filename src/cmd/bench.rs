//! `clickflow bench`: end-to-end rates and freshness, measured (never asserted in tests).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dataflow::clock::PartitionClock;
use dataflow::decode::{decode, Decoded};
use dataflow::ingest::Ingest;
use dataflow::source::file::SharedFile;
use dataflow::source::kafka::{KafkaSource, KafkaTiming};
use dataflow::source::{worker_clock, InputClock, PartClock, Poll, Source, SourceError};
use dataflow::SourceFactory;
use generator::Generator;
use rdkafka::mocking::MockCluster;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
    /// Records per run.
    #[arg(long, global = true, default_value_t = 1_000_000)]
    count: u64,
}

#[derive(clap::Subcommand, Clone, Copy, PartialEq)]
enum What {
    /// JSON decoding alone, one thread.
    Decode,
    /// Ingestion, dataflow and read model on pre-decoded events.
    Dataflow,
    /// A generated NDJSON file through decoding and every view.
    File,
    /// Records already in (embedded) Kafka through every view.
    Kafka,
    /// Event-to-read-model latency at a fixed rate through embedded Kafka.
    Freshness {
        #[arg(long, default_value_t = 50_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Restart time from a snapshot, after `--count` records, against a rebuild from Kafka.
    Recovery,
    /// Latency of each path query on the graph a file replay of `--count` records leaves.
    Paths,
    /// Rate-limit queries over HTTP (loopback) while `--count` events are ingested.
    Limits,
    /// After `--count` events, how long batches of new events take to be visible through the API.
    Incremental(super::bench_incremental::Args),
    /// Recall, precision and detection delay of the default alert rules on planted incidents.
    Alerts(super::bench_alerts::Args),
    /// HTTP requests through the collector into embedded Kafka, from loopback clients.
    Collect(super::bench_collect::CollectArgs),
    /// Decoding alone against decoding plus every enrichment, per event.
    Enrich,
    /// All of the above with their defaults.
    All,
}

pub fn main(mut config: Config, args: Args) -> Result<()> {
    // Every view: sessions and paths always run; funnels and retention need definitions (the
    // shop's by default).
    super::shop_defaults(&mut config.views);
    let machine = format!(
        "{} cores, {} workers, sessions, paths, {} funnels and {} retention definitions",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        config.engine.workers,
        config.views.funnels.len(),
        config.views.retention.len()
    );
    println!("| benchmark | records | seconds | events/s | notes |\n|---|---|---|---|---|");
    let all = args.what == What::All;
    if all || args.what == What::Decode {
        decode_bench(&config, args.count)?;
    }
    if all || args.what == What::Dataflow {
        dataflow_bench(&config, args.count)?;
    }
    if all || args.what == What::File {
        file_bench(&config, args.count)?;
    }
    if all || args.what == What::Kafka {
        kafka_bench(&config, args.count)?;
    }
    match args.what {
        What::Freshness { rate, seconds } => freshness_bench(&config, rate, seconds)?,
        What::All => freshness_bench(&config, 50_000.0, 20)?,
        _ => {}
    }
    if all || args.what == What::Paths {
        super::bench_paths::main(&config, args.count)?;
    }
    if all || args.what == What::Limits {
        super::bench_limits::main(&config, args.count)?;
    }
    if let What::Incremental(incremental) = args.what {
        return super::bench_incremental::main(&config, args.count, incremental);
    }
    if let What::Alerts(alerts) = &args.what {
        return super::bench_alerts::main(&config, alerts);
    }
    if let What::Collect(collect) = args.what {
        return super::bench_collect::collect(&config, collect);
    }
    if args.what == What::Enrich {
        return super::bench_collect::enrich(&config, args.count);
    }
    if all || args.what == What::Recovery {
        recovery_bench(&config, args.count)?;
    }
    println!("\n({machine}; peak RSS {} MiB)", peak_rss_mib());
    Ok(())
}

fn row(name: &str, records: u64, elapsed: Duration, notes: &str) {
    let s = elapsed.as_secs_f64();
    println!("| {name} | {records} | {s:.2} | {:.0} | {notes} |", records as f64 / s);
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

pub(super) fn generated(config: &Config, count: u64) -> Vec<(String, Vec<u8>)> {
    let start = chrono::DateTime::parse_from_rfc3339(super::generate::DEFAULT_START).expect("valid").timestamp_millis();
    let mut generator_config = config.generator.clone();
    generator_config.rate = 20_000.0;
    Generator::new(generator_config, start).take(count as usize).map(|g| (g.key, g.line)).collect()
}

fn decode_bench(config: &Config, count: u64) -> Result<()> {
    let records = generated(config, count);
    let bytes: usize = records.iter().map(|r| r.1.len()).sum();
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let ok = records.iter().filter(|(_, line)| decode(line, now).is_ok()).count();
    let elapsed = started.elapsed();
    row(
        "decode (1 thread)",
        count,
        elapsed,
        &format!(
            "{ok} valid, {:.0} MB/s, {} bytes/event",
            bytes as f64 / elapsed.as_secs_f64() / 1e6,
            bytes / count.max(1) as usize
        ),
    );
    Ok(())
}

/// Pre-decoded events, split over workers by user (as Kafka partitions keyed by user are).
struct Decodedsource {
    events: Arc<Vec<Decoded<'static>>>,
    next: usize,
    index: u64,
    peers: u64,
    clock: PartitionClock,
}

impl Source for Decodedsource {
    fn poll(&mut self, ingest: &mut Ingest, deadline: Instant) -> Result<Poll, SourceError> {
        let lateness = ingest.lateness_ms();
        let mut n = 0;
        while self.next < self.events.len() {
            let d = &self.events[self.next];
            self.next += 1;
            if d.event.user % self.peers != self.index {
                continue;
            }
            if self.clock.admit(d.event.ts, d.event_id, lateness, i64::MAX / 2).is_ok() {
                ingest.add(d, views::admitted::ord(self.index as u32, self.next as u64));
            }
            n += 1;
            if n % 4096 == 0 && (Instant::now() >= deadline || ingest.full()) {
                return Ok(Poll::Busy);
            }
        }
        Ok(Poll::Done)
    }
    fn clock(&self, lateness_ms: i64, as_of: Option<i64>) -> InputClock {
        let done = self.next >= self.events.len();
        worker_clock(std::iter::once(PartClock { clock: &self.clock, idle: done, finished: done }), lateness_ms, as_of)
    }
}

fn dataflow_bench(config: &Config, count: u64) -> Result<()> {
    let (sources, n) = predecoded(config, count);
    let engine = super::engine(config)?;
    let started = Instant::now();
    engine.run(sources, super::discard_sinks())?;
    row("dataflow (pre-decoded events, every view)", n, started.elapsed(), "ingest + differential + read model");
    Ok(())
}

/// Sources over `count` generated events decoded up front (ingestion at its fastest), and how
/// many there are.
pub(super) fn predecoded(config: &Config, count: u64) -> (SourceFactory, u64) {
    let records = generated(config, count);
    // Leaked for the life of the process: decoded events borrow from their lines.
    let lines: &'static [(String, Vec<u8>)] = Box::leak(records.into_boxed_slice());
    let now = chrono::Utc::now().timestamp_millis();
    let events: Arc<Vec<Decoded<'static>>> = Arc::new(lines.iter().filter_map(|(_, l)| decode(l, now).ok()).collect());
    let n = events.len() as u64;
    let sources: SourceFactory = Arc::new(move |index, peers| {
        Ok(Box::new(Decodedsource {
            events: events.clone(),
            next: 0,
            index: index as u64,
            peers: peers as u64,
            clock: PartitionClock::default(),
        }) as Box<dyn Source>)
    });
    (sources, n)
}

fn file_bench(config: &Config, count: u64) -> Result<()> {
    replay_generated(config, count).map(|_| ())
}

/// Generates `count` records into a file and replays it through every view; reports the rate.
pub(super) fn replay_generated(config: &Config, count: u64) -> Result<Arc<read::ReadModel>> {
    let dir = tempfile_dir()?;
    let path = dir.join("bench.ndjson");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for (_, line) in generated(config, count) {
            out.write_all(&line)?;
            out.write_all(b"\n")?;
        }
    }
    let engine = super::engine(config)?;
    let shared = SharedFile::open(&path)?;
    let sources: SourceFactory = {
        let shared = shared.clone();
        Arc::new(move |_, _| Ok(Box::new(shared.source()) as Box<dyn Source>))
    };
    let started = Instant::now();
    engine.run(sources, super::discard_sinks())?;
    let elapsed = started.elapsed();
    row(
        "file -> views (decode + every view)",
        shared.lines_done(),
        elapsed,
        &format!(
            "{:.0} MB/s, peak RSS {} MiB",
            shared.bytes_read() as f64 / elapsed.as_secs_f64() / 1e6,
            peak_rss_mib()
        ),
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(engine.read_model.clone())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("clickflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Partitions for bench topics: librdkafka's mock keeps only ~100k messages per partition.
fn bench_partitions(count: u64) -> i32 {
    (count / 50_000).clamp(4, 64) as i32
}

fn fill_kafka(
    config: &mut Config,
    mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    count: u64,
) -> Result<()> {
    let records = generated(config, count);
    fill_kafka_with(config, mock, count, records)
}

/// Creates the bench topic on `mock`, points `config` at it and produces `records` (`count` of them).
pub(super) fn fill_kafka_with(
    config: &mut Config,
    mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    count: u64,
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<()> {
    mock.create_topic("bench", bench_partitions(count), 1)?;
    config.kafka.brokers = mock.bootstrap_servers();
    config.kafka.topics = vec!["bench".into()];
    config.kafka.dead_letter_topic = String::new();
    config.kafka.start = "earliest".into();
    let producer = dataflow::kafka::producer(&config.kafka)?;
    let started = Instant::now();
    for (key, line) in records {
        super::generate::send(&producer, "bench", &key, &line)?;
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(60))?;
    row("produce into embedded Kafka (setup)", count, started.elapsed(), "acks=all, lz4");
    Ok(())
}

/// Runs the engine on Kafka until `count` records are counted; returns the time it took.
fn consume(config: &Config, count: u64) -> Result<(Duration, Arc<read::ReadModel>)> {
    let engine = Arc::new(super::engine(config)?);
    let kafka = config.kafka.clone();
    let sources: SourceFactory = KafkaSource::factory(&kafka, bench_timing())?;
    let (read_model, stop) = (engine.read_model.clone(), engine.stop.clone());
    let started = Instant::now();
    let thread = std::thread::spawn(move || engine.run(sources, super::discard_sinks()));
    while read_model.accepted() + read_model.rejects().total < count as i64 {
        std::thread::sleep(Duration::from_millis(2));
        if thread.is_finished() {
            break;
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    thread.join().map_err(|_| anyhow::anyhow!("engine panicked"))??;
    Ok((elapsed, read_model))
}

fn kafka_bench(config: &Config, count: u64) -> Result<()> {
    let mut config = config.clone();
    let mock = MockCluster::new(1)?;
    fill_kafka(&mut config, &mock, count)?;
    let (elapsed, _) = consume(&config, count)?;
    row(
        "embedded Kafka -> views",
        count,
        elapsed,
        &format!("{} partitions, until every record is in the read model", bench_partitions(count)),
    );
    Ok(())
}

fn freshness_bench(config: &Config, rate: f64, seconds: u64) -> Result<()> {
    let mut config = config.clone();
    let mock = MockCluster::new(1)?;
    mock.create_topic("fresh", 4, 1)?;
    config.kafka.brokers = mock.bootstrap_servers();
    config.kafka.topics = vec!["fresh".into()];
    config.kafka.dead_letter_topic = String::new();
    let mut generator = config.generator.clone();
    // Only on-time records: a late record's age is its lateness, not the engine's delay.
    (generator.rate, generator.late_share, generator.too_late_share) = (rate, 0.0, 0.0);
    let start = super::generate::realtime_start(rate);
    let mut engine = super::engine(&config)?;
    // The first second settles connections and fetch sessions; measure what follows.
    engine.measure_freshness = Some(start + 1000);
    let stop = engine.stop.clone();
    let kafka = config.kafka.clone();
    let sources: SourceFactory = KafkaSource::factory(&kafka, bench_timing())?;
    let thread = std::thread::spawn(move || engine.run(sources, super::discard_sinks()));
    let produced = Arc::new(AtomicUsize::new(0));
    let producer_stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (kafka, stop, produced) = (config.kafka.clone(), producer_stop.clone(), produced.clone());
        std::thread::spawn(move || -> Result<()> {
            let n = super::generate::to_kafka(Generator::realtime(generator, start), &kafka, "fresh", 0, true, &stop)?;
            produced.store(n as usize, Ordering::Relaxed);
            Ok(())
        })
    };
    std::thread::sleep(Duration::from_millis((start - chrono::Utc::now().timestamp_millis()).max(0) as u64 + 1000));
    std::thread::sleep(Duration::from_secs(seconds));
    producer_stop.store(true, Ordering::Relaxed);
    producer.join().map_err(|_| anyhow::anyhow!("producer panicked"))??;
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let report = thread.join().map_err(|_| anyhow::anyhow!("engine panicked"))??;
    let h = report.freshness_ms.context("no events were measured")?;
    println!(
        "| freshness at {rate:.0} events/s for {seconds} s (event ts -> read model, through Kafka) | {} | {seconds} | {:.0} | p50 {} ms, p90 {} ms, p99 {} ms, max {} ms |",
        h.len(),
        h.len() as f64 / seconds as f64,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.max()
    );
    Ok(())
}

fn recovery_bench(config: &Config, count: u64) -> Result<()> {
    let mut config = config.clone();
    let mock = MockCluster::new(1)?;
    fill_kafka(&mut config, &mock, count)?;
    let scratch = tempfile_dir()?;
    let dir = scratch.join("state");
    config.engine.state_dir = Some(dir.clone());
    config.engine.snapshot_seconds = 1;
    let (first, read_model) = consume(&config, count)?;
    let expected = read_model.dump();
    row("first run, snapshots on", count, first, "then a clean stop");
    let size: u64 = std::fs::read_dir(&dir)?.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum();
    let (restart, read_model) = consume(&config, count)?;
    let same = {
        let mut a = read_model.dump();
        a.live.clock.epoch = expected.live.clock.epoch;
        a == expected
    };
    row(
        "restart from snapshot",
        count,
        restart,
        &format!("snapshot {:.1} MiB; views identical: {same}", size as f64 / 1048576.0),
    );
    std::fs::remove_dir_all(&dir)?;
    let (rebuild, _) = consume(&config, count)?;
    // The rebuild writes snapshots too (the same cost as the first run): gigabytes left in /tmp.
    let _ = std::fs::remove_dir_all(&scratch);
    row("restart without snapshot (rebuild from Kafka)", count, rebuild, "re-reads every record");
    Ok(())
}

/// Benchmarks read a prepared backlog: a partition is idle one second after its end.
pub fn bench_timing() -> KafkaTiming {
    KafkaTiming { idle_after: Duration::from_secs(1), stall_after: Duration::from_secs(20) }
}
