//! Funnel endpoints: list, report, stuck users, and creating a funnel on a running engine.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use read::funnel_query::{self, StuckQuery};
use read::model::{FunnelList, FunnelReport, StuckUsers};
use schema::funnels::{FunnelDef, RegistryError};

use crate::{bad_query, ApiError, AppState};

pub async fn list(State(s): State<AppState>) -> Json<FunnelList> {
    Json(s.read_model.funnel_list())
}

/// 404 for an unknown name (the message names the funnels that exist, close matches first).
fn exists(s: &AppState, name: &str) -> Result<(), ApiError> {
    match s.read_model.funnels.get(name) {
        None => Err(ApiError::new(StatusCode::NOT_FOUND, funnel_query::unknown(&s.read_model.funnels, name).0)),
        Some(_) => Ok(()),
    }
}

pub async fn report(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<FunnelReport>, ApiError> {
    exists(&s, &name)?;
    s.read_model.funnel(&name).map(Json).map_err(|e| ApiError::bad_request(e.0))
}

pub async fn stuck(
    State(s): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<StuckQuery>, QueryRejection>,
) -> Result<Json<StuckUsers>, ApiError> {
    exists(&s, &name)?;
    let Query(q) = query.map_err(bad_query)?;
    s.read_model.stuck(&name, &q).map(Json).map_err(|e| ApiError::bad_request(e.0))
}

/// Adds a funnel: it is computed over the events still retained, then kept live. 201 with its
/// URL; 400 for an invalid definition, 409 for a name in use.
pub async fn create(
    State(s): State<AppState>,
    body: Result<Json<FunnelDef>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(def) =
        body.map_err(|e| ApiError::bad_request(format!("{}; see GET /api/v1 for the funnel fields", e.body_text())))?;
    let name = def.name.clone();
    let funnel = s.read_model.funnels.add(def).map_err(registry_error)?;
    let url = format!("/api/v1/funnels/{name}");
    let body = serde_json::json!({
        "name": name,
        "url": url,
        "definition": *funnel,
        "message": "computing over the events still retained; the numbers are live within a second",
    });
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, url)], Json(body)))
}

/// 400 for an invalid definition, 409 for a name in use, 500 when it cannot be saved.
pub(crate) fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Invalid(m) => ApiError::bad_request(m),
        RegistryError::Exists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        RegistryError::Store(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}
