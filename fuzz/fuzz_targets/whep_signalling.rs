//! The WHEP request decoders on arbitrary bytes: the offer check and the trickle-ICE fragment
//! parser must never panic, and an accepted offer is the input text unchanged.
#![no_main]

use edgeplay_protocol::whep::{check_offer, fragment_candidates, fragment_ufrag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = check_offer(data) {
        assert_eq!(sdp.as_bytes(), data);
    }
    let _ = fragment_candidates(data);
    let _ = fragment_ufrag(data);
});
