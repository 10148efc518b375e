//! `GET /api/v1/stream`: server-sent events, one `live` event per publish, a `counts` event
//! with the count cells that publish changed, `sessions` / `funnels` / `retention` events with
//! their headline numbers when one of them changed, and `paths` with the heaviest edges when an
//! edge count changed, and `alert` when an alert fired or resolved. A client too slow to keep up gets `lagged` and
//! should re-read `/api/v1/live`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::{ApiError, AppState};

#[derive(Deserialize, Default)]
pub struct StreamQuery {
    /// Comma-separated: `live`, `counts`, `sessions`, `funnels`, `retention`, `paths`, `alerts`
    /// (default all).
    views: Option<String>,
}

const VIEWS: [&str; 7] = ["live", "counts", "sessions", "funnels", "retention", "paths", "alerts"];

pub async fn stream(
    State(s): State<AppState>,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let wanted = q.views.unwrap_or_else(|| VIEWS.join(","));
    if let Some(unknown) = wanted.split(',').find(|v| !VIEWS.contains(v)) {
        return Err(ApiError::bad_request(format!(
            "unknown view `{unknown}` in `views`; use any of: {}",
            VIEWS.join(", ")
        )));
    }
    let wants = |view: &str| wanted.split(',').any(|v| v == view);
    let (live, counts, sessions, funnels) = (wants("live"), wants("counts"), wants("sessions"), wants("funnels"));
    let (retention, paths, alerts) = (wants("retention"), wants("paths"), wants("alerts"));
    let first = Event::default().event("live").json_data(s.read_model.live()).ok();
    let changes = BroadcastStream::new(s.read_model.subscribe()).flat_map(move |item| {
        let events: Vec<Event> = match item {
            Ok(change) => {
                let mut out = Vec::new();
                if live {
                    out.extend(Event::default().event("live").json_data(&change.live).ok());
                }
                if counts && !change.counts.is_empty() {
                    let body = serde_json::json!({"epoch": change.clock.epoch, "as_of_ms": change.clock.as_of_ms, "counts": change.counts});
                    out.extend(Event::default().event("counts").json_data(body).ok());
                }
                if let Some(summary) = change.sessions.as_ref().filter(|_| sessions) {
                    let body = serde_json::json!({"epoch": change.clock.epoch, "as_of_ms": change.clock.as_of_ms, "summary": summary});
                    out.extend(Event::default().event("sessions").json_data(body).ok());
                }
                if let Some(list) = change.funnels.as_ref().filter(|_| funnels) {
                    out.extend(Event::default().event("funnels").json_data(list).ok());
                }
                if let Some(list) = change.retention.as_ref().filter(|_| retention) {
                    out.extend(Event::default().event("retention").json_data(list).ok());
                }
                if let Some(top) = change.paths.as_ref().filter(|_| paths) {
                    let body = serde_json::json!({"epoch": change.clock.epoch, "as_of_ms": change.clock.as_of_ms, "heaviest_edges": top});
                    out.extend(Event::default().event("paths").json_data(body).ok());
                }
                if alerts {
                    // One event per alert change: `action` is `firing` or `resolved`, with the alert.
                    out.extend(change.alerts.iter().filter_map(|c| Event::default().event("alert").json_data(c).ok()));
                }
                out
            }
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                vec![Event::default().event("lagged").data(format!("{n} changes skipped; re-read /api/v1/live"))]
            }
        };
        stream::iter(events.into_iter().map(Ok))
    });
    let initial = stream::iter(first.filter(|_| live).into_iter().map(Ok));
    Ok(Sse::new(initial.chain(changes)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
