//! Kafka input: this worker's partitions (partition i of the sorted topic-partition list goes to
//! worker i mod W), assigned explicitly, read with event-time clocks per partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use read::status::PartitionProgress;
use read::Status;

use super::kafka_health::{judge, EndAnswer, EndOffsets, Health, Observation};
use super::{now_ms, worker_clock, Checkpoint, InputClock, PartClock, Poll, Source, SourceError};
use crate::clock::PartitionClock;
use crate::config::KafkaConfig;
use crate::deadletter::Coords;
use crate::decode::decode;
use crate::ingest::Ingest;
use crate::runtime::SourceFactory;

mod positions;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest fetch wait a restarted consumer asks for (see [`KafkaSource::restart_consumer`]).
const MAX_FETCH_WAIT_MS: u64 = 2_500;

/// When a Kafka partition counts as idle, and as stalled.
#[derive(Clone, Copy, Debug)]
pub struct KafkaTiming {
    /// Caught up and quiet this long: the partition no longer holds back `as_of`.
    pub idle_after: Duration,
    /// Records waiting and none read (or no answer from the broker) this long: not ready, and
    /// the consumer is restarted.
    pub stall_after: Duration,
}

impl KafkaTiming {
    pub fn of(engine: &crate::config::EngineConfig) -> KafkaTiming {
        KafkaTiming {
            idle_after: Duration::from_secs(engine.idle_seconds),
            stall_after: Duration::from_secs(engine.stall_seconds.max(1)),
        }
    }
}

struct Part {
    topic: String,
    partition: i32,
    /// Its index among all partitions of all topics (sorted): its place in the engine's order.
    rank: u32,
    clock: PartitionClock,
    /// Next offset to read; `None` until the first message or a restore.
    next_offset: Option<i64>,
    /// High watermark when the engine started: reading up to it is "caught up".
    start_high: i64,
    last_message: Instant,
    /// Consumers restarted while this partition was stalled.
    restarts: u64,
}

impl Part {
    fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

pub struct KafkaSource {
    consumer: BaseConsumer,
    config: KafkaConfig,
    parts: Vec<Part>,
    timing: KafkaTiming,
    /// The broker's answers about where each partition ends.
    ends: EndOffsets,
    assigned: Option<Instant>,
    /// The fetch wait of the current consumer (`None`: as configured).
    fetch_wait_ms: Option<u64>,
    last_check: Instant,
    last_restart: Instant,
    last_error_log: Option<Instant>,
}

/// Every partition of `topics`, sorted, so each worker computes the same split.
pub fn topic_partitions(consumer: &BaseConsumer, topics: &[String]) -> Result<Vec<(String, i32)>, SourceError> {
    let mut all = Vec::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT).map_err(|e| {
            SourceError::Kafka(format!("cannot read metadata of topic `{topic}`: {e}; is the broker reachable?"))
        })?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(SourceError::Kafka(format!(
                "topic `{topic}` is not in the broker's metadata; create it or fix kafka.topics"
            )));
        };
        if let Some(e) = t.error() {
            return Err(SourceError::Kafka(format!("topic `{topic}`: {e:?}; create it or fix kafka.topics")));
        }
        all.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
    }
    if all.is_empty() {
        return Err(SourceError::Kafka(format!(
            "no partitions found for topics {topics:?}; create them or fix kafka.topics"
        )));
    }
    all.sort();
    Ok(all)
}

impl KafkaSource {
    /// Sources for every worker, splitting one partition list read once, so that workers can
    /// never disagree on who reads which partition.
    pub fn factory(config: &KafkaConfig, timing: KafkaTiming) -> Result<SourceFactory, SourceError> {
        let all = Arc::new(topic_partitions(&crate::kafka::consumer(config, None)?, &config.topics)?);
        let config = config.clone();
        Ok(Arc::new(move |worker, peers| {
            Ok(Box::new(KafkaSource::new(&config, &all, worker, peers, timing)?) as Box<dyn Source>)
        }))
    }

