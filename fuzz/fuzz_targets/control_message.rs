//! The QUIC control stream decoder on arbitrary bytes: never panics, and every message that
//! decodes survives an encode and decode unchanged.
#![no_main]

use edgeplay_protocol::media::ControlMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Ok(Some((msg, used))) = ControlMessage::decode_frame(&data[at..]) {
        let mut out = Vec::new();
        msg.encode(&mut out).expect("a decoded message encodes");
        assert_eq!(ControlMessage::decode_frame(&out), Ok(Some((msg, out.len()))));
        at += used;
    }
});
