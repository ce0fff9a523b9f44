//! The dashboard's stylesheet and script, embedded in the binary. Pages link them with a
//! content hash in the URL, so browsers may cache them for good.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("../assets/app.css");
const JS: &str = include_str!("../assets/app.js");

const CSS_HASH: u64 = fnv1a(CSS.as_bytes());
const JS_HASH: u64 = fnv1a(JS.as_bytes());

/// FNV-1a: enough to tell one build's asset from another's.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// The URL of an asset, with its version.
pub(crate) fn url(name: &str) -> String {
    let hash = match name {
        "app.css" => CSS_HASH,
        _ => JS_HASH,
    };
    format!("/ui/assets/{name}?v={hash:016x}")
}

pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}
