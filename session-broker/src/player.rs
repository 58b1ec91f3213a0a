//! `GET /play/`: the web player (`client-sdk/web/dist`), when the broker is run with
//! `--player-dir`, so that a player needs nothing but the broker's address:
//! `http://BROKER/play/?broker=http://BROKER` asks this broker for a session, probes the
//! candidates and plays through its WHEP relay.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use edgeplay_protocol::web::{player_file_ok, player_mime};

/// The player's routes over the files in `dir`.
pub fn routes(dir: PathBuf) -> Router {
    let dir = Arc::new(dir);
    Router::new()
        .route(
            "/play",
            get(|s: State<Arc<PathBuf>>| file(s, Path("index.html".to_owned()))),
        )
        .route(
            "/play/",
            get(|s: State<Arc<PathBuf>>| file(s, Path("index.html".to_owned()))),
        )
        .route("/play/{file}", get(file))
        .with_state(dir)
}

async fn file(State(dir): State<Arc<PathBuf>>, Path(name): Path<String>) -> Response {
    if !player_file_ok(&name) {
        return (StatusCode::NOT_FOUND, format!("no player file `{name}`")).into_response();
    }
    let path = dir.join(&name);
    let read = path.clone();
    match tokio::task::spawn_blocking(move || std::fs::read(read)).await {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, player_mime(&name))], bytes).into_response(),
        Ok(Err(e)) => (
            StatusCode::NOT_FOUND,
            format!(
                "cannot read the web player's `{}`: {e}; build it with `npm run build` in client-sdk/web (or `cargo xtask setup`) and pass its dist/ as --player-dir",
                path.display()
            ),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
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
        let dir = std::env::temp_dir().join(format!("edgeplay-player-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "<!doctype html>").unwrap();
        std::fs::write(dir.join("player.js"), "export {}").unwrap();
        let r = routes(dir.clone());
        for uri in ["/play", "/play/", "/play/index.html"] {
            let (st, ct, body) = get(&r, uri).await;
            assert_eq!(st, StatusCode::OK, "{uri}");
            assert!(ct.starts_with("text/html"), "{uri}: {ct}");
            assert_eq!(body, "<!doctype html>");
        }
        let (st, ct, _) = get(&r, "/play/player.js").await;
        assert_eq!(
            (st, ct.starts_with("text/javascript")),
            (StatusCode::OK, true)
        );
        for uri in ["/play/..%2fbroker.key", "/play/.hidden", "/play/missing.js"] {
            let (st, _, body) = get(&r, uri).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{uri}: {body}");
        }
        let (_, _, body) = get(&r, "/play/missing.js").await;
        assert!(body.contains("npm run build"), "{body}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
