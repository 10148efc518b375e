//! The event collector: `POST /v1/collect` takes one event or a JSON array (optionally gzip),
//! validates each with the engine's own decoder, stamps `received_at` and the client's `ip`, and
//! writes them to Kafka keyed by `user_id` (acks=all, idempotent). It answers 2xx only once Kafka
//! acknowledged every accepted event; when Kafka is slow or down it answers 503 with
//! `Retry-After` instead of buffering without bound.

mod client;
pub mod config;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

pub use config::CollectorConfig;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Kafka(#[from] dataflow::source::SourceError),
}

/// Counters for `/metrics` and the logs.
#[derive(Default, Debug)]
pub struct Counters {
    pub requests: AtomicU64,
    pub accepted: AtomicU64,
    pub invalid: AtomicU64,
    /// Requests answered 503 (Kafka slow, down, or too much in flight).
    pub unavailable: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Producers replaced after a fatal error or repeated failures (e.g. fenced after a broker
    /// restart).
    pub producer_rebuilds: AtomicU64,
}

pub struct Collector {
    config: CollectorConfig,
    /// Replaced when librdkafka reports a fatal error: such a producer refuses every record for
    /// the rest of its life.
    producer: parking_lot::RwLock<FutureProducer>,
    kafka: dataflow::KafkaConfig,
    topic: String,
    write_key: Option<String>,
    proxies: client::Proxies,
    limiter: client::RateLimiter,
    in_flight: Semaphore,
    /// Until this wall-clock ms, Kafka is taken as down and requests are refused at once.
    unhealthy_until: AtomicI64,
    /// Requests that Kafka did not acknowledge, since the last one it did.
    failed_in_a_row: std::sync::atomic::AtomicU32,
    /// The engine's `as_of`, when it runs in this process: older events are refused here, as the
    /// engine would refuse them (`too_late`), instead of being acknowledged and then dropped.
    counted_from: std::sync::OnceLock<Box<dyn Fn() -> Option<i64> + Send + Sync>>,
    pub counters: Counters,
}

impl Collector {
    pub fn new(
        config: CollectorConfig,
        kafka: &dataflow::KafkaConfig,
        write_key: Option<String>,
    ) -> Result<Arc<Collector>, CollectorError> {
        config.validate().map_err(CollectorError::Config)?;
        let topic = config.topic.clone().or_else(|| kafka.topics.first().cloned()).ok_or_else(|| {
            CollectorError::Config("[collector] no topic: set collector.topic or kafka.topics".into())
        })?;
        let producer = dataflow::kafka::collector_producer(kafka, config.ack_timeout_ms)?;
        Ok(Arc::new(Collector {
            proxies: client::Proxies::parse(&config.trusted_proxies).map_err(CollectorError::Config)?,
            limiter: client::RateLimiter::new(config.rate_per_second, config.rate_burst),
            in_flight: Semaphore::new(config.max_in_flight),
            unhealthy_until: AtomicI64::new(0),
            failed_in_a_row: Default::default(),
            counted_from: std::sync::OnceLock::new(),
            counters: Counters::default(),
            write_key: write_key.filter(|k| !k.is_empty()),
            producer: parking_lot::RwLock::new(producer),
            kafka: kafka.clone(),
            topic,
            config,
        }))
    }

    /// A producer that hit a fatal error (librdkafka: fenced, or an idempotence sequence it cannot
    /// repair, as after a broker restarted on lost storage) is replaced by a new one; records it
    /// failed were never acknowledged (their requests got 503), so nothing is lost or doubled.
    ///
    /// A producer whose requests keep failing is replaced too: after a broker restart tansu
    /// fences the idempotent producers it knew, and librdkafka retries into the fence without
    /// raising a fatal error (seen: 503 for every request until the process restarted).
    fn producer(&self) -> FutureProducer {
        let current = self.producer.read().clone();
        let failing = self.failed_in_a_row.load(Ordering::Relaxed) >= 2;
        let fatal = current.client().fatal_error();
        if fatal.is_none() && !failing {
            return current;
        }
        let mut slot = self.producer.write();
        if slot.client().fatal_error().is_none() && self.failed_in_a_row.load(Ordering::Relaxed) < 2 {
            return slot.clone(); // replaced by a concurrent request
        }
        match dataflow::kafka::collector_producer(&self.kafka, self.config.ack_timeout_ms) {
            Ok(fresh) => {
                let why = fatal.map_or("requests failed twice in a row".to_string(), |(code, reason)| {
                    format!("fatal error {code:?}: {reason}")
                });
                tracing::warn!(%why, "the collector's Kafka producer was replaced");
                self.failed_in_a_row.store(0, Ordering::Relaxed);
                self.counters.producer_rebuilds.fetch_add(1, Ordering::Relaxed);
                *slot = fresh;
            }
            Err(e) => {
                tracing::error!(error = %e, "the collector's Kafka producer hit a fatal error and cannot be replaced")
            }
        }
        slot.clone()
    }

