//! A local stand-in for the Slack Web API (what bolt and java-slack-sdk test against): it records
//! every accepted call, answers like Slack, and can be told to fail the next calls with 429
//! (`Retry-After`) or 5xx. It also takes `response_url` posts.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub channel: String,
    /// `thread_ts` of a post, or the `ts` an update rewrites.
    pub thread_ts: Option<String>,
    /// The `ts` a post was given, or the one an update targeted.
    pub ts: String,
    pub text: String,
    pub body: serde_json::Value,
    pub at: std::time::Instant,
}

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    RateLimited {
        retry_after_s: u64,
    },
    ServerError,
    /// `{"ok": false, "error": code}` with HTTP 200, as Slack reports e.g. `channel_not_found`.
    ApiError(&'static str),
    /// Never answers (a half-open connection).
    Hang,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    faults: VecDeque<Fault>,
    refused: usize,
    next_ts: u64,
    responses: Vec<(String, serde_json::Value)>,
    unauthorized: usize,
    /// What `apps.connections.open` hands out (Socket Mode).
    socket_url: Option<String>,
    /// Channel ids handed out, by name (Slack answers posts with the id; `chat.update` takes only ids).
    ids: std::collections::BTreeMap<String, String>,
}

fn channel_id(name: &str) -> String {
    format!("C{:08X}", name.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)))
}

#[derive(Clone)]
pub struct FakeSlack {
    /// Base URL to give the bot (`api_url`).
    pub api_url: String,
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeSlack {
    /// Serves on 127.0.0.1:0 from its own thread (works from sync and async tests alike).
    pub fn start() -> FakeSlack {
        let inner = Arc::new(Mutex::new(Inner { next_ts: 1, ..Inner::default() }));
        let (tx, rx) = std::sync::mpsc::channel();
        let state = inner.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new()
                    .route("/api/{method}", post(api))
                    .route("/response/{id}", post(response))
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        FakeSlack { api_url: format!("http://{addr}/api"), base: format!("http://{addr}"), inner }
    }

    /// The next calls fail like this, in order, before Slack answers normally again.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend(faults.iter().copied());
    }

    /// Socket Mode: `apps.connections.open` (with the app token) answers this WebSocket URL.
    pub fn set_socket_url(&self, url: &str) {
        self.inner.lock().unwrap().socket_url = Some(url.to_string());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Calls answered with a fault.
    pub fn refused(&self) -> usize {
        self.inner.lock().unwrap().refused
    }

    pub fn unauthorized(&self) -> usize {
        self.inner.lock().unwrap().unauthorized
    }

    pub fn responses(&self) -> Vec<(String, serde_json::Value)> {
        self.inner.lock().unwrap().responses.clone()
    }

    /// Waits (polling) until `done` holds for the calls, for at most `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, done: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let calls = self.calls();
            if done(&calls) {
                return calls;
            }
            if std::time::Instant::now() > deadline {
                let seen: Vec<String> =
                    calls.iter().map(|c| format!("{} {} {:?}", c.method, c.channel, c.text)).collect();
                panic!("fake Slack: timed out waiting for {what}; calls so far: {seen:#?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

async fn api(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let hang = {
        let mut inner = inner.lock().unwrap();
        let hang = matches!(inner.faults.front(), Some(Fault::Hang)) && method != "apps.connections.open";
        if hang {
            inner.faults.pop_front();
            inner.refused += 1;
        }
        hang
    };
    if hang {
        std::future::pending::<()>().await;
    }
    answer(&inner, method, headers, body)
}

fn answer(inner: &Mutex<Inner>, method: String, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let mut inner = inner.lock().unwrap();
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if method == "apps.connections.open" {
        return match (&inner.socket_url, bearer == "Bearer xapp-test") {
            (Some(url), true) => Json(serde_json::json!({"ok": true, "url": url})).into_response(),
            _ => Json(serde_json::json!({"ok": false, "error": "invalid_auth"})).into_response(),
        };
    }
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let authorized =
        headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "Bearer xoxb-test");
    if !authorized {
        inner.unauthorized += 1;
        return Json(serde_json::json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    if let Some(fault) = inner.faults.pop_front() {
        inner.refused += 1;

        return match fault {
            Fault::RateLimited { retry_after_s } => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after_s.to_string())],
                Json(serde_json::json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response(),
            Fault::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "upstream failure").into_response(),
            Fault::ApiError(code) => Json(serde_json::json!({"ok": false, "error": code})).into_response(),
            Fault::Hang => unreachable!(),
        };
    }
    let given = body["channel"].as_str().unwrap_or_default().to_string();
    let text = body["text"].as_str().unwrap_or_default().to_string();
    // Calls are recorded under the channel's name, whichever form the bot used.
    let by_id = inner.ids.iter().find(|(_, id)| **id == given).map(|(name, _)| name.clone());
    let channel = by_id.clone().unwrap_or_else(|| given.clone());
    match method.as_str() {
        "chat.postMessage" => {
            let id = channel_id(&channel);
            inner.ids.insert(channel.clone(), id.clone());
            let ts = format!("1700000000.{:06}", inner.next_ts);
            inner.next_ts += 1;
            let thread_ts = body["thread_ts"].as_str().map(str::to_string);
            inner.calls.push(Call {
                method,
                channel: channel.clone(),
                thread_ts,
                ts: ts.clone(),
                text: text.clone(),
                body,
                at: std::time::Instant::now(),
            });
            Json(serde_json::json!({"ok": true, "channel": id, "ts": ts, "message": {"ts": ts, "text": text}}))
                .into_response()
        }
        // As Slack: a channel name is `channel_not_found` here.
        "chat.update" if by_id.is_none() => {
            inner.refused += 1;
            Json(serde_json::json!({"ok": false, "error": "channel_not_found"})).into_response()
        }
        "chat.update" => {
            let ts = body["ts"].as_str().unwrap_or_default().to_string();
            inner.calls.push(Call {
                method,
                channel: channel.clone(),
                thread_ts: None,
                ts: ts.clone(),
                text: text.clone(),
                body,
                at: std::time::Instant::now(),
            });
            Json(serde_json::json!({"ok": true, "channel": given, "ts": ts, "text": text, "message": {"text": text}}))
                .into_response()
        }
        _ => Json(serde_json::json!({"ok": false, "error": "unknown_method"})).into_response(),
    }
}

async fn response(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> StatusCode {
    inner.lock().unwrap().responses.push((id, body));
    StatusCode::OK
}
