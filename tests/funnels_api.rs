//! A funnel or a retention definition created through the API on a running engine gives the same
//! numbers as the same definition in config from the start (both equal the reference), and the
//! endpoints answer from the read model.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::e2e::generated;
use common::oracle::{self, Spec};
use common::Harness;
use http_body_util::BodyExt;
use read::Status;
use schema::ViewConfig;
use tower::ServiceExt;

const LATENESS: i64 = 300_000;

fn shop_funnels() -> Vec<schema::funnels::FunnelDef> {
    serde_json::from_value(serde_json::json!([
        {"name": "checkout", "breakdown": "utm_source", "window_minutes": 60,
         "steps": [{"event": "page_view", "page_prefix": "/products/"}, {"event": "add_to_cart"},
                   {"event": "page_view", "page": "/checkout"}, {"event": "purchase"}]},
        {"name": "search_strict", "order": "strict", "over": "sessions",
         "steps": [{"event": "page_view", "page": "/search"}, {"event": "page_view", "page_regex": "^/products/\\d+$"}]},
        {"name": "cart_or_click", "order": "unordered", "window_minutes": 30, "breakdown": "device",
         "steps": [{"event": "add_to_cart"}, {"event": "click"}],
         "exclusions": [{"event": "page_view", "page": "/"}]}
    ]))
    .unwrap()
}

/// Events that bots (the only users beyond `max_events_per_user`) never send: the retained logs a
/// run-time definition is built from hold every such event.
fn shop_retention() -> Vec<schema::retention::RetentionDef> {
    serde_json::from_value(serde_json::json!([
        {"name": "buyers", "breakdown": "utm_source", "start": {"event": "add_to_cart"}, "return": {"event": "purchase"}},
        {"name": "weekly_searchers", "period": "week", "cohort": "recurring", "periods": 3,
         "start": {"event": "page_view", "page": "/search"}, "return": {"event": "add_to_cart"}}
    ]))
    .unwrap()
}

fn views_with(funnels: Vec<schema::funnels::FunnelDef>, retention: Vec<schema::retention::RetentionDef>) -> ViewConfig {
    ViewConfig { window_minutes: 90, max_events_per_user: 50, funnels, retention, ..ViewConfig::default() }
}

async fn call(state: api::AppState, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = api::app(state).oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn a_funnel_created_at_run_time_equals_the_same_funnel_defined_from_the_start() {
    let lines: Vec<Vec<u8>> = generated(30_000, 5).into_iter().map(|(_, l)| l).collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let mut from_start = Harness::start(2, LATENESS, views_with(shop_funnels(), shop_retention()));
    from_start.push(lines.clone());
    let expected = from_start.settle();

    let mut later = Harness::start(2, LATENESS, views_with(Vec::new(), Vec::new()));
    later.push(first.to_vec());
    later.settle();
    let state = api::AppState::new(later.read_model.clone(), later.alerting.clone(), Arc::new(Status::default()));
    for def in shop_funnels() {
        let post = Request::post("/api/v1/funnels")
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&def).unwrap()))
            .unwrap();
        let (status, body) = rt.block_on(call(state.clone(), post));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for def in shop_retention() {
        let post = Request::post("/api/v1/retention")
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&def).unwrap()))
            .unwrap();
        let (status, body) = rt.block_on(call(state.clone(), post));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    later.push(second.to_vec());
    later.settle();
    // The new funnels are picked up at the next epoch: wait for them, not for a fixed time.
    let deadline = Instant::now() + Duration::from_secs(20);
    let same = |d: &read::model::Dump| d.funnels == expected.funnels && d.retention == expected.retention;
    while !same(&later.read_model.dump()) {
        assert!(Instant::now() < deadline, "run-time definitions never matched the ones from the start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let spec = Spec {
        lateness_ms: LATENESS,
        views: views_with(shop_funnels(), shop_retention()),
        now_ms: chrono::Utc::now().timestamp_millis(),
    };
    let reference = oracle::dump(&spec, std::slice::from_ref(&lines));
    assert_eq!(expected.funnels, reference.funnels);
    assert_eq!(expected.retention, reference.retention);
    assert!(expected.retention["buyers"][0].cohorts.iter().any(|c| c.size > 0), "{:?}", expected.retention);
    let checkout = &expected.funnels["checkout"];
    assert!(checkout.numbers.steps[3].users > 0, "the shop converts: {:?}", checkout.numbers.steps);

    // The endpoints read the same numbers.
    let get = |uri: &str| rt.block_on(call(state.clone(), Request::get(uri).body(Body::empty()).unwrap()));
    let (status, report) = get("/api/v1/funnels/checkout");
    assert_eq!(status, StatusCode::OK);
    let users: Vec<i64> = report["steps"].as_array().unwrap().iter().map(|s| s["users"].as_i64().unwrap()).collect();
    assert_eq!(users, checkout.numbers.steps.iter().map(|s| s.users).collect::<Vec<_>>());
    assert!(report["as_of"].is_string());
    let (status, list) = get("/api/v1/funnels");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["funnels"].as_array().unwrap().len(), 3);
    let (status, stuck) = get("/api/v1/funnels/checkout/stuck?step=2&limit=5");
    assert_eq!(status, StatusCode::OK);
    let at_step_2 = checkout.open_attempts.iter().filter(|(s, _, _)| *s == 1).count() as i64;
    assert!(stuck["total"].as_i64().unwrap() <= at_step_2 && stuck["users"].as_array().unwrap().len() <= 5);
    assert_eq!(stuck["total"], report["open_now"][1]);

    // Mistakes get answers that say what to do.
    let (status, body) = get("/api/v1/funnels/chekout");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("did you mean `checkout`"), "{body}");
    let (status, body) = get("/api/v1/funnels/checkout/stuck?step=4");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("steps 1 to 3"), "{body}");
    let duplicate = Request::post("/api/v1/funnels")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&shop_funnels()[0]).unwrap()))
        .unwrap();
    assert_eq!(rt.block_on(call(state.clone(), duplicate)).0, StatusCode::CONFLICT);
    let invalid = Request::post("/api/v1/funnels")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"name":"x","steps":[{"event":"a"},{"event":"b","page_regex":"("}]}"#))
        .unwrap();
    let (status, body) = rt.block_on(call(state, invalid));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("page_regex does not compile"), "{body}");
}
