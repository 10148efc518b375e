//! Path endpoints over the live graph: next and previous pages, top paths, routes into a
//! conversion, exits, and the pruned graph as JSON or Graphviz DOT.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use views::path_query::{ConversionQuery, ExitsQuery, GraphQuery, NextQuery, PathExits, PathNext, TopPaths, TopQuery};
use views::query::QueryError;

use crate::{bad_query, ApiError, AppState};

fn answer<T>(result: Result<T, QueryError>) -> Result<Json<T>, ApiError> {
    result.map(Json).map_err(|e| ApiError::bad_request(e.0))
}

pub async fn next(
    State(s): State<AppState>,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> Result<Json<PathNext>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    answer(s.read_model.path_next(&q))
}

pub async fn top(
    State(s): State<AppState>,
    query: Result<Query<TopQuery>, QueryRejection>,
) -> Result<Json<TopPaths>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    answer(s.read_model.path_top(&q))
}

pub async fn conversions(
    State(s): State<AppState>,
    query: Result<Query<ConversionQuery>, QueryRejection>,
) -> Result<Json<TopPaths>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    answer(s.read_model.path_conversions(&q))
}

pub async fn exits(
    State(s): State<AppState>,
    query: Result<Query<ExitsQuery>, QueryRejection>,
) -> Result<Json<PathExits>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    answer(s.read_model.path_exits(&q))
}

pub async fn graph(
    State(s): State<AppState>,
    query: Result<Query<GraphQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    match s.read_model.path_graph(&q).map_err(|e| ApiError::bad_request(e.0))? {
        Ok(json) => Ok(Json(json).into_response()),
        Err(dot) => Ok(([(CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")], dot).into_response()),
    }
}
