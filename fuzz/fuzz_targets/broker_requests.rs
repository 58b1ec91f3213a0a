//! The broker's request decoders on hostile bytes: session requests, selections, edge
//! registrations and heartbeats must never panic; what they accept must meet the checks the
//! handlers rely on (names and coordinates in range, finite RTTs, 64-byte signatures), and a
//! signed message's unsigned part must re-encode without its `signature`.
#![no_main]

use edgeplay_broker::requests::{self, canonical_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = requests::session_request(data) {
        assert!(!r.player.is_empty() && r.player.len() <= 64);
        assert!(r.coord.is_none_or(|c| c.is_valid()));
    }
    if let Ok(r) = requests::select_request(data) {
        assert!(r.measured.len() <= 64);
        assert!(r.measured.iter().all(|m| m.rtt_ms.is_finite() && m.rtt_ms >= 0.0));
    }
    if let Ok(s) = requests::registration(data) {
        assert!(s.msg.capacity > 0 && s.msg.coord.is_valid());
        assert!(!canonical_json(&s.unsigned).contains("\"signature\":"));
    }
    if let Ok(s) = requests::heartbeat(data) {
        assert!(s.unsigned.get("signature").is_none());
    }
    for e in [
        requests::session_request(data).err(),
        requests::heartbeat(data).err(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(e.status == 400 || e.status == 413);
        assert!(!e.message.is_empty());
    }
});
