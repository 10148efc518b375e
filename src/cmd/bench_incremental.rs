//! `clickflow bench incremental`: with `--count` events already in every view, how long a batch
//! of new events takes to be visible through the API: produced into (embedded) Kafka, read,
//! admitted, through every view, published and answered over HTTP. A batch engine (DuckDB in
//! `benches/versus-duckdb`) answers the same question only by recomputing from scratch.
//!
//! The answer polled is `clickflow_events_in_total` on `/metrics`: it comes from the same published
//! snapshot as every view, so once it counts the batch, every view's answer includes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dataflow::source::kafka::KafkaSource;
use dataflow::SourceFactory;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::Producer;

use super::bench_limits::{serve_on_loopback, Client};
use crate::config::Config;

#[derive(clap::Args, Clone, Copy, PartialEq)]
pub struct Args {
    /// New events per batch.
    #[arg(long, default_value_t = 1_000)]
    batch: u64,
    /// Batches, one after the other (each waits for the previous one to be visible).
    #[arg(long, default_value_t = 20)]
    rounds: u64,
}

pub fn main(config: &Config, count: u64, args: Args) -> Result<()> {
    let mut config = config.clone();
    // Only well-formed, on-time records: every record of a batch is then one more accepted event,
    // and the poll knows what to wait for.
    (config.generator.late_share, config.generator.too_late_share) = (0.0, 0.0);
    (config.generator.duplicate_share, config.generator.malformed_share) = (0.0, 0.0);
    let mock = MockCluster::new(1)?;
    let mut records = super::bench::generated(&config, count + args.batch * args.rounds).into_iter();
    super::bench::fill_kafka_with(&mut config, &mock, count, records.by_ref().take(count as usize))?;
    let engine = Arc::new(super::engine(&config)?);
    let (_runtime, address) = serve_on_loopback(&engine)?;
    let sources: SourceFactory = KafkaSource::factory(&config.kafka, super::bench::bench_timing())?;
    let (read_model, stop) = (engine.read_model.clone(), engine.stop.clone());
    let thread = {
        let engine = engine.clone();
        std::thread::spawn(move || engine.run(sources, super::discard_sinks()))
    };
    let mut client = Client::connect(&address.to_string())?;
    let started = Instant::now();
    let mut seen = wait_for(&mut client, count, Duration::from_secs(600))?;
    let loaded = started.elapsed();
    println!(
        "| catch-up: {count} events from embedded Kafka through every view | {count} | {:.2} | {:.0} | then batches of {} |",
        loaded.as_secs_f64(),
        count as f64 / loaded.as_secs_f64(),
        args.batch
    );
    let producer = dataflow::kafka::producer(&config.kafka)?;
    let topic = config.kafka.topics[0].clone();
    // From the batch's first record handed to the producer to the batch visible, and the hand-off.
    let (mut latencies, mut produce) =
        (hdrhistogram::Histogram::<u64>::new(3)?, hdrhistogram::Histogram::<u64>::new(3)?);
    for _ in 0..args.rounds {
        // Let the engine go idle between batches, as it would between bursts of live traffic.
        std::thread::sleep(Duration::from_millis(300));
        let batch_started = Instant::now();
        for (key, line) in records.by_ref().take(args.batch as usize) {
            super::generate::send(&producer, &topic, &key, &line)?;
        }
        let sent = Instant::now();
        // Not waiting for the acknowledgements: librdkafka's mock cluster acknowledges acks=all
        // writes about 100 ms after the consumer can already read them.
        seen = wait_for(&mut client, seen + args.batch, Duration::from_secs(30))?;
        latencies.record(batch_started.elapsed().as_micros() as u64)?;
        produce.record(sent.duration_since(batch_started).as_micros() as u64)?;
        producer.flush(Duration::from_secs(10))?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    thread.join().map_err(|_| anyhow::anyhow!("engine panicked"))??;
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| {} new events visible through the API (produce, read, every view, publish, HTTP) | {} batches | | | p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (handing the batch to the producer: p50 {:.1} ms); epoch {} ms; {} events in the views |",
        args.batch,
        args.rounds,
        ms(0.5),
        ms(0.9),
        latencies.max() as f64 / 1000.0,
        produce.value_at_quantile(0.5) as f64 / 1000.0,
        config.engine.epoch_ms,
        read_model.accepted()
    );
    Ok(())
}

/// Polls `/metrics` until the engine has counted `records` input records; returns the count.
fn wait_for(client: &mut Client, records: u64, timeout: Duration) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let metrics = client.get("/metrics")?;
        let counted = metrics
            .lines()
            .find_map(|l| l.strip_prefix("clickflow_events_in_total "))
            .context("/metrics has no clickflow_events_in_total")?
            .trim()
            .parse::<u64>()?;
        if counted >= records {
            return Ok(counted);
        }
        if Instant::now() > deadline {
            bail!("only {counted} of {records} records counted after {timeout:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}
