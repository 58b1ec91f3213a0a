//! `Catalogue::parse` (the edge's app catalogue, a TOML file an edge owner writes) and the mode
//! strings inside it, on arbitrary bytes: errors, never a panic. No command is found on an empty
//! search path, so entries that name bare programs are refused; absolute paths are checked on
//! the machine as they would be at start-up.
#![no_main]

use std::path::Path;

use edgeplay_host::catalogue::Catalogue;
use edgeplay_protocol::mode::Mode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(mode) = text.parse::<Mode>() {
        assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
    }
    if let Ok(cat) = Catalogue::parse(&text, Path::new("fuzz.toml"), std::ffi::OsStr::new("")) {
        assert_eq!(cat.apps()[0].id, "builtin");
        for app in cat.apps() {
            assert!(!app.modes.is_empty());
        }
    }
});
