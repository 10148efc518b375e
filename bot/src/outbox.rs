//! The last posts the bot made or would have made (dry run), for `GET /api/v1/bot/outbox`.

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub at_ms: i64,
    /// `chat.postMessage` or `chat.update`.
    pub method: &'static str,
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    /// `sent`, `dry_run`, `retrying: why` or `failed: why`.
    pub status: String,
    pub text: String,
    pub blocks: serde_json::Value,
}

pub struct Outbox {
    entries: Mutex<VecDeque<Entry>>,
    capacity: usize,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox { entries: Mutex::new(VecDeque::new()), capacity: capacity.max(1) }
    }

    pub fn record(&self, entry: Entry) {
        let mut entries = self.entries.lock();
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().iter().cloned().collect()
    }
}
