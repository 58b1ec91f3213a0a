//! Serving the built web player (`client-sdk/web/dist`, a flat directory of `index.html`, `*.js`,
//! `*.css` and source maps) from the edge's and the broker's HTTP servers: which names may be
//! asked for, and the content type each is sent with. The file read itself is the server's.

/// Whether `name` may be served from the player's directory: a plain file name of ASCII
/// letters, digits, `.`, `-` and `_`, not hidden. Paths (`/`, `..`) and anything else are refused.
///
/// ```
/// use edgeplay_protocol::web::player_file_ok;
/// assert!(player_file_ok("player.js"));
/// assert!(!player_file_ok("../broker.key"));
/// assert!(!player_file_ok(".env"));
/// ```
#[must_use]
pub fn player_file_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The content type of a player file, from its extension.
///
/// ```
/// use edgeplay_protocol::web::player_mime;
/// assert_eq!(player_mime("index.html"), "text/html; charset=utf-8");
/// ```
#[must_use]
pub fn player_mime(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("map" | "json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_served() {
        for ok in ["index.html", "player.js", "player.js.map", "a-b_c.css"] {
            assert!(player_file_ok(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "a b",
            "x%2f",
            &"a".repeat(129),
        ] {
            assert!(!player_file_ok(bad), "{bad}");
        }
        assert_eq!(player_mime("player.js"), "text/javascript; charset=utf-8");
        assert_eq!(player_mime("blob"), "application/octet-stream");
    }
}
