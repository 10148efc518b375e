//! The router called directly (no socket), over a read model with known rows.

use std::sync::Arc;

use api::{app, AppState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use read::{ReadModel, Status};
use schema::event::{minute_of, sym};
use schema::registry::Definitions;
use schema::{Cell, Dim, ViewConfig};
use tower::ServiceExt;

const HEAD: i64 = 1_795_132_800_000 + 30 * 60_000;

fn state() -> AppState {
    let defs = Definitions::new(&ViewConfig::default()).unwrap();
    let model = ReadModel::new(ViewConfig::default(), &defs);
    let alerting = alerting::Alerting::new(model.clone(), &defs);
    let m = minute_of(HEAD);
    let home = sym("/");
    model.publish(
        3,
        vec![
            (Cell::Name { sym: home, text: "/".into() }, 1),
            (Cell::Count { dim: Dim::PageView, key: home, minute: m }, 7),
            (Cell::Count { dim: Dim::All, key: 0, minute: m - 1 }, 40),
            (Cell::UserMinute { minute: m, user: 1 }, 1),
            (Cell::UserMinute { minute: m - 2, user: 2 }, 1),
            (Cell::UserMinute { minute: m - 9, user: 3 }, 1),
            (Cell::Accepted, 47),
            (Cell::Reject { reason: "invalid_json".into() }, 2),
            (Cell::Clock { head: Some(HEAD), as_of: Some(HEAD - 300_000), ready: false }, 1),
        ],
    );
    AppState::new(model, alerting, Arc::new(Status::default()))
}

async fn get(state: AppState, uri: &str) -> (StatusCode, String) {
    let response = app(state).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn live_answers_from_the_snapshot_with_its_clock() {
    let (status, body) = get(state(), "/api/v1/live").await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["active_users"], 2, "users 1 and 2 are within 5 minutes, user 3 is not");
    assert_eq!(v["events_per_minute"], 40);
    assert_eq!(v["top_pages"][0]["page"], "/");
    assert_eq!(v["top_pages"][0]["views"], 7);
    assert_eq!(v["as_of_ms"], HEAD - 300_000);
    assert_eq!(v["epoch"], 3);
}

#[tokio::test]
async fn timeseries_validates_its_parameters_with_actionable_errors() {
    let (status, body) = get(state(), "/api/v1/timeseries?metric=clicks").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json(&body)["error"].as_str().unwrap().contains("events, page_views, active_users"), "{body}");
    let (status, body) = get(state(), "/api/v1/timeseries?metric=active_users&breakdown=page").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("no breakdown"), "{body}");
    let (status, body) = get(state(), "/api/v1/timeseries?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("RFC 3339"), "{body}");
    let (status, body) = get(state(), "/api/v1/timeseries?metrc=events").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("metrc"), "{body}");
    let (status, body) = get(state(), "/api/v1/timeseries?metric=page_views&breakdown=page").await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["series"][0]["key"], "/");
    assert_eq!(v["series"][0]["total"], 7);
    assert_eq!(v["series"][0]["points"].as_array().unwrap().len(), 60);
}

#[tokio::test]
async fn the_index_lists_the_endpoints_with_their_parameters() {
    let (status, body) = get(state(), "/api/v1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(json(&body)["endpoints"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("metric=events")));
}

#[tokio::test]
async fn unknown_paths_list_the_endpoints() {
    let (status, body) = get(state(), "/api/v2/live").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json(&body)["error"].as_str().unwrap().contains("GET /api/v1/live"));
}

