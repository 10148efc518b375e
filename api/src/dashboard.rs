//! `GET /`: the live dashboard, one page served from files embedded at build time (`api/web/`),
//! with Apache ECharts embedded by `build.rs` when `scripts/install-web` installed it. The page and
//! its assets hold no data, so they are served without a token; the page asks for one when the API
//! answers 401 and sends it on every request it makes.

use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const CLIENT_JS: &str = include_str!("../web/client.js");
const CHARTS_JS: &str = include_str!("../web/charts.js");
const APP_CSS: &str = include_str!("../web/app.css");
/// Empty when `scripts/install-web` had not run before the build (see `build.rs`).
const ECHARTS_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echarts.min.js"));
/// Served instead of ECharts when it was not embedded: the page checks for `window.echarts`.
const NO_ECHARTS_JS: &str =
    "/* Apache ECharts was not embedded in this build: run scripts/install-web, then build again. */\n";

/// The page may load and connect to its own origin only: nothing is fetched from elsewhere.
/// ECharts sets inline styles on the elements it draws, hence `'unsafe-inline'` for styles only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Asset {
        let etag =
            HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(body))).unwrap_or(HeaderValue::from_static("\"0\""));
        Asset { body, content_type, etag }
    }

    /// `no-cache` with a strong ETag: the browser revalidates every load (a 304 costs a few
    /// bytes), so an upgraded binary's page is never mixed with a cached older script.
    fn respond(&self, request: &HeaderMap) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if self.content_type.starts_with("text/html") {
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        }
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|tag| tag.trim() == self.etag.to_str().unwrap_or_default()));
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (StatusCode::OK, headers, self.body).into_response()
    }
}

/// A content hash for the ETag (FNV-1a: no dependency, and collisions only cost a stale check).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

static INDEX: LazyLock<Asset> = LazyLock::new(|| Asset::new(INDEX_HTML.as_bytes(), "text/html; charset=utf-8"));
static APP: LazyLock<Asset> = LazyLock::new(|| Asset::new(APP_JS.as_bytes(), "text/javascript; charset=utf-8"));
static CLIENT: LazyLock<Asset> = LazyLock::new(|| Asset::new(CLIENT_JS.as_bytes(), "text/javascript; charset=utf-8"));
static CHARTS: LazyLock<Asset> = LazyLock::new(|| Asset::new(CHARTS_JS.as_bytes(), "text/javascript; charset=utf-8"));
static CSS: LazyLock<Asset> = LazyLock::new(|| Asset::new(APP_CSS.as_bytes(), "text/css; charset=utf-8"));
static ECHARTS: LazyLock<Asset> = LazyLock::new(|| {
    let body = if charts_embedded() { ECHARTS_JS } else { NO_ECHARTS_JS.as_bytes() };
    Asset::new(body, "text/javascript; charset=utf-8")
});

/// Whether this build embedded ECharts (`scripts/install-web` ran before it).
fn charts_embedded() -> bool {
    !ECHARTS_JS.is_empty()
}

/// The page and its assets; stateless, so they merge into any router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { INDEX.respond(&h) }))
        .route("/assets/app.js", get(|h: HeaderMap| async move { APP.respond(&h) }))
        .route("/assets/client.js", get(|h: HeaderMap| async move { CLIENT.respond(&h) }))
        .route("/assets/charts.js", get(|h: HeaderMap| async move { CHARTS.respond(&h) }))
        .route("/assets/app.css", get(|h: HeaderMap| async move { CSS.respond(&h) }))
        .route("/assets/echarts.min.js", get(|h: HeaderMap| async move { ECHARTS.respond(&h) }))
        // Browsers ask for it on every page; an empty answer instead of a 404 in the console.
        .route("/favicon.ico", get(|| async { (StatusCode::NO_CONTENT, [(header::CACHE_CONTROL, "max-age=86400")]) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        for src in ["assets/app.css", "assets/echarts.min.js", "assets/client.js", "assets/charts.js", "assets/app.js"]
        {
            assert!(INDEX_HTML.contains(src), "index.html loads {src}");
        }
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"), "no CDN: the page works offline");
        assert!(!CLIENT_JS.contains("new EventSource"), "the stream is read with fetch, so the token goes in a header");
    }

    #[test]
    fn etags_follow_the_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(Asset::new(b"x", "text/css").etag, Asset::new(b"x", "text/css").etag);
    }
}
