//! Retention endpoints: list, one matrix, and creating a definition on a running engine.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use read::funnel_query::unknown;
use read::model::{RetentionList, RetentionReport};
use read::retention_query::RetentionQuery;
use schema::retention::RetentionDef;

use crate::funnels::registry_error;
use crate::{bad_query, ApiError, AppState};

pub async fn list(State(s): State<AppState>) -> Json<RetentionList> {
    Json(s.read_model.retention_list())
}

pub async fn report(
    State(s): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RetentionQuery>, QueryRejection>,
) -> Result<Json<RetentionReport>, ApiError> {
    if s.read_model.retention.get(&name).is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, unknown(&s.read_model.retention, &name).0));
    }
    let Query(q) = query.map_err(bad_query)?;
    s.read_model.retention_report(&name, &q).map(Json).map_err(|e| ApiError::bad_request(e.0))
}

/// Adds a definition: computed over the events still retained (users whose start predates them
/// join the cohort of their first retained one), then kept live. 201 with its URL.
pub async fn create(
    State(s): State<AppState>,
    body: Result<Json<RetentionDef>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(def) = body
        .map_err(|e| ApiError::bad_request(format!("{}; see GET /api/v1 for the retention fields", e.body_text())))?;
    let name = def.name.clone();
    let added = s.read_model.retention.add(def).map_err(registry_error)?;
    let url = format!("/api/v1/retention/{name}");
    let body = serde_json::json!({
        "name": name,
        "url": url,
        "definition": *added,
        "message": "computing over the events still retained; the matrix is live within a second",
    });
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, url)], Json(body)))
}
