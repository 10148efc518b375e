//! API tokens: a read token (dashboards, REST consumers) and an admin token (definitions, rules,
//! silences), from the environment only. With either set, every endpoint but the health checks
//! needs a token: reads the read or the admin token, writes the admin token. Compared in constant
//! time and never logged. Without tokens the API is open, so the server only serves it on
//! loopback (see `ApiConfig::check_exposure`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::ApiError;

pub const READ_TOKEN_ENV: &str = "CLICKFLOW_READ_TOKEN";
pub const ADMIN_TOKEN_ENV: &str = "CLICKFLOW_ADMIN_TOKEN";

/// Endpoints that answer without a token: a load balancer's health checks.
const OPEN: [&str; 2] = ["/healthz", "/readyz"];

#[derive(Clone, Default)]
pub struct Tokens {
    read: Option<String>,
    admin: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("read", &self.read.is_some()).field("admin", &self.admin.is_some()).finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Admin,
}

impl Tokens {
    /// Empty values count as unset.
    pub fn new(read: Option<String>, admin: Option<String>) -> Tokens {
        let set = |t: Option<String>| t.filter(|t| !t.is_empty());
        Tokens { read: set(read), admin: set(admin) }
    }

    pub fn from_env() -> Tokens {
        Tokens::new(std::env::var(READ_TOKEN_ENV).ok(), std::env::var(ADMIN_TOKEN_ENV).ok())
    }

    /// Whether the API asks for tokens at all.
    pub fn enabled(&self) -> bool {
        self.read.is_some() || self.admin.is_some()
    }

    /// What `presented` grants: the admin token grants everything.
    fn grants(&self, presented: &str) -> Option<Access> {
        let matches =
            |t: &Option<String>| t.as_ref().is_some_and(|t| bool::from(t.as_bytes().ct_eq(presented.as_bytes())));
        if matches(&self.admin) {
            Some(Access::Admin)
        } else if matches(&self.read) {
            Some(Access::Read)
        } else {
            None
        }
    }
}

/// The middleware in front of the API's routes.
pub async fn require_token(State(tokens): State<Arc<Tokens>>, request: Request, next: Next) -> Response {
    if !tokens.enabled() || OPEN.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let needed = match *request.method() {
        Method::GET | Method::HEAD | Method::OPTIONS => Access::Read,
        _ => Access::Admin,
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match (presented.map(|p| tokens.grants(p)), needed) {
        (Some(Some(Access::Admin)), _) | (Some(Some(Access::Read)), Access::Read) => next.run(request).await,
        (Some(Some(Access::Read)), Access::Admin) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} {} changes the engine: it needs the admin token ({ADMIN_TOKEN_ENV}), not the read token",
                request.method(),
                request.uri().path()
            ),
        )
        .into_response(),
        (None, _) | (Some(None), _) => {
            let which = match needed {
                Access::Read => format!("the read token ({READ_TOKEN_ENV}) or the admin token"),
                Access::Admin => format!("the admin token ({ADMIN_TOKEN_ENV})"),
            };
            let what = if presented.is_some() { "the token sent is not valid" } else { "no token was sent" };
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("{what}; this endpoint needs {which} as `Authorization: Bearer <token>`"),
            )
            .into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_grants_everything_the_read_token_reads_and_empty_is_unset() {
        let t = Tokens::new(Some("r3ad".into()), Some("adm1n".into()));
        assert_eq!(t.grants("adm1n"), Some(Access::Admin));
        assert_eq!(t.grants("r3ad"), Some(Access::Read));
        assert_eq!(t.grants("r3a"), None);
        assert_eq!(t.grants(""), None);
        assert!(!Tokens::new(Some(String::new()), None).enabled());
        assert!(!format!("{t:?}").contains("adm1n"), "never in logs");
    }
}
