//! Where a Kafka partition starts: from `kafka.start` without a snapshot, or from the
//! snapshot's offset once it is known to be still readable.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaSource, METADATA_TIMEOUT};
use crate::source::SourceError;

impl KafkaSource {
    /// Start offset of a partition without a checkpoint, from `kafka.start`, as an explicit offset
    /// so that every partition has a position to checkpoint from the first snapshot on.
    pub(super) fn start_offset(&self, topic: &str, partition: i32) -> Result<i64, SourceError> {
        let kafka = |what: &str, e: rdkafka::error::KafkaError| {
            SourceError::Kafka(format!("{what} of {topic}/{partition}: {e}"))
        };
        let (low, high) =
            self.consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT).map_err(|e| kafka("watermarks", e))?;
        let mut tpl = TopicPartitionList::new();
        let found = match self.config.start.as_str() {
            "earliest" => return Ok(low),
            "latest" => return Ok(high),
            "committed" => {
                tpl.add_partition(topic, partition);
                self.consumer.committed_offsets(tpl, METADATA_TIMEOUT).map_err(|e| kafka("committed offset", e))?
            }
            time => {
                let ts = chrono::DateTime::parse_from_rfc3339(time)
                    .map_err(|_| {
                        SourceError::Config(format!(
                            "kafka.start must be earliest, latest, committed or an RFC 3339 time, got `{time}`"
                        ))
                    })?
                    .timestamp_millis();
                tpl.add_partition_offset(topic, partition, Offset::Offset(ts)).map_err(|e| kafka("offsets", e))?;
                self.consumer.offsets_for_times(tpl, METADATA_TIMEOUT).map_err(|e| kafka("offsets for times", e))?
            }
        };
        Ok(match found.find_partition(topic, partition).map(|p| p.offset()) {
            Some(Offset::Offset(o)) => o.clamp(low, high),
            // No committed offset: from the beginning; no record at or after the time: the end.
            _ if self.config.start == "committed" => low,
            _ => high,
        })
    }

    /// A snapshot's offset must still be readable: if retention deleted records after it, resuming
    /// would silently skip them, so refuse and say how to rebuild instead. A broker that says the
    /// partition ends before the snapshot's offset may only be answering a stale end (tansu
    /// under-reports after batches): the record just before the offset tells which it is.
    pub(super) fn check_resumable(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, SourceError> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(|e| SourceError::Kafka(format!("watermarks of {topic}/{partition}: {e}")))?;
        if offset < low {
            return Err(SourceError::Config(format!(
                "the snapshot resumes {topic}/{partition} at offset {offset}, but the partition now starts at {low}: \
                 retention deleted records the views have not read; run with --fresh to rebuild the views from \
                 kafka.start (and keep the topic's retention longer than an outage can last)"
            )));
        }
        if offset <= high {
            return Ok(offset);
        }
        // An empty partition (its end is its start) cannot be a stale answer about records.
        if high > low && self.record_readable(topic, partition, offset - 1)? {
            tracing::warn!(
                partition = %format!("{topic}/{partition}"), offset, reported_end = high,
                "the broker reports an end before the snapshot's offset, but the records are there; resuming"
            );
            return Ok(offset);
        }
        Err(SourceError::Config(format!(
            "the snapshot resumes {topic}/{partition} at offset {offset}, but the partition now ends at {high} and \
             offset {} cannot be read: the topic lost records the views already counted (deleted and re-created, or a \
             broker restarted on empty storage), or kafka.brokers points at another cluster. Check kafka.brokers and \
             kafka.topics; if the topic really starts over, run with --fresh to rebuild the views from kafka.start",
            offset - 1
        )))
    }

    /// Whether the broker delivers the record at `offset` (or a later one: compaction).
    fn record_readable(&self, topic: &str, partition: i32, offset: i64) -> Result<bool, SourceError> {
        let reader = crate::kafka::consumer(&self.config, None)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|e| SourceError::Kafka(e.to_string()))?;
        reader.assign(&tpl).map_err(|e| SourceError::Kafka(format!("cannot assign {topic}/{partition}: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
                if m.topic() == topic && m.partition() == partition && m.offset() >= offset {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}
