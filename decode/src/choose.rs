//! Which H.264 decoder element to use.
//!
//! With [`DecoderPreference::Auto`] each hardware H.264 decoder GStreamer may have
//! ([`HARDWARE_DECODERS`], in order) that is registered must decode a real picture (an 85-byte
//! 128x96 IDR) within [`PROBE_TIMEOUT`]; an element that is registered but cannot open its
//! device fails that test and the next is tried, as the edge's NVENC probe does.
//! [`SOFTWARE_DECODER`] (`avdec_h264`) is the fallback, and the only one
//! [`DecoderPreference::Software`] looks at. Hardware decoders hand out NV12 in system memory.

use std::sync::OnceLock;
use std::time::Duration;

use gstreamer as gst;

use crate::DecodeError;
use crate::h264::{H264Decoder, PixelFormat, SOFTWARE_DECODER};

/// Hardware H.264 decoders, in the order [`DecoderPreference::Auto`] tries them: NVIDIA
/// (nvcodec), VA-API (the `va` plugin, then the older `vaapi` one), V4L2 stateless and stateful.
pub const HARDWARE_DECODERS: [&str; 5] = [
    "nvh264dec",
    "vah264dec",
    "vaapih264dec",
    "v4l2slh264dec",
    "v4l2h264dec",
];
/// How long a hardware decoder has to decode the probe picture.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One IDR picture, 128x96 mid grey, constrained baseline: SPS, PPS and one slice, made with
/// `ffmpeg -f lavfi -i color=c=gray:s=128x96 -frames:v 1 -c:v libx264 -profile:v baseline
/// -bsf:v filter_units=remove_types=6 -f h264` (the SEI with x264's version removed).
const PROBE_STREAM: &[u8] = &[
    0x00, 0x00, 0x00, 0x01, 0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x02, 0x0d, 0xb0, 0x11, 0x00, 0x00, 0x03,
    0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x12, 0x26, 0x48, 0x00, 0x00, 0x00, 0x01, 0x68,
    0xcb, 0x83, 0xcb, 0x20, 0x00, 0x00, 0x01, 0x65, 0x88, 0x84, 0x0a, 0xf2, 0x62, 0x80, 0x01, 0x79,
    0x39, 0x39, 0x39, 0x39, 0x39, 0x39, 0x3a, 0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba,
    0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba, 0xeb, 0xae, 0xba, 0xeb,
    0xae, 0xba, 0xeb, 0xae, 0xbc,
];

/// Which H.264 decoders may be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DecoderPreference {
    /// The first hardware decoder that decodes a test picture, else `avdec_h264`.
    #[default]
    Auto,
    /// `avdec_h264` only; no hardware decoder is probed.
    Software,
}

/// The decoder element [`choose`] picked, and the hardware decoders it tried first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The element to decode with.
    pub element: &'static str,
    /// Each registered hardware decoder probed before `element`, and why it was not used.
    pub rejected: Vec<(&'static str, String)>,
}

/// Picks the decoder for `preference` among [`HARDWARE_DECODERS`]: see the module doc.
/// Initialises GStreamer.
///
/// # Errors
/// [`DecodeError::Init`]; [`DecodeError::MissingElement`] when no hardware decoder works and
/// `avdec_h264` is not installed.
pub fn choose(preference: DecoderPreference) -> Result<Choice, DecodeError> {
    choose_from(preference, &HARDWARE_DECODERS)
}

/// [`choose`] with `hardware` as the candidates, in order.
fn choose_from(
    preference: DecoderPreference,
    hardware: &[&'static str],
) -> Result<Choice, DecodeError> {
    crate::init()?;
    let mut rejected = Vec::new();
    if preference == DecoderPreference::Auto {
        for &element in hardware {
            if gst::ElementFactory::find(element).is_none() {
                continue;
            }
            match probe(element) {
                Ok(()) => {
                    tracing::info!(%element, "hardware H.264 decoder in use");
                    return Ok(Choice { element, rejected });
                }
                Err(e) => {
                    tracing::info!(%element, error = %e, "hardware decoder unusable; trying the next");
                    rejected.push((element, e));
                }
            }
        }
    }
    if gst::ElementFactory::find(SOFTWARE_DECODER).is_none() {
        return Err(DecodeError::MissingElement {
            element: SOFTWARE_DECODER.to_owned(),
            package: "gstreamer1.0-libav",
        });
    }
    Ok(Choice {
        element: SOFTWARE_DECODER,
        rejected,
    })
}

/// [`choose`]'s element, probing hardware once per process: the devices do not come and go
/// between sessions, and a probe costs up to [`PROBE_TIMEOUT`] per registered decoder.
///
/// # Errors
/// As [`choose`]; a failed `Auto` probe is answered again as [`DecodeError::NoDecoder`] with
/// the same words.
pub fn choose_cached(preference: DecoderPreference) -> Result<&'static str, DecodeError> {
    static AUTO: OnceLock<Result<&'static str, String>> = OnceLock::new();
    match preference {
        DecoderPreference::Software => choose(preference).map(|c| c.element),
        DecoderPreference::Auto => AUTO
            .get_or_init(|| {
                choose(preference)
                    .map(|c| c.element)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(DecodeError::NoDecoder),
    }
}

/// Decodes the probe picture with `element`; `Ok` when a 128x96 picture comes out in time.
fn probe(element: &'static str) -> Result<(), String> {
    let mut d = H264Decoder::with_element(element, PixelFormat::Nv12).map_err(|e| e.to_string())?;
    d.push(PROBE_STREAM, Some(Duration::ZERO))
        .map_err(|e| e.to_string())?;
    d.end_of_stream().map_err(|e| e.to_string())?;
    match d.try_pull(PROBE_TIMEOUT).map_err(|e| e.to_string())? {
        Some(p) if (p.width, p.height) == (128, 96) => Ok(()),
        Some(p) => Err(format!(
            "decoded the 128x96 probe picture as {}x{}",
            p.width, p.height
        )),
        None => Err(format!(
            "no picture within {PROBE_TIMEOUT:?} (no device, or it cannot decode)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_decoder_that_cannot_decode_falls_back() {
        // `identity` is registered but passes H.264 through: the probe's pipeline cannot
        // negotiate, as a hardware decoder without its device cannot open.
        let choice =
            choose_from(DecoderPreference::Auto, &["edgeplaynosuchdec", "identity"]).unwrap();
        assert_eq!(choice.element, SOFTWARE_DECODER);
        assert_eq!(choice.rejected.len(), 1, "{:?}", choice.rejected);
        assert_eq!(choice.rejected[0].0, "identity");
    }

    #[test]
    fn software_preference_never_probes() {
        // The same candidate that Auto probes (and rejects) above is not even tried.
        let choice = choose_from(DecoderPreference::Software, &["identity"]).unwrap();
        assert_eq!(choice.element, SOFTWARE_DECODER);
        assert!(choice.rejected.is_empty());
        let auto = choose_from(DecoderPreference::Auto, &["identity"]).unwrap();
        assert_eq!(auto.rejected.len(), 1);
    }

    #[test]
    fn the_probe_stream_decodes_in_software() {
        probe(SOFTWARE_DECODER).unwrap();
    }
}
