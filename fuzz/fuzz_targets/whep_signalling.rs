//! The WHEP request decoders on arbitrary bytes: the offer check, the H.264 profile choice, the
//! trickle-ICE fragment parser and the ICE-restart SDP rewriting must never panic; an accepted offer is the input
//! text unchanged, and a restart offer carries the new credentials and no old candidate.
#![no_main]

use edgeplay_protocol::whep::{
    H264Profile, check_offer, h264_profile, parse_fragment, restart_answer_fragment, restart_offer,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = check_offer(data) {
        assert_eq!(sdp.as_bytes(), data);
    }
    let frag = parse_fragment(data);
    if let Ok(text) = std::str::from_utf8(data) {
        // High only from a profile-level-id that starts with 64.
        let profile = h264_profile(text);
        assert!(profile == H264Profile::ConstrainedBaseline || text.contains("64"));
        let candidates = frag.map(|f| f.candidates).unwrap_or_default();
        if let Ok(offer) = restart_offer(text, "fuzzufrag", "fuzzpasswordfuzzpassword", &candidates)
        {
            assert!(!offer.lines().any(|l| l == "a=end-of-candidates"));
            for line in offer.lines() {
                if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
                    assert_eq!(u, "fuzzufrag");
                }
            }
        }
        if let Ok(f) = restart_answer_fragment(text) {
            assert!(f.ends_with("a=end-of-candidates\r\n"));
        }
    }
});
