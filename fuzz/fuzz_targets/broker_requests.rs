//! The broker's request decoders on hostile bytes: session requests, selections, edge
//! registrations, heartbeats and session-end reports must never panic; what they accept must meet the checks the
//! handlers rely on (names, coordinates, frame sizes and rates in range, finite RTTs, strict
//! resolutions, 64-byte signatures), every refusal is a 400 or 413 with a sentence, and a
//! signed message's unsigned part must re-encode without its `signature`.
#![no_main]

use edgeplay_broker::requests::{self, canonical_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = requests::session_request(data) {
        assert!(!r.player.is_empty() && r.player.len() <= 64);
        assert!(r.coord.is_none_or(|c| c.is_valid()));
        assert!(r.coord.is_some() || r.region.is_some());
        let dim = 1..=requests::MAX_DIMENSION;
        assert!(dim.contains(&r.width) && dim.contains(&r.height));
        assert!((1..=requests::MAX_FPS).contains(&r.fps));
    }
    if let Ok(r) = requests::select_request(data) {
        assert!((1..=requests::MAX_MEASURED).contains(&r.measured.len()));
        assert!(
            r.measured
                .iter()
                .all(|m| m.rtt_ms.is_finite() && m.rtt_ms >= 0.0)
        );
    }
    if let Ok(s) = requests::registration(data) {
        assert!(s.msg.capacity > 0 && s.msg.coord.is_valid());
        assert!((1..=requests::MAX_FPS).contains(&s.msg.max_fps));
        assert!(
            s.msg
                .resolutions
                .iter()
                .all(|r| requests::resolution(r).is_some())
        );
        assert!(!canonical_json(&s.unsigned).contains("\"signature\":"));
    }
    if let Ok(s) = requests::heartbeat(data) {
        assert!(s.unsigned.get("signature").is_none());
    }
    if let Ok(s) = requests::ended_report(data) {
        assert!(s.unsigned.get("signature").is_none());
        assert!(s.msg.report().check().is_ok());
    }
    for e in [
        requests::session_request(data).err(),
        requests::select_request(data).err(),
        requests::registration(data).err(),
        requests::heartbeat(data).err(),
        requests::ended_report(data).err(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(e.status == 400 || e.status == 413);
        assert!(!e.message.is_empty());
    }
});
