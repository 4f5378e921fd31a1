//! The web trace explorer: a small single-page application (plain ES modules,
//! no build step) embedded in the binary and served from the query port.
//!
//! The pages talk only to the public HTTP API (`/api/v1/*`); this crate
//! serves files and nothing else. Page URLs (`/search`, `/trace/{id}`,
//! `/logs`, `/map`, `/sql`, `/analysis`, `/demo`) all answer with `index.html`, so a shared link
//! opens the page it names.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "assets/"]
struct Assets;

/// Where the pages come from: the copy built into the binary, or a directory
/// on disk (`WEFT_UI_DIR`) so the UI can be edited without rebuilding weft.
#[derive(Debug, Clone)]
enum Source {
    Embedded,
    Directory(PathBuf),
}

/// An asset ready to serve.
struct Asset {
    body: Cow<'static, [u8]>,
    etag: String,
    content_type: String,
}

impl Source {
    fn from_env() -> Self {
        match std::env::var_os("WEFT_UI_DIR") {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                tracing::warn!(dir = %dir.display(), "serving the UI from a directory (WEFT_UI_DIR), not the built-in copy");
                Source::Directory(dir)
            }
            _ => Source::Embedded,
        }
    }

    fn get(&self, path: &str) -> Option<Asset> {
        let content_type = mime_guess::from_path(path)
            .first_or_octet_stream()
            .to_string();
        match self {
            Source::Embedded => {
                let file = Assets::get(path)?;
                Some(Asset {
                    etag: format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16])),
                    body: file.data,
                    content_type,
                })
            }
            Source::Directory(dir) => {
                // Only plain relative paths: no `..`, no absolute paths.
                if path
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..")
                {
                    return None;
                }
                let body = std::fs::read(dir.join(path)).ok()?;
                Some(Asset {
                    etag: format!("\"dev-{}\"", body.len()),
                    body: Cow::Owned(body),
                    content_type,
                })
            }
        }
    }
}

/// The UI's routes, for the query server to merge beside the API.
pub fn router() -> Router {
    let source = Arc::new(Source::from_env());
    Router::new()
        .route("/", get(page))
        .route("/search", get(page))
        .route("/trace/{trace_id}", get(page))
        .route("/logs", get(page))
        .route("/map", get(page))
        .route("/sql", get(page))
        .route("/analysis", get(page))
        .route("/demo", get(page))
        .route("/ui/{*path}", get(asset))
        .with_state(source)
}

async fn page(State(source): State<Arc<Source>>, headers: HeaderMap) -> Response {
    serve(&source, "index.html", &headers)
}

async fn asset(
    State(source): State<Arc<Source>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&source, &path, &headers)
}

fn serve(source: &Source, path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = source.get(path) else {
        return (StatusCode::NOT_FOUND, format!("no UI file {path:?}\n")).into_response();
    };
    // File names carry no content hash, so browsers revalidate every time;
    // the ETag makes that a 304 without a body.
    let cache = [
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    let etag = HeaderValue::from_str(&asset.etag).unwrap_or(HeaderValue::from_static("\"\""));
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tag| tag == etag)
    {
        return (StatusCode::NOT_MODIFIED, cache, [(header::ETAG, etag)]).into_response();
    }
    (
        cache,
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_str(&asset.content_type)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            ),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn page_urls_serve_the_application() {
        for path in [
            "/",
            "/search",
            "/trace/abc",
            "/logs",
            "/map",
            "/sql",
            "/analysis",
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(std::str::from_utf8(&body).unwrap().contains("/ui/app.js"));
        }
    }

    #[tokio::test]
    async fn assets_have_types_and_revalidate_with_etags() {
        let response = get("/ui/app.js", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/javascript");
        let etag = response.headers()[header::ETAG]
            .to_str()
            .unwrap()
            .to_string();
        let again = get("/ui/app.js", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            get("/ui/missing.js", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn a_directory_source_refuses_paths_outside_it() {
        let source = Source::Directory(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets"));
        assert!(source.get("app.js").is_some());
        assert!(source.get("../Cargo.toml").is_none());
        assert!(source.get("/etc/passwd").is_none());
    }
}
