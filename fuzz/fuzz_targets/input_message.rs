//! The data-channel input decoder on arbitrary bytes: never panics, and whatever decodes
//! survives an encode and decode unchanged.
#![no_main]

use edgeplay_protocol::whep::InputMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = InputMessage::decode(data) {
        let text = serde_json::to_vec(&msg).expect("an input encodes");
        assert_eq!(InputMessage::decode(&text), Ok(msg));
    }
});