#[tokio::test]
async fn readiness_follows_the_engine_status() {
    let s = state();
    let (status, body) = get(s.clone(), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("catching up"));
    s.status.set_ready(true);
    assert_eq!(get(s, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let s = state();
    s.status.observe_epoch_latency(120);
    let state = |users, capped| read::status::UserState {
        session_keys: users,
        logged_users: users,
        capped_events: capped,
        approximate_recuts: 0,
        retention_users: users * 2,
    };
    s.status.set_user_state("clicks-0", state(3, 1));
    s.status.set_user_state("clicks-1", state(4, 0));
    let (status, body) = get(s, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("clickflow_events_in_total 49\n"), "{body}");
    assert!(body.contains("clickflow_rejects_total{reason=\"invalid_json\"} 2\n"));
    assert!(body.contains("clickflow_epoch_latency_ms_bucket{le=\"150\"} 1\n"));
    assert!(body.contains("clickflow_epoch_latency_ms_bucket{le=\"100\"} 0\n"));
    assert!(
        body.contains("clickflow_session_keys 7\n")
            && body.contains("clickflow_user_events_capped_total 1\n")
            && body.contains("clickflow_retention_users 14\n"),
        "{body}"
    );
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("clickflow_") || name.starts_with("process_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[tokio::test]
async fn sessions_answer_for_a_segment_and_refuse_ranges_that_cannot_be_answered() {
    use schema::sessions::SessionConfig;
    use schema::time::hour_of;
    use views::sessions::{cells_of, Summary};
    let s = state();
    let (google, mobile) = (sym("google"), sym("mobile"));
    let session = |start: i64, end: i64, source: [u64; 3]| Summary {
        start,
        end,
        events: 3,
        page_views: 2,
        first: (start, 0),
        entry: (start, 0, sym("/")),
        exit: (end, 0, sym("/")),
        source,
    };
    let mut rows: Vec<(Cell, i64)> = vec![
        (Cell::Name { sym: google, text: "google".into() }, 1),
        (Cell::Name { sym: mobile, text: "mobile".into() }, 1),
    ];
    for summary in
        [session(HEAD - 600_000, HEAD - 60_000, [google, mobile, 0]), session(HEAD - 5_000, HEAD, [0, mobile, 0])]
    {
        for (hour, source, stat, n) in cells_of(&summary, &SessionConfig::default()) {
            rows.push((Cell::Session { hour, source, stat }, n));
        }
    }
    s.read_model.publish(4, rows);
    let (status, body) = get(s.clone(), "/api/v1/sessions").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let all = json(&body);
    assert_eq!(all["summary"]["sessions"], 2);
    assert_eq!(all["summary"]["in_progress"], 2);
    assert_eq!(all["hourly"].as_array().unwrap().iter().map(|h| h["sessions"].as_i64().unwrap()).sum::<i64>(), 2);
    assert_eq!(all["breakdowns"]["utm_source"][0]["key"], "(none)");
    let (_, body) = get(s.clone(), "/api/v1/sessions?utm_source=google").await;
    let google_only = json(&body);
    assert_eq!(google_only["summary"]["sessions"], 1);
    assert_eq!(google_only["summary"]["duration_ms"], 540_000);
    assert_eq!(google_only["top_entry_pages"][0]["key"], "/");
    let hour = |ms: i64| hour_of(ms) as i64 * 3_600_000;
    let (status, body) =
        get(s.clone(), &format!("/api/v1/sessions?from={}&to={}", hour(HEAD), hour(HEAD) - 3_600_000)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json(&body)["error"].as_str().unwrap().contains("is after"), "{body}");
    let (status, body) = get(s.clone(), "/api/v1/sessions?from=2019-01-01T00:00:00Z&to=2020-01-01T00:00:00Z").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json(&body)["error"].as_str().unwrap().contains("oldest hour still kept"), "{body}");
    let (status, _) = get(s, "/api/v1/sessions?browser=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A state with path edges: two sessions `(entry) -> / -> /products/:id -> (exit)`, one
/// `(entry) -> / -> event:purchase -> (exit)`.
fn with_paths() -> AppState {
    let s = state();
    let names = ["(entry)", "(exit)", "/", "/products/:id", "event:purchase"];
    let mut rows: Vec<(Cell, i64)> =
        names.iter().map(|n| (Cell::Name { sym: sym(n), text: n.to_string() }, 1)).collect();
    for (from, to, n) in [
        ("(entry)", "/", 3),
        ("/", "/products/:id", 2),
        ("/products/:id", "(exit)", 2),
        ("/", "event:purchase", 1),
        ("event:purchase", "(exit)", 1),
    ] {
        rows.push((Cell::PathEdge { from: sym(from), to: sym(to) }, n));
    }
    s.read_model.publish(5, rows);
    s
}

#[tokio::test]
async fn path_queries_answer_from_the_live_graph_with_actionable_errors() {
    let s = with_paths();
    // A raw URL is cleaned like the events were (the trailing slash here).
    let (status, body) = get(s.clone(), "/api/v1/paths/next?page=/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let next = json(&body);
    assert_eq!(next["next"][0]["page"], "/products/:id");
    assert_eq!(next["next"][0]["count"], 2);
    assert_eq!(next["previous"][0]["page"], "(entry)");
    assert_eq!(next["as_of_ms"], HEAD - 300_000);
    let (status, body) = get(s.clone(), "/api/v1/paths/next?page=/prodcts/:id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("/products/:id"), "suggests the close name: {body}");
    let (_, body) = get(s.clone(), "/api/v1/paths/top").await;
    let top = json(&body);
    assert_eq!(top["paths"][0]["pages"], serde_json::json!(["(entry)", "/", "/products/:id", "(exit)"]));
    assert_eq!(top["paths"][0]["sessions"], 2.0);
    // `from` and `to` are pages here, not times (the dashboard's Sankey starts at a chosen page).
    let (status, body) = get(s.clone(), "/api/v1/paths/top?from=/&to=(exit)").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["paths"][0]["pages"], serde_json::json!(["/", "/products/:id", "(exit)"]));
    let (_, body) = get(s.clone(), "/api/v1/paths/conversions").await;
    assert_eq!(json(&body)["paths"][0]["pages"], serde_json::json!(["(entry)", "/", "event:purchase"]));
    let (status, body) = get(s.clone(), "/api/v1/paths/conversions?event=click").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("views.paths.conversion_events"), "{body}");
    let (_, body) = get(s.clone(), "/api/v1/paths/exits").await;
    assert_eq!(json(&body)["exits"][0]["page"], "/products/:id");
    let (status, body) = get(s.clone(), "/api/v1/paths/graph?max_edges=2").await;
    assert_eq!(status, StatusCode::OK);
    let graph = json(&body);
    assert_eq!(graph["edges"].as_array().unwrap().len(), 2);
    assert_eq!(graph["total_edges"], 5);
    let response = app(s.clone())
        .oneshot(Request::get("/api/v1/paths/graph?format=dot").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/vnd.graphviz; charset=utf-8");
    let dot = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8(dot.to_vec()).unwrap().starts_with("digraph paths {"));
    let (status, body) = get(s.clone(), "/api/v1/paths/graph?format=png").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("json or dot"), "{body}");
    let (status, _) = get(s, "/api/v1/paths/top?steps=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn retention_can_be_created_and_read_and_errors_say_what_to_fix() {
    use schema::retention::{period_of, Period, RetentionStat};
    let s = state();
    let post = |body: serde_json::Value| {
        Request::post("/api/v1/retention")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let def =
        serde_json::json!({"name": "daily", "periods": 3, "start": {"event": "signup"}, "return": {"event": "click"}});
    let response = app(s.clone()).oneshot(post(def.clone())).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app(s.clone()).oneshot(post(def)).await.unwrap().status(), StatusCode::CONFLICT);
    let bad = serde_json::json!({"name": "x", "periods": 1, "start": {"event": "a"}, "return": {"event": "b"}});
    let response = app(s.clone()).oneshot(post(bad)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Cells as ingestion would send them: 4 users in yesterday's cohort, 1 back today.
    let today = period_of(Period::Day, HEAD - 300_000);
    s.read_model.publish(
        6,
        vec![
            (Cell::Retention { retention: 0, key: 0, cohort: today - 1, stat: RetentionStat::Size }, 4),
            (Cell::Retention { retention: 0, key: 0, cohort: today - 1, stat: RetentionStat::On(1) }, 1),
            (Cell::Retention { retention: 0, key: 0, cohort: today - 5, stat: RetentionStat::Size }, 9),
        ],
    );
    let (status, body) = get(s.clone(), "/api/v1/retention/daily").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report = json(&body);
    let cohorts = report["cohorts"].as_array().unwrap();
    assert_eq!(cohorts.len(), 3, "the last 3 periods; the cohort of 5 days ago is not shown");
    assert_eq!(cohorts[1]["size"], 4);
    assert_eq!(cohorts[1]["returned"], serde_json::json!([4, 1]));
    assert_eq!(cohorts[1]["percent"], serde_json::json!([100.0, 25.0]));
    assert_eq!(report["average"][1]["percent"], 25.0);
    let (status, body) = get(s.clone(), "/api/v1/retention/dayly").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("did you mean `daily`"), "{body}");
    let (status, body) = get(s.clone(), "/api/v1/retention/daily?breakdown_value=google").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("has no breakdown"), "{body}");
    let (_, body) = get(s, "/api/v1/retention").await;
    assert_eq!(json(&body)["retention"][0]["users"], 4);
}

fn post_json(uri: &str, body: serde_json::Value) -> Request<Body> {
    Request::post(uri).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn alert_rules_silences_and_limits_answer_and_refuse_what_cannot_work() {
    let s = state();
    let rule = serde_json::json!({"name": "api_limit", "when": {"kind": "rate_limit", "key": "user", "limit": 2, "window_minutes": 1}});
    let response = app(s.clone()).oneshot(post_json("/api/v1/alerts/rules", rule.clone())).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        app(s.clone()).oneshot(post_json("/api/v1/alerts/rules", rule)).await.unwrap().status(),
        StatusCode::CONFLICT
    );
    for (bad, says) in [
        (
            serde_json::json!({"name": "f", "when": {"kind": "funnel_drop", "funnel": "nope", "floor": 5.0}}),
            "no funnel `nope`",
        ),
        (serde_json::json!({"name": "t", "when": {"kind": "threshold", "series": {"metric": "events"}}}), "`above`"),
        (serde_json::json!({"name": "h", "when": {"kind": "anomaly", "series": {"metric": "sessions"}}}), "at least 3"),
        (serde_json::json!({"name": "u", "when": {"kind": "burst", "key": "ip", "limit": 5, "limt": 1}}), "limt"),
    ] {
        let response = app(s.clone()).oneshot(post_json("/api/v1/alerts/rules", bad)).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains(says), "{}", String::from_utf8_lossy(&body));
    }
    // Counts as ingestion sends them: user u1 did 3 events in the head minute.
    let kind = schema::alert_rules::KeyKind { field: schema::alert_rules::KeyField::User, event: 0 };
    let user = schema::alert_rules::KeyField::User.sym("u1");
    let m = minute_of(HEAD);
    s.read_model.publish(
        4,
        vec![
            (Cell::Keyed { kind, key: user, minute: m }, 3),
            (Cell::KeyText { sym: user, text: "u1".into(), minute: m }, 1),
        ],
    );
    let (status, body) = get(s.clone(), "/api/v1/limits/api_limit/u1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json(&body);
    assert_eq!((v["count"].as_i64(), v["over"].as_bool()), (Some(3), Some(true)));
    assert_eq!(v["until_ms"].as_i64(), Some((m as i64 + 1) * 60_000));
    let (_, body) = get(s.clone(), "/api/v1/limits/api_limit").await;
    assert_eq!(json(&body)["over"][0]["key"], "u1");
    let (status, body) = get(s.clone(), "/api/v1/limits/traffic_anomaly/u1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("ip_rate_limit") && body.contains("api_limit"), "names the rate-limit rules: {body}");

    let silence = serde_json::json!({"matcher": "api_limit", "minutes": 60, "comment": "deploy"});
    let response = app(s.clone()).oneshot(post_json("/api/v1/alerts/silences", silence)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let unknown = serde_json::json!({"matcher": "nope", "minutes": 60});
    let response = app(s.clone()).oneshot(post_json("/api/v1/alerts/silences", unknown)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (_, body) = get(s.clone(), "/api/v1/alerts/silences").await;
    assert_eq!(json(&body)["silences"][0]["matcher"], "api_limit");
    let response = app(s.clone())
        .oneshot(Request::delete("/api/v1/alerts/silences/1").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, body) = get(s, "/api/v1/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["alerts"], serde_json::json!([]));
}

async fn call(state: AppState, method: &str, uri: &str, token: Option<&str>) -> StatusCode {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let body = if method == "GET" { Body::empty() } else { Body::from("{}") };
    app(state).oneshot(request.body(body).unwrap()).await.unwrap().status()
}

#[tokio::test]
async fn with_tokens_every_endpoint_needs_one_writes_the_admin_token_and_health_checks_none() {
    let tokens = api::auth::Tokens::new(Some("read-t0ken".into()), Some("adm1n-t0ken".into()));
    let with_tokens = || AppState { tokens: Arc::new(tokens.clone()), ..state() };
    let index = app(with_tokens())
        .oneshot(Request::get("/api/v1").header("authorization", "Bearer read-t0ken").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = index.into_body().collect().await.unwrap().to_bytes();
    let listed = json(std::str::from_utf8(&body).unwrap());
    let mut checked = 0;
    for entry in listed["endpoints"].as_array().unwrap() {
        let entry = entry.as_str().unwrap();
        let (method, rest) = entry.split_once(' ').unwrap();
        let path = rest.split([' ', '?']).next().unwrap().replace("{name}", "checkout").replace("{id}", "1");
        let path = path.replace("{rule}", "user_burst").replace("{key}", "u1");
        let state = with_tokens;
        if path == "/healthz" || path == "/readyz" {
            assert_ne!(call(state(), method, &path, None).await, StatusCode::UNAUTHORIZED, "{entry}: open");
            continue;
        }
        assert_eq!(call(state(), method, &path, None).await, StatusCode::UNAUTHORIZED, "{entry} without a token");
        assert_eq!(call(state(), method, &path, Some("guess")).await, StatusCode::UNAUTHORIZED, "{entry}, bad token");
        let admin = call(state(), method, &path, Some("adm1n-t0ken")).await;
        assert!(admin != StatusCode::UNAUTHORIZED && admin != StatusCode::FORBIDDEN, "{entry} with the admin token");
        let read = call(state(), method, &path, Some("read-t0ken")).await;
        if method == "GET" {
            assert!(read != StatusCode::UNAUTHORIZED && read != StatusCode::FORBIDDEN, "{entry} with the read token");
        } else {
            assert_eq!(read, StatusCode::FORBIDDEN, "{entry} needs the admin token");
        }
        checked += 1;
    }
    assert!(checked >= 25, "every listed endpoint was checked: {checked}");
    // Without tokens nothing changes.
    assert_eq!(call(state(), "GET", "/api/v1/live", None).await, StatusCode::OK);
}

#[test]
fn an_open_api_is_served_on_loopback_only_unless_the_network_is_trusted() {
    let open = api::auth::Tokens::default();
    let on = |listen: &str| api::ApiConfig { listen: listen.into(), ..api::ApiConfig::default() };
    assert!(on("127.0.0.1:8080").check_exposure(&open).is_ok());
    assert!(on("localhost:8080").check_exposure(&open).is_ok());
    assert!(on("[::1]:8080").check_exposure(&open).is_ok());
    let refused = on("0.0.0.0:8080").check_exposure(&open).unwrap_err();
    assert!(refused.contains("CLICKFLOW_READ_TOKEN") && refused.contains("trusted_network"), "{refused}");
    let trusted = api::ApiConfig { trusted_network: true, ..on("0.0.0.0:8080") };
    assert!(trusted.check_exposure(&open).is_ok());
    let tokens = api::auth::Tokens::new(None, Some("a".into()));
    assert!(on("0.0.0.0:8080").check_exposure(&tokens).is_ok());
}

#[tokio::test]
async fn ignored_filters_unbounded_limits_reversed_ranges_and_seconds_are_refused_on_every_endpoint() {
    let refused = [
        ("/api/v1/live?country=DE", "does not take `country`; it takes: none"),
        ("/api/v1/funnels/checkout?device=mobile", "does not take `device`"),
        ("/api/v1/stream?views=foo", "unknown view `foo`"),
        ("/api/v1/timeseries?limit=1000000&breakdown=page", "at most 1000"),
        ("/api/v1/sessions?from=2026-11-21T00:00:00Z&to=2026-11-20T00:00:00Z", "swap them"),
        ("/api/v1/paths/top?from=1795132800", "looks like seconds"),
        ("/api/v1/alerts?limit=-1", "whole number"),
    ];
    for (uri, says) in refused {
        let (status, body) = get(state(), uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(json(&body)["error"].as_str().unwrap().contains(says), "{uri}: {body}");
    }
    let (status, body) = get(state(), "/api/v1/timeseries?breakdown=page&limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_status_and_show_the_process() {
    let s = state();
    get(s.clone(), "/api/v1/live").await;
    get(s.clone(), "/api/v1/live").await;
    get(s.clone(), "/api/v1/timeseries?metric=nope").await;
    let (status, body) = get(s, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let line = |prefix: &str| body.lines().find(|l| l.starts_with(prefix)).map(str::to_string);
    let live = r#"clickflow_http_request_duration_ms_count{route="/api/v1/live",method="GET",status="2xx"}"#;
    assert_eq!(line(live).as_deref(), Some(&*format!("{live} 2")), "{body}");
    let bad = r#"clickflow_http_request_duration_ms_count{route="/api/v1/timeseries",method="GET",status="4xx"}"#;
    assert_eq!(line(bad).as_deref(), Some(&*format!("{bad} 1")));
    for name in ["process_resident_memory_bytes ", "process_open_fds ", "process_threads ", "process_max_fds "] {
        let value: f64 = line(name).unwrap_or_else(|| panic!("{name} in {body}"))[name.len()..].parse().unwrap();
        assert!(value > 0.0, "{name}");
    }
    assert!(line("process_cpu_seconds_total ").is_some(), "{body}");
}

#[tokio::test]
async fn the_dashboard_and_its_assets_need_no_token_and_are_cached_by_etag() {
    let tokens = api::auth::Tokens::new(Some("read-t0ken".into()), Some("adm1n-t0ken".into()));
    let with_tokens = || AppState { tokens: Arc::new(tokens.clone()), ..state() };
    let assets = [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/client.js", "text/javascript; charset=utf-8"),
        ("/assets/charts.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/echarts.min.js", "text/javascript; charset=utf-8"),
    ];
    for (uri, content_type) in assets {
        let response = app(with_tokens()).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri} without a token");
        assert_eq!(response.headers()["content-type"], content_type, "{uri}");
        assert_eq!(response.headers()["cache-control"], "no-cache", "{uri}");
        let etag = response.headers()["etag"].clone();
        let again = Request::get(uri).header("if-none-match", etag).body(Body::empty()).unwrap();
        let response = app(with_tokens()).oneshot(again).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{uri} revalidates");
    }
    let (_, page) = get(state(), "/").await;
    assert!(page.contains("<title>clickflow</title>"), "{page}");
    // The data stays behind the token.
    assert_eq!(call(with_tokens(), "GET", "/api/v1/live", None).await, StatusCode::UNAUTHORIZED);
}

/// The next `n` server-sent events of `body` as `(id, event, data)`, waiting at most 5 s.
async fn next_events(body: &mut Body, n: usize) -> Vec<(Option<String>, String, String)> {
    let mut events = Vec::new();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while events.len() < n {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await.expect("an event in time");
        let data = frame.expect("the stream goes on").unwrap().into_data().unwrap_or_default();
        text.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field =
                |name: &str| block.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_string()));
            if let Some(event) = field("event:") {
                events.push((field("id:"), event, field("data:").unwrap_or_default()));
            }
        }
    }
    events
}

async fn open_stream(state: AppState, uri: &str, last_event_id: Option<&str>) -> Body {
    let mut request = Request::get(uri);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = app(state).oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

#[tokio::test]
async fn the_stream_coalesces_publishes_and_resumes_after_its_last_event_id() {
    let s = state();
    let (home, m) = (sym("/"), minute_of(HEAD));
    let uri = "/api/v1/stream?views=live,counts&coalesce_ms=300";
    let mut body = open_stream(s.clone(), uri, None).await;
    let first = next_events(&mut body, 1).await;
    assert_eq!((first[0].0.as_deref(), first[0].1.as_str()), (Some("3"), "live"), "the state it starts from");
    // Five publishes in a row, each one more view of `/` in the same minute.
    for epoch in 4..=8 {
        s.read_model.publish(epoch, vec![(Cell::Count { dim: Dim::PageView, key: home, minute: m }, 1)]);
    }
    let mut counts = Vec::new();
    while counts.last().is_none_or(|(id, _): &(Option<String>, serde_json::Value)| id.as_deref() != Some("8")) {
        for (id, event, data) in next_events(&mut body, 1).await {
            if event == "counts" {
                counts.push((id, json(&data)));
            }
        }
    }
    assert!(counts.len() <= 2, "five publishes, at most two batches (the first goes at once): {counts:?}");
    let newest = &counts.last().unwrap().1;
    assert_eq!(newest["epoch"], 8);
    assert_eq!(newest["counts"][0]["count"], 12, "the cell at its newest value: {newest}");
    drop(body);

    // Back after epoch 4: what it missed, in one batch, as of epoch 8.
    let mut body = open_stream(s.clone(), uri, Some("4")).await;
    let resumed = next_events(&mut body, 2).await;
    let names: Vec<(&str, Option<&str>)> = resumed.iter().map(|(id, e, _)| (e.as_str(), id.as_deref())).collect();
    assert_eq!(names, [("live", None), ("counts", Some("8"))], "the batch's last event carries its id");
    assert_eq!(json(&resumed[1].2)["counts"][0]["count"], 12);
    drop(body);

    // Back after an epoch no longer kept: told to re-read, then the live numbers now.
    let mut body = open_stream(s.clone(), uri, Some("2")).await;
    let reset = next_events(&mut body, 2).await;
    assert_eq!((reset[0].1.as_str(), reset[1].1.as_str()), ("reset", "live"));
    assert_eq!(reset[1].0.as_deref(), Some("8"), "then the live numbers now, with the epoch");
    let (status, _) = get(s, "/api/v1/stream?coalesce_ms=60001").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
