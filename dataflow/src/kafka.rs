//! librdkafka client settings. Every setting we choose carries the reason; user properties from
//! `[kafka.properties]` are applied last and win.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, ThreadedProducer};

use crate::config::KafkaConfig;
use crate::source::SourceError;

fn apply_user_properties(client: &mut ClientConfig, config: &KafkaConfig) {
    for (key, value) in &config.properties {
        client.set(key, value);
    }
}

/// How long a fetch waits for records (librdkafka's default is 500 ms).
pub const FETCH_WAIT_MS: u64 = 20;

/// The engine's consumer; `fetch_wait_ms` overrides the fetch wait (a consumer restarted after a
/// stall waits longer).
pub fn consumer(config: &KafkaConfig, fetch_wait_ms: Option<u64>) -> Result<BaseConsumer, SourceError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        // Lag tools read the group's committed offsets, even though partitions are assigned by us.
        .set("group.id", &config.group_id)
        // Offsets are committed by the engine only once a snapshot covers them and the frontier
        // has passed them; auto commit would acknowledge what the views have not absorbed.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // `start = committed` with no committed offset falls back to the beginning: views must see
        // the whole retained window, not only what arrives from now on.
        .set("auto.offset.reset", "earliest")
        // Answer fetches as soon as anything is there, and wait at most 20 ms otherwise: on a
        // broker that does not answer a waiting fetch when records arrive (librdkafka's mock
        // cluster), the default 500 ms wait alone put p99 freshness near half a second. A broker
        // too slow for it is handled by restarting the consumer with a longer wait.
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS.to_string())
        // A deep local queue amortises per-request cost at millions of small events per second.
        .set("queued.min.messages", "200000")
        // Keeps consumers quiet on a broker without group coordination for assigned partitions.
        .set("enable.partition.eof", "false");
    apply_user_properties(&mut client, config);
    if let Some(wait) = fetch_wait_ms {
        client.set("fetch.wait.max.ms", wait.to_string());
    }
    client.create().map_err(|e| SourceError::Kafka(format!("cannot create a consumer for {}: {e}", config.brokers)))
}

fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        // An event is stored once it is on every in-sync replica; the collector answers 2xx only then.
        .set("acks", "all")
        // Retries never duplicate or reorder a user's events within a partition.
        .set("enable.idempotence", "true")
        // lz4 batches are cheap to make and, on librdkafka's mock cluster, stored whole (its
        // per-partition cap counts messages, so uncompressed demo traffic ages out sooner).
        .set("compression.type", "lz4")
        // Small batching delay: throughput without hurting sub-second freshness.
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000");
    apply_user_properties(&mut client, config);
    client
}

pub fn producer(config: &KafkaConfig) -> Result<ThreadedProducer<DefaultProducerContext>, SourceError> {
    producer_config(config)
        .create()
        .map_err(|e| SourceError::Kafka(format!("cannot create a producer for {}: {e}", config.brokers)))
}

/// The collector's producer: the same durability settings, and a delivery timeout so a request
/// gets its answer (stored, or 503) in bounded time when Kafka is slow or down.
pub fn collector_producer(config: &KafkaConfig, delivery_timeout_ms: u64) -> Result<FutureProducer, SourceError> {
    let mut client = producer_config(config);
    // After this long unacknowledged, a record fails instead of waiting for the broker to return:
    // the HTTP client is told 503 and retries; nothing is acknowledged that was not stored.
    client.set("message.timeout.ms", delivery_timeout_ms.to_string());
    // A request waits for its records' acks, not for a batch to fill.
    client.set("linger.ms", "1");
    apply_user_properties(&mut client, config);
    // What the collector promises (2xx = stored on every in-sync replica, once, in bounded time)
    // is not a matter of taste: `[kafka.properties]` (shared with the dead-letter producer) cannot
    // weaken it here.
    client
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", delivery_timeout_ms.to_string());
    client
        .create()
        .map_err(|e| SourceError::Kafka(format!("cannot create the collector's producer for {}: {e}", config.brokers)))
}
