//! The C ABI's checks that need no edge: pointers, arguments, panics.

use super::*;

fn last_error() -> String {
    let p = ep_last_error();
    assert!(!p.is_null(), "a failure leaves a message");
    // SAFETY: a NUL-terminated string owned by this thread's last error.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
}

#[test]
fn null_pointers_are_refused_with_a_message() {
    // SAFETY: NULL is allowed for every pointer argument.
    unsafe {
        let mut frame = EpFrame::empty();
        assert_eq!(
            ep_session_next_frame(std::ptr::null_mut(), 0, &raw mut frame),
            EpStatus::NullPointer
        );
        assert!(last_error().contains("`session` is NULL"));
        assert_eq!(ep_last_status(), EpStatus::NullPointer);
        assert!(frame.y.is_null() && frame.reserved.is_null());
        assert_eq!(
            ep_session_next_frame(std::ptr::null_mut(), 0, std::ptr::null_mut()),
            EpStatus::NullPointer
        );
        assert!(last_error().contains("`out` is NULL"));
        let mut stats = EpStats::default();
        assert_eq!(
            ep_session_stats(std::ptr::null_mut(), &raw mut stats),
            EpStatus::NullPointer
        );
        assert_eq!(
            ep_session_send_input(std::ptr::null_mut(), std::ptr::null(), std::ptr::null_mut()),
            EpStatus::NullPointer
        );
        assert_eq!(
            ep_session_request_keyframe(std::ptr::null_mut()),
            EpStatus::NullPointer
        );
        assert!(
            ep_client_connect(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null()
            )
            .is_null()
        );
        assert!(last_error().contains("`addr` is NULL"));
        // Releasing NULL, an empty frame, or closing NULL is fine.
        ep_frame_release(std::ptr::null_mut());
        ep_frame_release(&raw mut frame);
        assert_eq!(ep_session_close(std::ptr::null_mut()), EpStatus::Ok);
    }
}

#[test]
fn malformed_connect_arguments_fail_before_any_network() {
    let addr = c"127.0.0.1:9";
    let token = c"token";
    // SAFETY: NUL-terminated strings and NULL options.
    let s = unsafe {
        ep_client_connect(
            addr.as_ptr(),
            c"xyz".as_ptr(),
            token.as_ptr(),
            std::ptr::null(),
        )
    };
    assert!(s.is_null());
    assert_eq!(ep_last_status(), EpStatus::InvalidArgument);
    assert!(last_error().contains("is not 64 hex digits"));

    let fp = CString::new("ab".repeat(32)).unwrap();
    // SAFETY: as above.
    let s = unsafe {
        ep_client_connect(
            c"nowhere".as_ptr(),
            fp.as_ptr(),
            token.as_ptr(),
            std::ptr::null(),
        )
    };
    assert!(s.is_null());
    assert_eq!(ep_last_status(), EpStatus::InvalidArgument);
    assert!(last_error().contains("is not a host:port address"));

    let not_utf8 = [0xffu8, 0xfe, 0];
    // SAFETY: as above.
    let s = unsafe {
        ep_client_connect(
            not_utf8.as_ptr().cast(),
            fp.as_ptr(),
            token.as_ptr(),
            std::ptr::null(),
        )
    };
    assert!(s.is_null());
    assert!(last_error().contains("`addr` is not UTF-8"));
}

#[test]
fn c_inputs_become_protocol_events_or_clear_errors() {
    let input = |kind: EpInputKind| EpInput {
        kind: kind as u32,
        key: std::ptr::null(),
        dx: 3,
        dy: -4,
        index: 2,
        value: -32768,
        down: 1,
    };
    // SAFETY: `key` is NULL or a NUL-terminated literal below.
    unsafe {
        let mut key = input(EpInputKind::Key);
        key.key = c"ArrowUp".as_ptr();
        assert_eq!(
            event_of(&key).unwrap(),
            InputEvent::Key {
                code: Key::ArrowUp,
                down: true
            }
        );
        key.key = c"NoSuchKey".as_ptr();
        assert_eq!(event_of(&key).unwrap_err().0, EpStatus::InvalidArgument);
        key.key = std::ptr::null();
        assert_eq!(event_of(&key).unwrap_err().0, EpStatus::NullPointer);
        assert_eq!(
            event_of(&input(EpInputKind::PointerMove)).unwrap(),
            InputEvent::PointerMove { dx: 3, dy: -4 }
        );
        assert_eq!(
            event_of(&input(EpInputKind::Button)).unwrap(),
            InputEvent::Button {
                button: 2,
                down: true
            }
        );
        assert_eq!(
            event_of(&input(EpInputKind::GamepadAxis)).unwrap(),
            InputEvent::GamepadAxis {
                axis: 2,
                value: -32768
            }
        );
        let mut axis = input(EpInputKind::GamepadAxis);
        axis.value = 40_000;
        assert!(event_of(&axis).unwrap_err().1.contains("out of range"));
        let mut button = input(EpInputKind::GamepadButton);
        button.index = 256;
        assert!(event_of(&button).unwrap_err().1.contains("out of range"));
        let mut unknown = input(EpInputKind::Key);
        unknown.kind = 99;
        assert!(
            event_of(&unknown)
                .unwrap_err()
                .1
                .contains("unknown input kind 99")
        );
    }
}

#[test]
fn a_panic_becomes_a_status_and_a_message() {
    let got = guard(|s| s, || -> Result<EpStatus, Failure> { panic!("boom") });
    assert_eq!(got, EpStatus::Panic);
    assert!(last_error().contains("the SDK panicked (boom)"));
}

#[test]
fn a_full_edge_has_its_own_status() {
    let full = ClientError::EdgeFull {
        reason: "this edge is full".into(),
    };
    let (status, message) = client_failure(&full);
    assert_eq!(status, EpStatus::EdgeFull);
    assert!(
        message.contains("try again later or another edge"),
        "{message}"
    );
    let refused = ClientError::Refused {
        code: 0x10,
        meaning: "bad token",
        reason: String::new(),
    };
    assert_eq!(status_of(&refused), EpStatus::Refused);
}
