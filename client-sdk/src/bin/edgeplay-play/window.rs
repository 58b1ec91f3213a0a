//! Window mode: frames shown with minifb (X11 only: libX11 and libXcursor are loaded with
//! `dlopen` when the window opens, so building needs no X11 headers and a machine without them
//! gets an error, not a failed start), keyboard and mouse sent as protocol input events.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use edgeplay_client::Session;
use edgeplay_game::stamp::read_luma;
use edgeplay_protocol::input::{InputEvent, Key};
use minifb::{KeyRepeat, MouseButton, MouseMode, Window, WindowOptions};

use crate::image::nv12_to_0rgb;

/// Fails with what to do when there is no display to open a window on: checked before
/// connecting, so a headless machine gets one clear line, not a half-started session.
pub fn check_display() -> Result<()> {
    if std::env::var_os("DISPLAY").is_none_or(|d| d.is_empty()) {
        bail!(
            "no display to open a window on (DISPLAY is not set): run under X11 or XWayland, or \
             play headless with --frames N --dump DIR"
        );
    }
    Ok(())
}

/// The DOM `KeyboardEvent.code` of a window key, as the protocol names keys.
fn dom_code(key: minifb::Key) -> Option<&'static str> {
    use minifb::Key as K;
    const LETTERS: [&str; 26] = [
        "KeyA", "KeyB", "KeyC", "KeyD", "KeyE", "KeyF", "KeyG", "KeyH", "KeyI", "KeyJ", "KeyK",
        "KeyL", "KeyM", "KeyN", "KeyO", "KeyP", "KeyQ", "KeyR", "KeyS", "KeyT", "KeyU", "KeyV",
        "KeyW", "KeyX", "KeyY", "KeyZ",
    ];
    const DIGITS: [&str; 10] = [
        "Digit0", "Digit1", "Digit2", "Digit3", "Digit4", "Digit5", "Digit6", "Digit7", "Digit8",
        "Digit9",
    ];
    let n = key as usize;
    Some(match key {
        _ if n <= K::Key9 as usize => DIGITS[n],
        _ if (K::A as usize..=K::Z as usize).contains(&n) => LETTERS[n - K::A as usize],
        K::Up => "ArrowUp",
        K::Down => "ArrowDown",
        K::Left => "ArrowLeft",
        K::Right => "ArrowRight",
        K::Space => "Space",
        K::Enter => "Enter",
        K::Escape => "Escape",
        K::Tab => "Tab",
        K::Backspace => "Backspace",
        K::LeftShift => "ShiftLeft",
        K::RightShift => "ShiftRight",
        K::LeftCtrl => "ControlLeft",
        K::RightCtrl => "ControlRight",
        K::LeftAlt => "AltLeft",
        K::RightAlt => "AltRight",
        K::F1 => "F1",
        K::F2 => "F2",
        K::F3 => "F3",
        K::F4 => "F4",
        K::F5 => "F5",
        K::F6 => "F6",
        K::F7 => "F7",
        K::F8 => "F8",
        K::F9 => "F9",
        K::F10 => "F10",
        K::F11 => "F11",
        K::F12 => "F12",
        _ => return None,
    })
}

/// The protocol key of a window key.
fn key_of(key: minifb::Key) -> Option<Key> {
    dom_code(key).and_then(Key::from_code)
}

