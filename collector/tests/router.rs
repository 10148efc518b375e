//! The collector's router without a socket, writing into librdkafka's mock cluster: the write key,
//! CORS for browsers, body and batch limits (gzip bombs too), per-client rate limits, per-index
//! errors, and stamping.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use collector::{Collector, CollectorConfig};
use http_body_util::BodyExt;
use rdkafka::mocking::MockCluster;
use tower::ServiceExt;

const TS: i64 = 1_795_132_800_000;

fn collector(
    mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    config: CollectorConfig,
    key: Option<&str>,
) -> Arc<Collector> {
    let kafka = dataflow::KafkaConfig { brokers: mock.bootstrap_servers(), ..dataflow::KafkaConfig::default() };
    Collector::new(config, &kafka, key.map(str::to_string)).unwrap()
}

async fn send(c: &Arc<Collector>, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let peer: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    let app = collector::router(c.clone()).layer(MockConnectInfo(peer));
    let response = app.oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

fn post() -> axum::http::request::Builder {
    Request::post("/v1/collect")
}

fn event(user: &str) -> serde_json::Value {
    serde_json::json!({"user_id": user, "event": "page_view", "ts": TS, "page": "/"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_validated_per_index_and_limits_are_enforced() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", 1, 1).unwrap();
    let config = CollectorConfig { max_body_bytes: 4096, max_events_per_request: 3, ..CollectorConfig::default() };
    let c = collector(&mock, config, None);

    let batch = serde_json::json!([event("u1"), {"event": "click", "ts": TS}, 42, event("u2")]);
    let (status, _, body) = send(&c, post().body(Body::from(batch.to_string())).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "4 events, at most 3: {body}");
    let batch = serde_json::json!([event("u1"), {"event": "click", "ts": TS}, 42]);
    let (status, _, body) = send(&c, post().body(Body::from(batch.to_string())).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert_eq!(body["rejected"][0]["reason"], "missing_field");
    assert_eq!(body["rejected"][1]["index"], 2);
    let (status, _, body) = send(&c, post().body(Body::from("[{\"event\":1}]")).unwrap()).await;
    assert_eq!((status, body["accepted"].as_i64()), (StatusCode::BAD_REQUEST, Some(0)), "none valid: {body}");
    let (status, _, body) = send(&c, post().body(Body::from("{not json")).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("not a JSON"), "{body}");

    // Too large as declared, and a gzip bomb that only grows past the limit once inflated.
    let big = format!("[{}]", vec![event("u").to_string(); 60].join(","));
    let (status, _, _) = send(&c, post().body(Body::from(big)).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 1 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 4096);
    let (status, _, _) = send(&c, post().header("content-encoding", "gzip").body(Body::from(bomb)).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Two gzip members (as streaming compressors write): both decoded, nothing silently cut.
    let gzip = |text: &str| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap()
    };
    let mut members = gzip(&format!("[{},", event("a")));
    members.extend(gzip(&format!("{}]", event("b"))));
    let (status, _, body) =
        send(&c, post().header("content-encoding", "gzip").body(Body::from(members)).unwrap()).await;
    assert_eq!((status, body["accepted"].as_i64()), (StatusCode::OK, Some(2)), "{body}");
    let mut trailing = gzip(&format!("[{}]", event("a")));
    trailing.extend(b"garbage");
    let (status, _, _) = send(&c, post().header("content-encoding", "gzip").body(Body::from(trailing)).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "bytes after the gzip data are an error");
    let (status, _, _) = send(&c, post().header("content-encoding", "br").body(Body::from("{}")).unwrap()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_key_cors_and_the_rate_limit() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", 1, 1).unwrap();
    let config = CollectorConfig {
        rate_per_second: 1.0,
        rate_burst: 2.0,
        cors_origins: vec!["https://shop.example.com".into()],
        ..CollectorConfig::default()
    };
    let c = collector(&mock, config, Some("s3cret"));
    let body = || Body::from(event("u1").to_string());
    let (status, _, _) = send(&c, post().body(body()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&c, post().header("authorization", "Bearer wrong").body(body()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, reply) = send(&c, post().header("authorization", "Bearer s3cret").body(body()).unwrap()).await;
    assert_eq!((status, reply["accepted"].as_i64()), (StatusCode::OK, Some(1)), "{reply}");
    // sendBeacon cannot set headers: the key may come in the query.
    let beacon = Request::post("/v1/collect?key=s3cret")
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body())
        .unwrap();
    let (status, _, _) = send(&c, beacon).await;
    assert_eq!(status, StatusCode::OK);
    // Burst of two spent: the third within the second is refused with a hint when to retry.
    let (status, headers, _) = send(&c, post().header("authorization", "Bearer s3cret").body(body()).unwrap()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "1");

    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/v1/collect")
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&c, preflight).await;
    assert!(status.is_success());
    assert_eq!(headers["access-control-allow-origin"], "https://shop.example.com");
    let other = Request::builder()
        .method("OPTIONS")
        .uri("/v1/collect")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(&c, other).await;
    assert!(headers.get("access-control-allow-origin").is_none(), "other origins get no CORS grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_with_a_fatal_error_is_replaced_and_requests_are_stored_again() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", 1, 1).unwrap();
    let c = collector(&mock, CollectorConfig::default(), None);
    let one = |user: &str| post().body(Body::from(event(user).to_string())).unwrap();
    let (status, _, body) = send(&c, one("u1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // What a broker restarted on lost storage does to an idempotent producer (seen with tansu):
    // fenced, it refuses every record for the rest of its life.
    c.inject_fatal_error("fenced after a broker restart (test)");
    for user in ["u2", "u3"] {
        let (status, _, body) = send(&c, one(user)).await;
        assert_eq!(status, StatusCode::OK, "accepted again after the fatal error: {body}");
    }
    assert_eq!(c.counters.producer_rebuilds.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(c.counters.accepted.load(std::sync::atomic::Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_engine_would_not_count_are_refused_as_too_late_not_acknowledged() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", 1, 1).unwrap();
    let c = collector(&mock, CollectorConfig::default(), None);
    // The engine beside it publishes complete minutes up to TS.
    c.count_from(|| Some(TS));
    let old = serde_json::json!({"user_id": "u1", "event": "page_view", "ts": TS - 12 * 86_400_000, "page": "/"});
    let batch = serde_json::json!([old, event("u2")]);
    let (status, _, body) = send(&c, post().body(Body::from(batch.to_string())).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["index"], 0);
    assert_eq!(body["rejected"][0]["reason"], "too_late");
    assert!(body["rejected"][0]["detail"].as_str().unwrap().contains("as_of"), "{body}");
}
