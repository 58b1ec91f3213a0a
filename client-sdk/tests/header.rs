//! The committed C header matches what cbindgen generates from `src/ffi.rs`.

use std::path::Path;

#[test]
fn committed_header_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi.rs"))
        .generate()
        .expect("cbindgen reads src/ffi.rs")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8 header");
    let path = root.join("include/edgeplay.h");
    if std::env::var_os("EDGEPLAY_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/edgeplay.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/edgeplay.h is stale: run `EDGEPLAY_BLESS=1 cargo test -p edgeplay-client --test \
         header` and commit it"
    );
    for symbol in [
        "ep_client_connect",
        "ep_session_next_frame",
        "ep_frame_release",
        "ep_session_send_input",
        "ep_session_request_keyframe",
        "ep_session_stats",
        "ep_session_close",
        "ep_last_error",
        "EP_STATUS_TIMEOUT",
        "EP_INPUT_KIND_KEY",
    ] {
        assert!(generated.contains(symbol), "the header declares {symbol}");
    }
}