    /// This worker's share of `all` (sorted topic partitions): partition i goes to worker i mod W.
    pub fn new(
        config: &KafkaConfig,
        all: &[(String, i32)],
        worker: usize,
        peers: usize,
        timing: KafkaTiming,
    ) -> Result<KafkaSource, SourceError> {
        let consumer = crate::kafka::consumer(config, None)?;
        let now = Instant::now();
        let mut parts = Vec::new();
        for (i, (topic, partition)) in all.iter().cloned().enumerate() {
            if i % peers != worker {
                continue;
            }
            let (_, high) = consumer
                .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                .map_err(|e| SourceError::Kafka(format!("cannot read watermarks of {topic}/{partition}: {e}")))?;
            parts.push(Part {
                topic,
                partition,
                rank: i as u32,
                clock: PartitionClock::default(),
                next_offset: None,
                start_high: high,
                last_message: now,
                restarts: 0,
            });
        }
        let mine = parts.iter().map(|p| (p.topic.clone(), p.partition)).collect();
        // Asked often enough that an idle partition is confirmed well within the idle time.
        let every = (timing.idle_after / 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let ends = EndOffsets::start(crate::kafka::consumer(config, None)?, mine, every);
        Ok(KafkaSource {
            consumer,
            config: config.clone(),
            parts,
            timing,
            ends,
            assigned: None,
            fetch_wait_ms: None,
            last_check: now,
            last_restart: now,
            last_error_log: None,
        })
    }

    fn assign(&mut self) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        for i in 0..self.parts.len() {
            let (topic, partition) = (self.parts[i].topic.clone(), self.parts[i].partition);
            let offset = match self.parts[i].next_offset {
                Some(o) => self.check_resumable(&topic, partition, o)?,
                None => self.start_offset(&topic, partition)?,
            };
            self.parts[i].next_offset = Some(offset);
            tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
                .map_err(|e| SourceError::Kafka(e.to_string()))?;
        }
        self.consumer.assign(&tpl).map_err(|e| SourceError::Kafka(format!("cannot assign partitions: {e}")))?;
        tracing::info!(partitions = ?self.parts.iter().map(Part::name).collect::<Vec<_>>(), start = %self.config.start, "consuming");
        self.assigned = Some(Instant::now());
        Ok(())
    }

    /// A consumer that stopped making progress while the broker answers (seen: a broker
    /// restarted on slow storage that answers every short fetch with nothing) is replaced by a
    /// new one at the same positions; `fetch_wait_ms`: the new one's fetch wait (`None`: as
    /// configured).
    fn restart_consumer(&mut self, fetch_wait_ms: Option<u64>) -> Result<(), SourceError> {
        let consumer = crate::kafka::consumer(&self.config, fetch_wait_ms)?;
        let mut tpl = TopicPartitionList::new();
        for part in &self.parts {
            let offset = part.next_offset.expect("assigned partitions have a position");
            tpl.add_partition_offset(&part.topic, part.partition, Offset::Offset(offset))
                .map_err(|e| SourceError::Kafka(e.to_string()))?;
        }
        consumer.assign(&tpl).map_err(|e| SourceError::Kafka(format!("cannot assign partitions: {e}")))?;
        self.consumer = consumer;
        self.fetch_wait_ms = fetch_wait_ms;
        self.last_restart = Instant::now();
        Ok(())
    }

    fn part_index(&self, topic: &str, partition: i32) -> Option<usize> {
        self.parts.iter().position(|p| p.partition == partition && p.topic == topic)
    }

    /// The broker's last answer about the partition's end, and its end: that answer or a later
    /// fetch response's.
    fn end(&self, part: &Part) -> (Option<EndAnswer>, Option<i64>) {
        let answer = self.ends.get(&part.topic, part.partition);
        let cached = cached_high_watermark(&self.consumer, &part.topic, part.partition);
        (answer, answer.map(|a| a.high).max(cached))
    }

    fn health(&self, part: &Part) -> Health {
        let (answer, end) = self.end(part);
        let observed = Observation {
            quiet_for: part.last_message.elapsed(),
            answered_ago: answer.map(|a| a.at.elapsed()),
            end,
            position: part.next_offset.unwrap_or(0),
            reading_for: self.assigned.map_or(Duration::ZERO, |a| a.elapsed()),
        };
        judge(&observed, self.timing.idle_after, self.timing.stall_after)
    }

    /// Once a second: restarts the consumer when a partition is stalled, at most once per stall
    /// time (a new consumer gets the time to show progress), each time with a longer fetch wait;
    /// after a long healthy stretch, back to the configured wait (it decides freshness).
    fn supervise(&mut self) -> Result<(), SourceError> {
        if self.last_check.elapsed() < Duration::from_secs(1) {
            return Ok(());
        }
        self.last_check = Instant::now();
        let healths: Vec<Health> = self.parts.iter().map(|p| self.health(p)).collect();
        let stalled = healths.iter().any(|h| matches!(h, Health::Stalled { .. }));
        let since_restart = self.last_restart.elapsed();
        if stalled && since_restart >= self.timing.stall_after {
            let wait = (self.fetch_wait_ms.unwrap_or(crate::kafka::FETCH_WAIT_MS) * 5).min(MAX_FETCH_WAIT_MS);
            self.restart_consumer(Some(wait))?;
            self.parts.iter_mut().for_each(|p| p.restarts += 1);
            tracing::warn!(
                partitions = ?self.parts.iter().map(Part::name).collect::<Vec<_>>(), fetch_wait_ms = wait,
                "no progress although records wait and the broker answers: consumer restarted at the same positions"
            );
        } else if self.fetch_wait_ms.is_some()
            && since_restart >= self.timing.stall_after * 15
            && healths.iter().all(|h| matches!(h, Health::Reading | Health::Idle))
        {
            self.restart_consumer(None)?;
            tracing::info!("reading without stalls again: consumer back to the configured fetch wait");
        }
        Ok(())
    }
}

