//! The built web player (`client-sdk/web/dist`, a flat directory of `index.html`, `*.js`, `*.css`
//! and source maps) at `/play` and `/play/` (its `index.html`) and `/play/{file}`, read by
//! tower-http's `ServeDir` (streamed, with ranges, conditional requests and HEAD).
//!
//! Only plain file names are served: ASCII letters, digits, `.`, `-` and `_`, not hidden, at most
//! 128 bytes; anything else, a directory or a missing file is a 404 that says what to do. Each
//! file goes out with the content type of its extension (UTF-8 text for the page and its code).

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::{self, Request};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use edgeplay_protocol::web::{player_file_ok, player_mime};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use super::AppError;

/// The player's routes, serving the files in `dir`.
pub(super) fn routes<S: Clone + Send + Sync + 'static>(dir: &Path) -> Router<S> {
    let files = Files {
        dir: dir.to_path_buf(),
        serve: ServeDir::new(dir).append_index_html_on_directories(false),
    };
    let index = {
        let files = files.clone();
        move |req: Request| {
            let files = files.clone();
            async move { files.serve("index.html".to_owned(), req).await }
        }
    };
    let file = move |extract::Path(file): extract::Path<String>, req: Request| {
        let files = files.clone();
        async move { files.serve(file, req).await }
    };
    Router::new()
        .route("/play", get(index.clone()))
        .route("/play/", get(index))
        .route("/play/{file}", get(file))
}

#[derive(Clone, Debug)]
struct Files {
    dir: PathBuf,
    serve: ServeDir,
}

impl Files {
    async fn serve(&self, file: String, mut req: Request) -> Response {
        if !player_file_ok(&file) {
            return AppError(StatusCode::NOT_FOUND, format!("no player file `{file}`"))
                .into_response();
        }
        // A plain name is a valid URI path as it is.
        let Ok(uri) = Uri::builder().path_and_query(format!("/{file}")).build() else {
            return AppError(StatusCode::NOT_FOUND, format!("no player file `{file}`"))
                .into_response();
        };
        *req.uri_mut() = uri;
        let Ok(resp) = self.serve.clone().oneshot(req).await;
        let mut resp = resp.map(Body::new);
        match resp.status() {
            StatusCode::NOT_FOUND => AppError(
                StatusCode::NOT_FOUND,
                format!(
                    "cannot read the web player's `{}`: no such file; build it with `cargo xtask setup` (or `npm run build` in client-sdk/web)",
                    self.dir.join(&file).display()
                ),
            )
            .into_response(),
            s if s.is_success() => {
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(player_mime(&file)),
                );
                resp
            }
            _ => resp,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    async fn get(app: &Router, path: &str) -> (StatusCode, Option<String>, String) {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn files_go_out_with_their_types_and_the_rest_is_refused() {
        let dir = std::env::temp_dir().join(format!("edgeplay-player-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), "<!doctype html>").unwrap();
        std::fs::write(dir.join("player.js"), "export {};").unwrap();
        std::fs::write(dir.join("player.js.map"), "{}").unwrap();
        std::fs::write(dir.join(".env"), "secret").unwrap();
        let app: Router = routes(&dir);

        for path in ["/play", "/play/", "/play/index.html"] {
            let (status, ct, body) = get(&app, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(ct.as_deref(), Some("text/html; charset=utf-8"), "{path}");
            assert_eq!(body, "<!doctype html>");
        }
        let (status, ct, body) = get(&app, "/play/player.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("text/javascript; charset=utf-8"));
        assert_eq!(body, "export {};");
        let (_, ct, _) = get(&app, "/play/player.js.map").await;
        assert_eq!(ct.as_deref(), Some("application/json"));

        for refused in ["/play/.env", "/play/..%2Fx", "/play/a%20b", "/play/sub"] {
            let (status, ct, body) = get(&app, refused).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
            assert_eq!(ct.as_deref(), Some("application/json"), "{refused}");
            assert!(body.contains("\"error\""), "{refused}: {body}");
        }
        let (status, _, body) = get(&app, "/play/missing.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("cargo xtask setup"), "{body}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
