//! `GET /api/v1/stream`: server-sent events of what changed. Per batch: `live` (the live numbers),
//! `counts` (every per-minute count cell that changed, at its newest value), `sessions` /
//! `funnels` / `retention` (their headline numbers) and `paths` (the heaviest edges) when they
//! changed, and one `alert` per alert that fired or resolved.
//!
//! The engine publishes up to ten times a second; a dashboard needs far less. Changes are
//! **coalesced**: the first change after a quiet spell goes out at once, then at most one batch per
//! `coalesce_ms` (1000 by default), each cell and view at its newest value, alert changes all
//! kept. The last event of a batch carries `id:` (the epoch of the newest publish it includes); a
//! client that reconnects with `Last-Event-ID` (browsers' `EventSource` does) gets what it missed
//! in one batch, or `reset` if those changes are no longer kept (about a minute), and re-reads.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream};
use read::model::AlertChange;
use read::read_model::Change;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use crate::{ApiError, AppState};

#[derive(Deserialize, Default)]
pub struct StreamQuery {
    /// Comma-separated: `live`, `counts`, `sessions`, `funnels`, `retention`, `paths`, `alerts`
    /// (default all).
    views: Option<String>,
    /// Least milliseconds between two batches (default 1000; 0 sends every publish).
    coalesce_ms: Option<u64>,
}

const VIEWS: [&str; 7] = ["live", "counts", "sessions", "funnels", "retention", "paths", "alerts"];
const DEFAULT_COALESCE_MS: u64 = 1000;
const MAX_COALESCE_MS: u64 = 60_000;

pub async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let wanted = q.views.unwrap_or_else(|| VIEWS.join(","));
    if let Some(unknown) = wanted.split(',').find(|v| !VIEWS.contains(v)) {
        return Err(ApiError::bad_request(format!(
            "unknown view `{unknown}` in `views`; use any of: {}",
            VIEWS.join(", ")
        )));
    }
    let coalesce_ms = q.coalesce_ms.unwrap_or(DEFAULT_COALESCE_MS);
    if coalesce_ms > MAX_COALESCE_MS {
        return Err(ApiError::bad_request(format!("`coalesce_ms` is at most {MAX_COALESCE_MS}, got {coalesce_ms}")));
    }
    let wants = Wants(VIEWS.map(|view| wanted.split(',').any(|v| v == view)));
    // Subscribed before the state is read: nothing published in between is missed (what the
    // state already holds is skipped by its epoch).
    let rx = s.read_model.subscribe();
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let mut queue = VecDeque::new();
    let seen = match resume.map(|epoch| (epoch, s.read_model.changes_after(epoch))) {
        Some((epoch, Some(missed))) => {
            let mut batch = Batch::default();
            missed.iter().for_each(|c| batch.add(c));
            let seen = batch.epoch.unwrap_or(epoch);
            queue.extend(batch.events(&wants));
            seen
        }
        gone => {
            if gone.is_some() {
                let note = "the changes since your Last-Event-ID are no longer kept; re-read the views";
                queue.push_back(Event::default().event("reset").data(note));
            }
            let epoch = s.read_model.clock().epoch;
            queue.push_back(initial(&s, &wants, epoch));
            epoch
        }
    };
    let feed = Feed { rx, wants, every: Duration::from_millis(coalesce_ms), last_batch: None, seen, queue };
    Ok(Sse::new(stream::unfold(feed, Feed::next)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The state a client starts from, with its epoch as the id: the live numbers if it wants them,
/// an id alone otherwise.
fn initial(s: &AppState, wants: &Wants, epoch: u64) -> Event {
    let live = wants.live().then(|| Event::default().event("live").json_data(s.read_model.live()).ok()).flatten();
    live.unwrap_or_else(|| Event::default().comment("state")).id(epoch.to_string())
}

/// Which views a client asked for, in the order of [`VIEWS`].
struct Wants([bool; 7]);

impl Wants {
    fn live(&self) -> bool {
        self.0[0]
    }
}

/// One client's stream: the engine's changes, batched.
struct Feed {
    rx: broadcast::Receiver<Arc<Change>>,
    wants: Wants,
    every: Duration,
    last_batch: Option<Instant>,
    /// The newest epoch already sent (or in the state the client started from).
    seen: u64,
    queue: VecDeque<Event>,
}

impl Feed {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Feed)> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some((Ok(event), self));
            }
            let mut batch = Batch::default();
            // The first new change, however long it takes.
            while batch.is_empty() {
                let received = self.rx.recv().await;
                if !self.take(received, &mut batch) {
                    return None;
                }
            }
            // Then all that comes until this batch is due.
            let due = self.last_batch.map_or_else(Instant::now, |last| last + self.every);
            let mut open = true;
            while open && Instant::now() < due {
                match tokio::time::timeout_at(due, self.rx.recv()).await {
                    Ok(received) => open = self.take(received, &mut batch),
                    Err(_) => break,
                }
            }
            // And whatever is already there.
            while open {
                match self.rx.try_recv() {
                    Ok(change) => open = self.take(Ok(change), &mut batch),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        open = self.take(Err(RecvError::Lagged(n)), &mut batch)
                    }
                    Err(_) => break,
                }
            }
            self.last_batch = Some(Instant::now());
            self.queue.extend(batch.events(&self.wants));
            if !open && self.queue.is_empty() {
                return None;
            }
        }
    }

    /// Adds a received change to `batch`; false once the engine has stopped publishing.
    fn take(&mut self, received: Result<Arc<Change>, RecvError>, batch: &mut Batch) -> bool {
        match received {
            Ok(change) if change.clock.epoch > self.seen => {
                self.seen = change.clock.epoch;
                batch.add(&change);
                true
            }
            Ok(_) => true,
            Err(RecvError::Lagged(n)) => {
                batch.lagged += n;
                true
            }
            Err(RecvError::Closed) => false,
        }
    }
}

