//! The edge link's decoders on arbitrary bytes: the frame reader (fed in uneven chunks, as a
//! socket would), the broker list an edge takes from a `brokers` message, and the HTTP response
//! head the link's upgrade and the SDK read. Never panics; every message that decodes encodes
//! and decodes again (JSON numbers may move by an ulp, so equality is not asked); the usable
//! broker addresses are bounded, distinct, and check again as they are; session reports
//! (`ended`, `running`) pass the broker's checks only in range.
#![no_main]

use edgeplay_protocol::link::{
    FrameReader, LinkMessage, MAX_BROKERS, broker_hostports, encode_frame, http_hostport,
    parse_http_head,
};
use edgeplay_protocol::lifecycle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(h)) = parse_http_head(data) {
        assert!(h.len <= data.len());
    }
    let mut r = FrameReader::default();
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for chunk in data.chunks(step) {
        r.push(chunk);
        loop {
            match r.next_message() {
                Ok(Some(m)) => {
                    // Session reports: the checks the broker applies never panic, and what
                    // passes them is in range.
                    match &m {
                        LinkMessage::Ended { report } => {
                            if report.check().is_ok() {
                                assert!(report.bytes <= lifecycle::MAX_REPORTED);
                                assert!(report.duration_ms <= lifecycle::MAX_REPORTED);
                            }
                        }
                        LinkMessage::Running { sessions } => {
                            if lifecycle::check_running(sessions, 8).is_ok() {
                                assert!(sessions.len() <= 8);
                            }
                        }
                        _ => {}
                    }
                    if let LinkMessage::Brokers { brokers } = &m {
                        let usable = broker_hostports(brokers);
                        assert!(usable.len() <= MAX_BROKERS);
                        for (i, hp) in usable.iter().enumerate() {
                            assert_eq!(http_hostport(hp).as_deref(), Some(hp.as_str()));
                            assert!(!usable[..i].contains(hp));
                        }
                    }
                    let frame = encode_frame(&m).expect("a decoded message encodes");
                    let mut again = FrameReader::default();
                    again.push(&frame);
                    assert!(matches!(again.next_message(), Ok(Some(_))));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