impl Source for KafkaSource {
    fn poll(&mut self, ingest: &mut Ingest, deadline: Instant) -> Result<Poll, SourceError> {
        if self.parts.is_empty() {
            return Ok(Poll::Idle);
        }
        if self.assigned.is_none() {
            self.assign()?;
        }
        self.supervise()?;
        let mut now = now_ms();
        let mut n = 0u32;
        loop {
            let message = match self.consumer.poll(Duration::ZERO) {
                None => return Ok(if n == 0 { Poll::Idle } else { Poll::Busy }),
                Some(Err(e)) => {
                    // Transient broker errors are retried by librdkafka; said at most every 10 s
                    // (an outage answers every poll with one). Stalls are judged by `supervise`.
                    if self.last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "kafka consumer error (retried; repeats are not logged for 10 s)");
                        self.last_error_log = Some(Instant::now());
                    }
                    return Ok(Poll::Idle);
                }
                Some(Ok(m)) => m,
            };
            let Some(i) = self.part_index(message.topic(), message.partition()) else {
                continue;
            };
            let payload = message.payload().unwrap_or(&[]);
            let part = &mut self.parts[i];
            let coords = Coords::Kafka { topic: &part.topic, partition: part.partition, offset: message.offset() };
            let ord = views::admitted::ord(part.rank, message.offset() as u64);
            ingest.offer(&mut part.clock, decode(payload, now), &coords, payload, now, ord);
            part.next_offset = Some(message.offset() + 1);
            part.last_message = Instant::now();
            n += 1;
            if n.is_multiple_of(256) {
                now = now_ms();
                if part.last_message >= deadline || ingest.full() {
                    return Ok(Poll::Busy);
                }
            }
        }
    }

    fn clock(&self, lateness_ms: i64, as_of: Option<i64>) -> InputClock {
        let parts = self.parts.iter().map(|p| PartClock {
            clock: &p.clock,
            idle: self.health(p) == Health::Idle,
            finished: false,
        });
        worker_clock(parts, lateness_ms, as_of)
    }

    fn assignment(&self) -> Vec<String> {
        self.parts.iter().map(Part::name).collect()
    }

    /// Read up to the high watermark seen at start and to the latest one fetch responses carried
    /// (some brokers, tansu among them, under-report the first after multi-record batches).
    fn caught_up(&self) -> bool {
        self.parts.iter().all(|p| {
            let latest = cached_high_watermark(&self.consumer, &p.topic, p.partition).unwrap_or(0);
            p.next_offset.is_some_and(|o| o >= p.start_high.max(latest))
        })
    }

    fn checkpoint(&self) -> Checkpoint {
        let partitions = self
            .parts
            .iter()
            .filter_map(|p| p.next_offset.map(|o| (p.name(), (p.clock.clone(), o))))
            .collect::<BTreeMap<_, _>>();
        Checkpoint { partitions }
    }

    fn resumable(&self) -> bool {
        true
    }

    fn restore(&mut self, checkpoint: Checkpoint) -> Result<(), SourceError> {
        for part in &mut self.parts {
            if let Some((clock, offset)) = checkpoint.partitions.get(&part.name()) {
                part.clock = clock.clone();
                part.next_offset = Some(*offset);
            }
        }
        Ok(())
    }

    fn commit(&mut self, checkpoint: &Checkpoint) {
        let mut tpl = TopicPartitionList::new();
        for part in &self.parts {
            if let Some((_, offset)) = checkpoint.partitions.get(&part.name()) {
                let _ = tpl.add_partition_offset(&part.topic, part.partition, Offset::Offset(*offset));
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(error = %e, "offset commit failed; it is retried with the next snapshot");
            }
        }
    }

    fn report(&self, status: &Status) {
        for part in &self.parts {
            let (_, high) = self.end(part);
            let position = part.next_offset.unwrap_or(0);
            let problem = self.health(part).problem(&part.name());
            let progress = PartitionProgress {
                position,
                high_watermark: high.filter(|h| *h >= 0),
                problem,
                restarts: part.restarts,
            };
            status.set_partition(part.name(), progress);
        }
    }
}

/// The high watermark librdkafka last saw in a fetch response, without a broker round trip (the
/// safe wrapper only offers the blocking `fetch_watermarks`).
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the out-pointers are locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}