/// Shows the session until the window is closed; keys, mouse motion and buttons go to the edge.
pub fn run(runtime: &tokio::runtime::Runtime, session: &mut Session) -> Result<()> {
    // minifb reports most failures as errors, but a broken X11 library could still panic.
    let opened = std::panic::catch_unwind(|| {
        Window::new(
            "edgeplay-play",
            1280,
            720,
            WindowOptions {
                resize: true,
                scale_mode: minifb::ScaleMode::AspectRatioStretch,
                ..WindowOptions::default()
            },
        )
    });
    let mut window = match opened {
        Ok(w) => w.context("cannot open a window (is the X server reachable through DISPLAY?)")?,
        Err(_) => bail!(
            "cannot open a window: the X11 libraries failed (install libx11-6 and libxcursor1)"
        ),
    };
    let mut pixels = Vec::new();
    let mut size = (0usize, 0usize);
    let mut last_mouse: Option<(f32, f32)> = None;
    let buttons = [MouseButton::Left, MouseButton::Middle, MouseButton::Right];
    let mut held = [false; 3];
    // The title shows frames per second and glass-to-glass (from the frame stamps) each second.
    let (mut shown, mut g2g_us, mut since) = (0u32, 0u64, std::time::Instant::now());
    while window.is_open() {
        let frame = runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(4), session.next_frame()).await
        });
        match frame {
            Ok(Some(f)) => {
                size = (f.width as usize, f.height as usize);
                if nv12_to_0rgb(&f.data, size.0, size.1, &mut pixels).is_none() {
                    tracing::warn!("a frame smaller than its size says was skipped");
                    continue;
                }
                window
                    .update_with_buffer(&pixels, size.0, size.1)
                    .context("cannot draw into the window")?;
                if let Ok(stamp) = read_luma(f.luma(), size.0, size.1, size.0) {
                    let decoded_us = crate::unix_us().saturating_sub(
                        u64::try_from(f.decoded_at.elapsed().as_micros()).unwrap_or(0),
                    );
                    g2g_us += decoded_us.saturating_sub(stamp.render_time_us);
                }
                shown += 1;
                if since.elapsed() >= Duration::from_secs(1) {
                    let secs = since.elapsed().as_secs_f64();
                    #[allow(clippy::cast_precision_loss, reason = "a second's latencies")]
                    let g2g_ms = g2g_us as f64 / f64::from(shown.max(1)) / 1000.0;
                    window.set_title(&format!(
                        "edgeplay-play: {:.0} fps, glass-to-glass {g2g_ms:.1} ms",
                        f64::from(shown) / secs
                    ));
                    (shown, g2g_us, since) = (0, 0, std::time::Instant::now());
                }
            }
            Ok(None) => bail!("the edge ended the session"),
            Err(_) => window.update(),
        }
        for k in window.get_keys_pressed(KeyRepeat::No) {
            if let Some(code) = key_of(k) {
                session.send_input(InputEvent::Key { code, down: true })?;
            }
        }
        for k in window.get_keys_released() {
            if let Some(code) = key_of(k) {
                session.send_input(InputEvent::Key { code, down: false })?;
            }
        }
        if let Some((x, y)) = window.get_mouse_pos(MouseMode::Discard) {
            if let Some((px, py)) = last_mouse {
                // Window pixels to picture pixels, then whole pixels only.
                let (ww, wh) = window.get_size();
                let sx = size.0.max(1) as f32 / ww.max(1) as f32;
                let sy = size.1.max(1) as f32 / wh.max(1) as f32;
                #[allow(clippy::cast_possible_truncation, reason = "window-sized deltas")]
                let (dx, dy) = (
                    ((x - px) * sx).round() as i32,
                    ((y - py) * sy).round() as i32,
                );
                if dx != 0 || dy != 0 {
                    session.send_input(InputEvent::PointerMove { dx, dy })?;
                }
            }
            last_mouse = Some((x, y));
        }
        for (i, b) in buttons.into_iter().enumerate() {
            let down = window.get_mouse_down(b);
            if down != held[i] {
                held[i] = down;
                let button = u8::try_from(i).unwrap_or(0);
                session.send_input(InputEvent::Button { button, down })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keys_map_to_the_protocols_dom_codes() {
        assert_eq!(key_of(minifb::Key::Up), Some(Key::ArrowUp));
        assert_eq!(key_of(minifb::Key::Space), Some(Key::Space));
        assert_eq!(key_of(minifb::Key::D), Key::from_code("KeyD"));
        assert_eq!(dom_code(minifb::Key::Key7), Some("Digit7"));
        assert_eq!(dom_code(minifb::Key::A), Some("KeyA"));
        assert_eq!(dom_code(minifb::Key::Z), Some("KeyZ"));
        assert!(key_of(minifb::Key::Key0).is_some());
        assert_eq!(dom_code(minifb::Key::Unknown), None);
    }
}
