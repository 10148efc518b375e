//! `clickflow generate`: synthetic traffic to a file or a Kafka topic.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dataflow::KafkaConfig;
use generator::generator::Generated;
use generator::Generator;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::config::Config;

/// Default start of generated event time, fixed so that the same seed gives the same file.
pub const DEFAULT_START: &str = "2026-11-20T00:00:00Z";

#[derive(clap::Args)]
pub struct Args {
    /// Output file (`.gz` to compress); without it, `--topic` is required.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Kafka topic to produce to (brokers from kafka.brokers or --brokers).
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    brokers: Option<String>,
    /// Records to write (0 with --realtime: until Ctrl-C).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Events per second of event time (overrides generator.rate).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Daily cycle amplitude: rate × (1 + A sin(…)), peak at 15:00 UTC (overrides
    /// generator.daily_amplitude).
    #[arg(long)]
    daily_amplitude: Option<f64>,
    /// Mean minutes between planted incidents, 0 for none (overrides
    /// generator.incidents.every_minutes).
    #[arg(long)]
    incidents_every: Option<f64>,
    /// Write the incidents planted in the generated span to this file (a JSON array): the labels
    /// for evaluating alert rules.
    #[arg(long)]
    incidents_out: Option<PathBuf>,
    /// First event time (RFC 3339).
    #[arg(long, default_value = DEFAULT_START)]
    start: String,
    /// Pace records to the wall clock with ts = now (for live demos and freshness).
    #[arg(long)]
    realtime: bool,
}

pub fn main(config: Config, args: Args) -> Result<()> {
    let mut generator_config = config.generator.clone();
    if let Some(rate) = args.rate {
        generator_config.rate = rate;
    }
    if let Some(seed) = args.seed {
        generator_config.seed = seed;
    }
    if let Some(amplitude) = args.daily_amplitude {
        generator_config.daily_amplitude = amplitude;
    }
    if let Some(every) = args.incidents_every {
        generator_config.incidents.every_minutes = every;
    }
    generator_config.lateness_seconds = config.engine.lateness_seconds;
    let mut generator = if args.realtime {
        let start = realtime_start(generator_config.rate);
        Generator::realtime(generator_config, start)
    } else {
        let start = chrono::DateTime::parse_from_rfc3339(&args.start)
            .with_context(|| format!("--start `{}` is not RFC 3339", args.start))?
            .timestamp_millis();
        Generator::new(generator_config, start)
    };
    // Delivery time of the last record written: every event before it has been generated.
    let mut last_ms = None;
    let mut generated = (&mut generator).inspect(|r| last_ms = Some(r.deliver_ms));
    match (&args.out, &args.topic) {
        (Some(path), None) => to_file(&mut generated, path, args.count)?,
        (None, Some(topic)) => {
            let mut kafka = config.kafka.clone();
            if let Some(b) = &args.brokers {
                kafka.brokers = b.clone();
            }
            let stop = Arc::new(AtomicBool::new(false));
            super::stop_on_signal(stop.clone());
            let n = to_kafka(&mut generated, &kafka, topic, args.count, args.realtime, &stop)?;
            eprintln!("produced {n} records to {topic} on {}", kafka.brokers);
        }
        _ => bail!("say where to write: --out FILE or --topic TOPIC (not both)"),
    }
    if let Some(path) = &args.incidents_out {
        let incidents = last_ms.map(|t| generator.incidents_until(t)).unwrap_or_default();
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        serde_json::to_writer_pretty(&mut out, &incidents)?;
        out.write_all(b"\n")?;
        out.flush()?;
        eprintln!("wrote {} incidents to {}", incidents.len(), path.display());
    }
    Ok(())
}

fn to_file(generator: impl Iterator<Item = Generated>, path: &PathBuf, count: u64) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out: Box<dyn Write> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast()))
    } else {
        Box::new(BufWriter::with_capacity(1 << 20, file))
    };
    let started = Instant::now();
    for record in generator.take(count as usize) {
        out.write_all(&record.line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    drop(out);
    eprintln!("wrote {count} records to {} in {:.1} s", path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Start of real-time traffic at `rate`: far enough ahead that the generator's warm-up is
/// simulated before the first record is due (otherwise the first records go out late and look
/// stale).
pub fn realtime_start(rate: f64) -> i64 {
    chrono::Utc::now().timestamp_millis() + Generator::realtime_lead_ms(rate)
}

/// Produces records keyed by user; in real time, each when its delivery time comes. Returns the
/// number produced (every one acknowledged by the broker, or an error).
pub fn to_kafka(
    mut generator: impl Iterator<Item = Generated>,
    kafka: &KafkaConfig,
    topic: &str,
    count: u64,
    realtime: bool,
    stop: &AtomicBool,
) -> Result<u64> {
    let producer = dataflow::kafka::producer(kafka)?;
    let mut n = 0u64;
    // Checks before taking a record, so no record is generated and left unsent.
    while !stop.load(Ordering::Relaxed) && (count == 0 || n < count) {
        let Some(record) = generator.next() else {
            break;
        };
        if realtime {
            let wait = record.deliver_ms - chrono::Utc::now().timestamp_millis();
            if wait > 0 {
                std::thread::sleep(Duration::from_millis(wait as u64));
            }
        }
        send(&producer, topic, &record.key, &record.line)?;
        n += 1;
    }
    producer.flush(Duration::from_secs(30)).context("not every record was acknowledged within 30 s")?;
    Ok(n)
}

/// Sends one record, waiting while librdkafka's queue is full.
pub fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, payload: &[u8]) -> Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => bail!("cannot produce to {topic}: {e}"),
        }
    }
}
