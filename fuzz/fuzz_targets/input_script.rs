//! `parse_script` on arbitrary bytes: valid UTF-8 as it is, anything else lossily converted (the
//! caller reads files with `String::from_utf8_lossy` or rejects them; both reach this).
#![no_main]

use edgeplay_protocol::input::{format_script, parse_script};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(inputs) = parse_script(&text) {
        // Whatever parses must survive a write and re-read unchanged.
        let again = parse_script(&format_script(&inputs)).expect("formatted script parses");
        assert_eq!(again, inputs);
    }
});
