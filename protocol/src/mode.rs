//! A session's video mode: picture size and frame rate, as a player asks for it, the broker
//! matches it, the join token binds it and a hosted app is told it.
//!
//! Written `WIDTHxHEIGHT@FPS` (`1920x1080@60`) in catalogues, URLs and logs; serialised as
//! that string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Widths and heights a session may have, as `(width, height)`.
pub const SIZES: [(u32, u32); 3] = [(1280, 720), (1920, 1080), (2560, 1440)];
/// Frame rates a session may have.
pub const RATES: [u32; 3] = [30, 60, 120];

/// A picture size and frame rate from [`SIZES`] and [`RATES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mode {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl Mode {
    /// 1280x720 at 60 fps, the built-in game's and every request's default.
    pub const DEFAULT: Self = Self {
        width: 1280,
        height: 720,
        fps: 60,
    };

    /// A mode, if its size is one of [`SIZES`] and its rate one of [`RATES`].
    ///
    /// # Errors
    /// [`ModeError::Unsupported`] naming the sizes and rates there are.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self, ModeError> {
        let mode = Self { width, height, fps };
        if SIZES.contains(&(width, height)) && RATES.contains(&fps) {
            Ok(mode)
        } else {
            Err(ModeError::Unsupported(mode.to_string()))
        }
    }

    /// Pixels per second: what the mode costs an encoder, the unit capacity is weighed in.
    #[must_use]
    pub fn pixel_rate(self) -> u64 {
        u64::from(self.width) * u64::from(self.height) * u64::from(self.fps)
    }
}

impl Default for Mode {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}@{}", self.width, self.height, self.fps)
    }
}

/// Why a mode was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// Not `WIDTHxHEIGHT@FPS` with decimal numbers.
    #[error("`{0}` is not a mode: write WIDTHxHEIGHT@FPS, e.g. 1920x1080@60")]
    Syntax(String),
    /// Well formed, but not a size and rate sessions may have.
    #[error(
        "mode {0} is not supported: sizes are 1280x720, 1920x1080 and 2560x1440, rates 30, 60 and 120 fps"
    )]
    Unsupported(String),
}

impl FromStr for Mode {
    type Err = ModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ModeError::Syntax(s.chars().take(40).collect());
        let (size, fps) = s.split_once('@').ok_or_else(syntax)?;
        let (w, h) = size.split_once('x').ok_or_else(syntax)?;
        let number = |t: &str| {
            if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            t.parse::<u32>().map_err(|_| syntax())
        };
        Self::new(number(w)?, number(h)?, number(fps)?)
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_supported_mode() {
        for (w, h) in SIZES {
            for fps in RATES {
                let text = format!("{w}x{h}@{fps}");
                let mode: Mode = text.parse().expect("supported");
                assert_eq!(mode.to_string(), text);
                assert_eq!(
                    serde_json::to_string(&mode).expect("json"),
                    format!("\"{text}\"")
                );
            }
        }
        assert_eq!(Mode::default().to_string(), "1280x720@60");
    }

    #[test]
    fn refuses_what_is_not_a_supported_mode() {
        for bad in [
            "",
            "1280x720",
            "1280@60",
            "x720@60",
            "1280x720@",
            "+1280x720@60",
            "1280x720@60.0",
            "99999999x1@1",
            "1280 x720@60",
        ] {
            assert!(
                matches!(bad.parse::<Mode>(), Err(ModeError::Syntax(_))),
                "{bad}"
            );
        }
        for bad in ["1280x720@59", "1366x768@60", "3840x2160@60"] {
            let err = bad.parse::<Mode>().expect_err(bad);
            assert!(matches!(err, ModeError::Unsupported(_)), "{bad}");
            assert!(err.to_string().contains("1920x1080"), "{err}");
        }
        assert!(serde_json::from_str::<Mode>("\"1280x720@61\"").is_err());
    }

    #[test]
    fn weighs_modes_by_pixel_rate() {
        let small: Mode = "1280x720@30".parse().expect("mode");
        let big: Mode = "2560x1440@120".parse().expect("mode");
        assert_eq!(big.pixel_rate() / small.pixel_rate(), 16);
    }
}
