//! Where rejected inputs go: kept with their reason and source coordinates, never dropped silently.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde::Serialize;

use crate::reject::Rejection;

/// Where an input came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Coords<'a> {
    Kafka { topic: &'a str, partition: i32, offset: i64 },
    File { file: &'a str, line: u64 },
    Generator { worker: u32, seq: u64 },
}

#[derive(Serialize)]
pub struct DeadLetter<'a> {
    pub reason: &'static str,
    pub detail: &'a str,
    pub source: &'a Coords<'a>,
    /// The input as text (invalid UTF-8 replaced), cut at 4 KiB.
    pub payload: &'a str,
    pub at_ms: i64,
}

const PAYLOAD_KEPT: usize = 4096;

pub trait DeadLetterSink: Send {
    fn put(&mut self, letter: &DeadLetter<'_>);
    fn flush(&mut self) {}
}

/// Renders the payload part of a dead letter.
pub fn payload_text(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(PAYLOAD_KEPT)];
    String::from_utf8_lossy(cut).into_owned()
}

pub fn letter<'a>(rejection: &'a Rejection, source: &'a Coords<'a>, payload: &'a str, at_ms: i64) -> DeadLetter<'a> {
    DeadLetter { reason: rejection.reason.as_str(), detail: &rejection.detail, source, payload, at_ms }
}

/// NDJSON file shared by all workers (rejects are rare; one lock per letter is fine).
#[derive(Clone)]
pub struct FileSink(Arc<Mutex<BufWriter<File>>>);

impl FileSink {
    pub fn create(path: &Path) -> std::io::Result<FileSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(FileSink(Arc::new(Mutex::new(BufWriter::new(file)))))
    }
}

impl DeadLetterSink for FileSink {
    fn put(&mut self, letter: &DeadLetter<'_>) {
        let mut out = self.0.lock();
        if serde_json::to_writer(&mut *out, letter).is_ok() {
            let _ = out.write_all(b"\n");
        }
    }
    fn flush(&mut self) {
        if let Err(e) = self.0.lock().flush() {
            tracing::warn!(error = %e, "could not flush the dead-letter file");
        }
    }
}

/// A Kafka topic; the key is the reason so a consumer can filter without parsing.
#[derive(Clone)]
pub struct KafkaSink {
    producer: Arc<ThreadedProducer<DefaultProducerContext>>,
    topic: Arc<str>,
}

impl KafkaSink {
    pub fn new(producer: ThreadedProducer<DefaultProducerContext>, topic: &str) -> KafkaSink {
        KafkaSink { producer: Arc::new(producer), topic: topic.into() }
    }
}

impl DeadLetterSink for KafkaSink {
    fn put(&mut self, letter: &DeadLetter<'_>) {
        let Ok(body) = serde_json::to_vec(letter) else {
            return;
        };
        let record = BaseRecord::to(&self.topic).key(letter.reason).payload(&body);
        if let Err((e, _)) = self.producer.send(record) {
            // The queue is full or the broker refused: log with the letter, so it is still kept.
            tracing::error!(error = %e, letter = %String::from_utf8_lossy(&body), "dead letter not produced");
        }
    }
    fn flush(&mut self) {
        // The producer's own thread delivers; never stall a worker on an unreachable broker.
        let _ = self.producer.flush(std::time::Duration::ZERO);
    }
}

/// Keeps letters in memory (tests, bench).
#[derive(Clone, Default)]
pub struct MemorySink(pub Arc<Mutex<Vec<serde_json::Value>>>);

impl DeadLetterSink for MemorySink {
    fn put(&mut self, letter: &DeadLetter<'_>) {
        if let Ok(v) = serde_json::to_value(letter) {
            self.0.lock().push(v);
        }
    }
}

/// Counts only (the counts are in the views either way).
pub struct Discard;

impl DeadLetterSink for Discard {
    fn put(&mut self, _: &DeadLetter<'_>) {}
}
