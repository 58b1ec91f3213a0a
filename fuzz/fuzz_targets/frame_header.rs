//! The QUIC frame header, audio header and datagram decoders on arbitrary bytes: never panic,
//! and whatever decodes survives an encode and decode unchanged.
#![no_main]

use edgeplay_protocol::media::{AudioHeader, Datagram, FrameHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = FrameHeader::decode(data) {
        assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
    }
    if let Ok(h) = AudioHeader::decode(data) {
        assert_eq!(AudioHeader::decode(&h.encode()), Ok(h));
    }
    if let Ok(d) = Datagram::decode(data) {
        assert_eq!(Datagram::decode(&d.encode()), Ok(d));
    }
});
