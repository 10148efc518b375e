//! Query parameters checked the same way on every endpoint: a parameter the endpoint does not take
//! is refused with the ones it does (a filter silently ignored answers the wrong question), `limit`
//! has a ceiling, and `from` may not be after `to`. What each endpoint takes is read from the
//! endpoint list the API publishes (`GET /api/v1`), so the list and the checks cannot drift apart.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// The largest `limit` any list answers.
pub const MAX_LIMIT: usize = 1_000;

/// `(method, route) -> parameters`, from [`crate::ENDPOINTS`].
static TAKES: LazyLock<HashMap<(String, String), Vec<String>>> = LazyLock::new(|| {
    crate::ENDPOINTS
        .iter()
        .filter_map(|entry| {
            let (method, rest) = entry.split_once(' ')?;
            let target = rest.split(' ').next()?;
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let names = query.split('&').filter_map(|p| p.split('=').next()).filter(|n| !n.is_empty());
            Some(((method.to_string(), path.to_string()), names.map(String::from).collect()))
        })
        .collect()
});

pub async fn check_params(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let Some(route) = matched else { return next.run(request).await };
    let method = request.method().as_str().to_string();
    let Some(takes) = TAKES.get(&(method.clone(), route.as_str().to_string())) else {
        return next.run(request).await;
    };
    let pairs: Vec<(String, String)> =
        request.uri().query().map(|q| serde_urlencoded::from_str(q).unwrap_or_default()).unwrap_or_default();
    if let Err(problem) = check(&pairs, takes, &format!("{method} {}", route.as_str())) {
        return ApiError::bad_request(problem).into_response();
    }
    next.run(request).await
}

fn check(pairs: &[(String, String)], takes: &[String], endpoint: &str) -> Result<(), String> {
    if let Some((unknown, _)) = pairs.iter().find(|(k, _)| !takes.contains(k)) {
        let known = if takes.is_empty() { "none".to_string() } else { takes.join(", ") };
        return Err(format!("{endpoint} does not take `{unknown}`; it takes: {known}"));
    }
    let value = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let Some(v) = value("limit") {
        match v.parse::<usize>() {
            Ok(n) if n <= MAX_LIMIT => {}
            Ok(n) => {
                return Err(format!("`limit` is at most {MAX_LIMIT}, got {n}; page with `offset` or narrow the range"))
            }
            Err(_) => return Err(format!("`limit` must be a whole number, got `{v}`")),
        }
    }
    // On the path endpoints `from` and `to` are pages (`/search`, `(entry)`, `event:purchase`),
    // never a bare number: only a number there is read as a time, for the seconds hint.
    let pages = endpoint.contains(" /api/v1/paths/");
    let time = |name: &str| {
        value(name)
            .filter(|v| !pages || v.bytes().all(|b| b.is_ascii_digit()))
            .map(|v| read::query::parse_time(v, name).map_err(|e| e.0))
            .transpose()
    };
    if let (Some(from), Some(to)) = (time("from")?, time("to")?) {
        if from > to {
            return Err("`from` is after `to`; swap them".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn unknown_parameters_big_limits_and_reversed_ranges_are_refused() {
        let takes = vec!["from".to_string(), "to".to_string(), "limit".to_string()];
        assert!(check(&pairs(&[("from", "1795132800000"), ("limit", "10")]), &takes, "GET /x").is_ok());
        let unknown = check(&pairs(&[("country", "DE")]), &takes, "GET /x").unwrap_err();
        assert_eq!(unknown, "GET /x does not take `country`; it takes: from, to, limit");
        assert!(check(&pairs(&[("country", "DE")]), &[], "GET /y").unwrap_err().ends_with("it takes: none"));
        assert!(check(&pairs(&[("limit", "1000000")]), &takes, "GET /x").unwrap_err().contains("at most 1000"));
        let reversed = pairs(&[("from", "2026-11-21T00:00:00Z"), ("to", "2026-11-20T00:00:00Z")]);
        assert!(check(&reversed, &takes, "GET /x").unwrap_err().contains("swap"));
        let seconds = check(&pairs(&[("from", "1795132800")]), &takes, "GET /x").unwrap_err();
        assert!(seconds.contains("milliseconds"), "{seconds}");
        let pages = pairs(&[("from", "/search"), ("to", "(exit)")]);
        assert!(check(&pages, &takes, "GET /api/v1/paths/top").is_ok(), "pages, not times, on the path endpoints");
        let seconds = check(&pairs(&[("from", "1795132800")]), &takes, "GET /api/v1/paths/top").unwrap_err();
        assert!(seconds.contains("milliseconds"), "{seconds}");
    }

    #[test]
    fn every_listed_endpoint_has_its_parameters_read() {
        let timeseries = &TAKES[&("GET".to_string(), "/api/v1/timeseries".to_string())];
        assert_eq!(timeseries, &["metric", "breakdown", "from", "to", "limit"]);
        assert!(TAKES[&("GET".to_string(), "/api/v1/live".to_string())].is_empty());
        assert_eq!(TAKES[&("GET".to_string(), "/api/v1/stream".to_string())], ["views", "coalesce_ms"]);
    }
}