/// The changes of several publishes as one: each view and count cell at its newest value, every
/// alert change kept.
#[derive(Default)]
struct Batch {
    epoch: Option<u64>,
    newest: Option<Arc<Change>>,
    counts: BTreeMap<(&'static str, String, i64), i64>,
    sessions: Option<Arc<Change>>,
    funnels: Option<Arc<Change>>,
    retention: Option<Arc<Change>>,
    paths: Option<Arc<Change>>,
    alerts: Vec<AlertChange>,
    /// Changes the client fell behind on (it should re-read).
    lagged: u64,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.newest.is_none() && self.lagged == 0
    }

    fn add(&mut self, change: &Arc<Change>) {
        self.epoch = Some(change.clock.epoch);
        for c in &change.counts {
            self.counts.insert((c.dim, c.key.clone(), c.minute_ms), c.count);
        }
        let newest = Some(change.clone());
        if change.sessions.is_some() {
            self.sessions = newest.clone();
        }
        if change.funnels.is_some() {
            self.funnels = newest.clone();
        }
        if change.retention.is_some() {
            self.retention = newest.clone();
        }
        if change.paths.is_some() {
            self.paths = newest.clone();
        }
        self.alerts.extend(change.alerts.iter().cloned());
        self.newest = newest;
    }

    /// The events of the views `wants` asks for; the last carries the batch's newest epoch as
    /// its id, so a client that reconnects mid-batch is sent the whole batch again (at least
    /// once: alert changes are deduplicated by `id` and `started_ms`).
    fn events(self, wants: &Wants) -> Vec<Event> {
        let id = self.epoch.map(|e| e.to_string());
        let mut out = self.untagged(wants);
        if let (Some(last), Some(id)) = (out.pop(), id) {
            out.push(last.id(id));
        }
        out
    }

    fn untagged(self, wants: &Wants) -> Vec<Event> {
        let event = |name: &str| Event::default().event(name);
        let mut out = Vec::new();
        if self.lagged > 0 {
            out.push(event("lagged").data(format!("{} changes skipped; re-read /api/v1/live", self.lagged)));
        }
        let Some(newest) = self.newest else { return out };
        let clock = |c: &Change| serde_json::json!({"epoch": c.clock.epoch, "as_of_ms": c.clock.as_of_ms});
        let [live, counts, sessions, funnels, retention, paths, alerts] = wants.0;
        if live {
            out.extend(event("live").json_data(&newest.live).ok());
        }
        if counts && !self.counts.is_empty() {
            let cells: Vec<serde_json::Value> = self
                .counts
                .into_iter()
                .map(|((dim, key, minute_ms), count)| serde_json::json!({"dim": dim, "key": key, "minute_ms": minute_ms, "count": count}))
                .collect();
            let mut body = clock(&newest);
            body["counts"] = cells.into();
            out.extend(event("counts").json_data(body).ok());
        }
        if let Some(c) = self.sessions.filter(|_| sessions) {
            let mut body = clock(&c);
            body["summary"] = serde_json::to_value(&c.sessions).unwrap_or_default();
            out.extend(event("sessions").json_data(body).ok());
        }
        if let Some(c) = self.funnels.filter(|_| funnels) {
            out.extend(event("funnels").json_data(&c.funnels).ok());
        }
        if let Some(c) = self.retention.filter(|_| retention) {
            out.extend(event("retention").json_data(&c.retention).ok());
        }
        if let Some(c) = self.paths.filter(|_| paths) {
            let mut body = clock(&c);
            body["heaviest_edges"] = serde_json::to_value(&c.paths).unwrap_or_default();
            out.extend(event("paths").json_data(body).ok());
        }
        if alerts {
            // One event per alert change: `action` is `firing` or `resolved`, with the alert.
            out.extend(self.alerts.iter().filter_map(|c| event("alert").json_data(c).ok()));
        }
        out
    }
}
