//! `GET /play/`: the web player (`client-sdk/web/dist`, a flat directory of `index.html`,
//! `*.js`, `*.css` and source maps), when the broker is run with `--player-dir`, so that a
//! player needs nothing but the broker's address: `http://BROKER/play/?broker=http://BROKER`
//! asks this broker for a session, probes the candidates and plays through its WHEP relay.
//!
//! tower-http's [`ServeDir`] reads the files (with `HEAD`, ranges and conditional requests).
//! Only plain file names of the directory itself are asked of it: `/play` and `/play/` are its
//! `index.html`, `/play/{file}` a file whose name is ASCII letters, digits, `.`, `-` and `_`,
//! not hidden; anything else (paths, `..`, encoded separators, dot files) is refused with 404.
//! The player's own types are sent with a charset, whatever the MIME table says.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use edgeplay_protocol::web::{player_file_ok, player_type};
use tower_http::services::ServeDir;

#[derive(Debug)]
struct Player {
    dir: PathBuf,
    files: ServeDir,
}

/// The player's routes over the files in `dir`.
pub fn routes(dir: PathBuf) -> Router {
    let files = ServeDir::new(&dir)
        .append_index_html_on_directories(false)
        .redirect_to_trailing_slash(false);
    Router::new()
        .route("/play", get(index))
        .route("/play/", get(index))
        .route("/play/{file}", get(file))
        .with_state(Arc::new(Player { dir, files }))
}

async fn index(State(p): State<Arc<Player>>, req: Request) -> Response {
    serve(&p, "index.html", req).await
}

async fn file(State(p): State<Arc<Player>>, Path(name): Path<String>, req: Request) -> Response {
    serve(&p, &name, req).await
}

async fn serve(p: &Player, name: &str, mut req: Request) -> Response {
    let uri = format!("/{name}");
    let Some(uri) = player_file_ok(name)
        .then(|| Uri::try_from(uri).ok())
        .flatten()
    else {
        return (StatusCode::NOT_FOUND, format!("no player file `{name}`")).into_response();
    };
    *req.uri_mut() = uri;
    let missing = |why: &str| {
        (
            StatusCode::NOT_FOUND,
            format!(
                "cannot read the web player's `{}`: {why}; build it with `npm run build` in client-sdk/web (or `cargo xtask setup`) and pass its dist/ as --player-dir",
                p.dir.join(name).display()
            ),
        )
            .into_response()
    };
    let mut resp = match p.files.clone().try_call(req).await {
        Ok(r) if r.status() == StatusCode::NOT_FOUND => return missing("no such file"),
        Ok(r) => r.map(Body::new),
        Err(e) => return missing(&e.to_string()),
    };
    let ok = resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED;
    if let Some(ct) = player_type(name).filter(|_| ok) {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(r: &Router, uri: &str) -> (StatusCode, String, String) {
        let resp = r
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn serves_the_player_and_nothing_else() {
        let base = std::env::temp_dir().join(format!("edgeplay-player-{}", std::process::id()));
        let dir = base.join("dist");
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("index.html"), "<!doctype html>").unwrap();
        std::fs::write(dir.join("player.js"), "export {}").unwrap();
        std::fs::write(dir.join("player.css"), "body {}").unwrap();
        std::fs::write(dir.join("player.js.map"), "{}").unwrap();
        std::fs::write(dir.join(".hidden"), "secret").unwrap();
        std::fs::write(dir.join("assets").join("x.js"), "nested").unwrap();
        std::fs::write(base.join("broker.key"), "secret").unwrap();
        let r = routes(dir.clone());
        for uri in [
            "/play",
            "/play/",
            "/play/index.html",
            "/play/?broker=http://b",
        ] {
            let (st, ct, body) = get(&r, uri).await;
            assert_eq!(st, StatusCode::OK, "{uri}");
            assert_eq!(ct, "text/html; charset=utf-8", "{uri}");
            assert_eq!(body, "<!doctype html>");
        }
        for (uri, want) in [
            ("/play/player.js", "text/javascript; charset=utf-8"),
            ("/play/player.css", "text/css; charset=utf-8"),
            ("/play/player.js.map", "application/json"),
        ] {
            let (st, ct, _) = get(&r, uri).await;
            assert_eq!((st, ct.as_str()), (StatusCode::OK, want), "{uri}");
        }
        for uri in [
            "/play/..%2fbroker.key",
            "/play/%2e%2e%2fbroker.key",
            "/play/..",
            "/play/.hidden",
            "/play/assets",
            "/play/assets/x.js",
            "/play/assets%2fx.js",
            "/play/missing.js",
        ] {
            let (st, _, body) = get(&r, uri).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{uri}: {body}");
            assert!(
                !body.contains("secret") && !body.contains("nested"),
                "{uri}"
            );
        }
        let (_, _, body) = get(&r, "/play/missing.js").await;
        assert!(body.contains("npm run build"), "{body}");
        let _ = std::fs::remove_dir_all(&base);
    }
}
