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
    player_type(name).unwrap_or("application/octet-stream")
}

/// The content type of the player's own kinds of files (its page, code, styles and source
/// maps, text with a charset), or `None` for any other extension.
///
/// ```
/// use edgeplay_protocol::web::player_type;
/// assert_eq!(player_type("player.css"), Some("text/css; charset=utf-8"));
/// assert_eq!(player_type("logo.png"), None);
/// ```
#[must_use]
pub fn player_type(name: &str) -> Option<&'static str> {
    match name.rsplit('.').next()? {
        "html" => Some("text/html; charset=utf-8"),
        "js" => Some("text/javascript; charset=utf-8"),
        "css" => Some("text/css; charset=utf-8"),
        "map" | "json" => Some("application/json"),
        _ => None,
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
        assert_eq!(player_mime("index.html"), "text/html; charset=utf-8");
        assert_eq!(player_mime("player.js"), "text/javascript; charset=utf-8");
        assert_eq!(player_mime("blob"), "application/octet-stream");
    }
}
