//! Path endpoints over the live graph: next and previous pages, top paths, routes into a
//! conversion, exits, and the pruned graph as JSON or Graphviz DOT.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use read::path_query::{ConversionQuery, ExitsQuery, GraphQuery, NextQuery, PathExits, PathNext, TopPaths, TopQuery};
use read::query::QueryError;

use crate::{bad_query, ApiError, AppState};

/// Path queries can take milliseconds on a large graph (and a rebuild tens of them): off the
/// async workers, so they never stall other requests or the change stream.
async fn blocking<T: Send + 'static>(
    s: AppState,
    query: impl FnOnce(&read::ReadModel) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, ApiError> {
    let joined = tokio::task::spawn_blocking(move || query(&s.read_model)).await;
    let result = joined
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("path query failed: {e}")))?;
    result.map_err(|e| ApiError::bad_request(e.0))
}

pub async fn next(
    State(s): State<AppState>,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> Result<Json<PathNext>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    blocking(s, move |m| m.path_next(&q)).await.map(Json)
}

pub async fn top(
    State(s): State<AppState>,
    query: Result<Query<TopQuery>, QueryRejection>,
) -> Result<Json<TopPaths>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    blocking(s, move |m| m.path_top(&q)).await.map(Json)
}

pub async fn conversions(
    State(s): State<AppState>,
    query: Result<Query<ConversionQuery>, QueryRejection>,
) -> Result<Json<TopPaths>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    blocking(s, move |m| m.path_conversions(&q)).await.map(Json)
}

pub async fn exits(
    State(s): State<AppState>,
    query: Result<Query<ExitsQuery>, QueryRejection>,
) -> Result<Json<PathExits>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    blocking(s, move |m| m.path_exits(&q)).await.map(Json)
}

pub async fn graph(
    State(s): State<AppState>,
    query: Result<Query<GraphQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    match blocking(s, move |m| m.path_graph(&q)).await? {
        Ok(json) => Ok(Json(json).into_response()),
        Err(dot) => Ok(([(CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")], dot).into_response()),
    }
}
