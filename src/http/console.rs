//! The web console: one page and its scripts, built into the binary so that
//! it needs no CDN and no build step, served under `/console` (public, like
//! `/docs`: the page itself asks for a key). The files live in `console/`.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use tower_http::compression::CompressionLayer;

use super::AppState;
use super::error::ApiError;

/// What the console's pages may load: their own origin only, so no event
/// data shown in them can reach another site, and no script but the
/// console's own runs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// A file of the console: its path under `/console/`, media type and bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

/// Declares the console's files, each read from `console/` at build time.
macro_rules! assets {
    ($($path:literal => $media_type:literal),* $(,)?) => {
        &[$(Asset {
            path: $path,
            media_type: $media_type,
            bytes: include_bytes!(concat!("../../console/", $path)),
        }),*]
    };
}

/// Every file the console loads.
const ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "ui.js" => "text/javascript; charset=utf-8",
    "chart.js" => "text/javascript; charset=utf-8",
    "views/browse.js" => "text/javascript; charset=utf-8",
    "views/live.js" => "text/javascript; charset=utf-8",
    "views/subscriptions.js" => "text/javascript; charset=utf-8",
    "views/metrics.js" => "text/javascript; charset=utf-8",
    "views/admin.js" => "text/javascript; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
};

/// Each asset's entity tag (a digest of its bytes), computed once, so a
/// browser revalidates with `If-None-Match` and gets `304` on a slow link.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header")
        })
        .collect()
});

/// The console's routes, compressed for browsers that take gzip.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(page))
        .route("/console/", get(page))
        .route("/console/{*path}", get(file))
        .layer(CompressionLayer::new())
}

/// The console's page.
async fn page(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// One of the console's files; `404` for any other path.
async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// Answers an asset, or `304` when the browser holds it already.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|asset| asset.path == path) else {
        return ApiError::NotFound(format!("the console has no file {path:?}")).into_response();
    };
    let asset = &ASSETS[index];
    let etag = ETAGS[index].clone();
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if headers.get(header::IF_NONE_MATCH) == Some(&etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.media_type),
        )],
        asset.bytes,
    )
        .into_response()
}