    /// Makes the producer fail as librdkafka does on a fatal error (tests of the recovery).
    #[doc(hidden)]
    pub fn inject_fatal_error(&self, reason: &str) {
        let reason = std::ffi::CString::new(reason).expect("no NUL in a reason");
        let producer = self.producer.read().clone();
        // SAFETY: the client pointer is valid while `producer` lives; the reason is a C string.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
                reason.as_ptr(),
            );
        }
    }

    /// Tells the collector where the engine beside it counts from (its `as_of`), so that an event
    /// the engine would reject as too late is refused in the answer rather than acknowledged.
    pub fn count_from(&self, as_of: impl Fn() -> Option<i64> + Send + Sync + 'static) {
        let _ = self.counted_from.set(Box::new(as_of));
    }

    pub fn config(&self) -> &CollectorConfig {
        &self.config
    }

    /// The collector's counters in the Prometheus text format.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let c = &self.counters;
        let counters = [
            ("requests", "Requests to POST /v1/collect.", &c.requests),
            ("events_accepted", "Events written to Kafka and acknowledged.", &c.accepted),
            ("events_invalid", "Events refused by validation (reported per index).", &c.invalid),
            ("unavailable", "Requests answered 503: Kafka slow or down, or too much in flight.", &c.unavailable),
            ("rate_limited", "Requests answered 429.", &c.rate_limited),
            (
                "producer_rebuilds",
                "Kafka producers replaced after a fatal error or repeated failures.",
                &c.producer_rebuilds,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP clickflow_collector_{name}_total {help}\n# TYPE clickflow_collector_{name}_total counter\nclickflow_collector_{name}_total {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

/// `POST /v1/collect` with CORS for browser senders.
pub fn router(collector: Arc<Collector>) -> Router {
    let cors = cors(&collector.config.cors_origins);
    Router::new().route("/v1/collect", post(collect)).layer(cors).with_state(collector)
}

fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::CONTENT_ENCODING, header::AUTHORIZATION])
        .max_age(Duration::from_secs(3600))
}

#[derive(Serialize)]
struct Invalid {
    index: usize,
    reason: &'static str,
    detail: String,
}

#[derive(Serialize)]
struct Answer {
    accepted: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rejected: Vec<Invalid>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

fn retry_later(collector: &Collector, message: impl Into<String>) -> Response {
    collector.counters.unavailable.fetch_add(1, Ordering::Relaxed);
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(collector.config.retry_after_seconds));
    response
}

#[derive(Deserialize)]
struct KeyQuery {
    /// The write key as a query parameter (`navigator.sendBeacon` cannot set headers).
    key: Option<String>,
}

async fn collect(
    State(c): State<Arc<Collector>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<KeyQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    c.counters.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(key) = &c.write_key {
        let bearer =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if bearer.or(q.key.as_deref()) != Some(key.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong write key: send `Authorization: Bearer <key>` or `?key=<key>`",
            );
        }
    }
    let client_ip = c.proxies.client(peer.ip(), &headers);
    if !c.limiter.allow(client_ip, Instant::now()) {
        c.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("over {} requests per second from {client_ip}", c.config.rate_per_second),
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(c.config.retry_after_seconds));
        return r;
    }
    let bytes = match read_body(&headers, body, c.config.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let items: Vec<&RawValue> = match first_byte(&bytes) {
        Some(b'[') => match serde_json::from_slice(&bytes) {
            Ok(items) => items,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body is not a JSON array of events: {e}")),
        },
        _ => match serde_json::from_slice(&bytes) {
            Ok(item) => vec![item],
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body is not a JSON event or array: {e}")),
        },
    };
    if items.len() > c.config.max_events_per_request {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} events; send at most {} per request", items.len(), c.config.max_events_per_request),
        );
    }
    let now = schema::time::now_ms();
    let floor = c.counted_from.get().and_then(|as_of| as_of());
    let (valid, rejected) = validate(&items, now, &client_ip.to_string(), floor);
    c.counters.invalid.fetch_add(rejected.len() as u64, Ordering::Relaxed);
    if valid.is_empty() {
        let status = if rejected.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        return (status, Json(Answer { accepted: 0, rejected })).into_response();
    }
    if c.unhealthy_until.load(Ordering::Relaxed) > now {
        return retry_later(&c, "Kafka did not acknowledge recent events; not accepting any until it does");
    }
    let Ok(_permit) = c.in_flight.try_acquire_many(valid.len() as u32) else {
        return retry_later(&c, "too many events waiting for Kafka's acknowledgement; retry shortly");
    };
    match produce(&c, &valid).await {
        Ok(()) => {
            c.failed_in_a_row.store(0, Ordering::Relaxed);
            c.counters.accepted.fetch_add(valid.len() as u64, Ordering::Relaxed);
            Json(Answer { accepted: valid.len(), rejected }).into_response()
        }
        Err(problem) => {
            // A short circuit: the next requests are refused at once instead of each waiting
            // out the timeout; the first after it tries Kafka again.
            c.failed_in_a_row.fetch_add(1, Ordering::Relaxed);
            let retry_ms = c.config.retry_after_seconds as i64 * 1000;
            c.unhealthy_until.store(schema::time::now_ms() + retry_ms, Ordering::Relaxed);
            tracing::warn!(error = %problem, "the collector refused a request: Kafka did not acknowledge it");
            retry_later(&c, format!("{problem}; retry the request (events with an event_id are de-duplicated)"))
        }
    }
}

fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// The body, gunzipped if it says so, at most `limit` bytes either way.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Response> {
    let too_large =
        || error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {limit} bytes; send smaller batches"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => Ok(bytes),
        "gzip" => {
            use std::io::Read;
            let mut out = Vec::new();
            // One byte over the limit tells a bomb from a body that fits exactly.
            // Every member (streaming compressors emit several); trailing bytes that are not gzip
            // are an error, not silently ignored events.
            let read = flate2::read::MultiGzDecoder::new(&bytes[..]).take(limit as u64 + 1).read_to_end(&mut out);
            match read {
                Ok(n) if n > limit => Err(too_large()),
                Ok(_) => Ok(Bytes::from(out)),
                Err(e) => {
                    Err(error(StatusCode::BAD_REQUEST, format!("Content-Encoding is gzip but the body is not: {e}")))
                }
            }
        }
        other => {
            Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Content-Encoding `{other}`: send gzip or nothing")))
        }
    }
}

/// `(user_id, stamped JSON)` of the valid events, and why the others are not.
fn validate(
    items: &[&RawValue],
    now_ms: i64,
    client_ip: &str,
    floor: Option<i64>,
) -> (Vec<(String, Vec<u8>)>, Vec<Invalid>) {
    let mut valid = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, raw) in items.iter().enumerate() {
        let mut object: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(raw.get()) {
            Ok(o) => o,
            Err(_) => {
                rejected.push(Invalid { index, reason: "wrong_type", detail: "an event must be a JSON object".into() });
                continue;
            }
        };
        object.insert("received_at".into(), now_ms.into());
        // Always the address we saw (or a trusted proxy reported): a sender could otherwise dodge
        // per-IP rules by naming any address. Servers relaying for browsers belong in
        // `trusted_proxies` and send X-Forwarded-For.
        object.insert("ip".into(), client_ip.into());
        let line = serde_json::to_vec(&object).expect("a map serialises");
        // The engine's own decoder: what the collector accepts, the engine accepts.
        let decoded = dataflow::decode::decode(&line, now_ms).map(|d| (d.user_id.into_owned(), d.event.ts));
        match decoded {
            Ok((_, ts)) if floor.is_some_and(|f| ts < f) => rejected.push(Invalid {
                index,
                reason: "too_late",
                detail: format!(
                    "ts {} is before the engine's as_of {}: those minutes are final and it would not be counted; \
                     send events within engine.lateness_seconds of the newest ones",
                    schema::time::rfc3339(ts),
                    schema::time::rfc3339(floor.unwrap_or_default())
                ),
            }),
            Ok((key, _)) => valid.push((key, line)),
            Err(r) => rejected.push(Invalid { index, reason: r.reason.as_str(), detail: r.detail }),
        }
    }
    (valid, rejected)
}

/// Sends every event and waits for every acknowledgement (or the first failure).
async fn produce(c: &Collector, events: &[(String, Vec<u8>)]) -> Result<(), String> {
    let mut deliveries = Vec::with_capacity(events.len());
    let producer = c.producer();
    for (key, payload) in events {
        let record = FutureRecord::to(&c.topic).key(key.as_bytes()).payload(payload.as_slice());
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((e, _)) => return Err(format!("Kafka's send queue refused an event ({e})")),
        }
    }
    // librdkafka fails a record after `message.timeout.ms`; the margin lets it say so first.
    let limit = Duration::from_millis(c.config.ack_timeout_ms + 1_000);
    let all = futures::future::join_all(deliveries);
    let results = tokio::time::timeout(limit, all).await.map_err(|_| "Kafka did not answer in time".to_string())?;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|r| match r {
            Ok(Ok(_)) => None,
            Ok(Err((e, _))) => Some(e.to_string()),
            Err(_) => Some("the producer was dropped".into()),
        })
        .collect();
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(format!("Kafka did not acknowledge {} of {} events ({first})", failed.len(), events.len())),
    }
}
