//! The GStreamer plumbing every decoder here is built on: `appsrc ! … ! appsink`, encoded data
//! in, decoded samples out. [`crate::H264Decoder`] is one; the SDK's Opus decoder is another,
//! with its own elements in the middle. This is the crate's only API with GStreamer types.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::DecodeError;

/// A running `appsrc ! MIDDLE ! appsink` pipeline. Dropping it stops the pipeline.
#[derive(Debug)]
pub struct AppPipe {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    /// What it is, in errors (e.g. `audio decoder`).
    what: &'static str,
}

impl AppPipe {
    /// Links a non-blocking `appsrc` with `caps`, `middle`, and an `appsink` holding at most
    /// `max_buffers`, and starts it. `live` marks the source live (a session's stream, pushed
    /// as it arrives) rather than a file's.
    ///
    /// # Errors
    /// [`DecodeError::Init`], [`DecodeError::Pipeline`] when the elements do not link or the
    /// pipeline does not start.
    pub fn start(
        what: &'static str,
        caps: &gst::Caps,
        middle: &[&gst::Element],
        max_buffers: u32,
        live: bool,
    ) -> Result<Self, DecodeError> {
        crate::init()?;
        let pipeline = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(caps)
            .format(gst::Format::Time)
            .is_live(live)
            .do_timestamp(false)
            .block(false)
            .max_bytes(0)
            .build();
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(max_buffers)
            .drop(false)
            .build();
        let mut chain = vec![src.upcast_ref::<gst::Element>()];
        chain.extend_from_slice(middle);
        chain.push(sink.upcast_ref());
        add_and_link(&pipeline, &chain, what)?;
        // From here on, dropping the pipe stops the pipeline.
        let pipe = Self {
            pipeline,
            src,
            sink,
            what,
        };
        if let Err(e) = pipe.pipeline.set_state(gst::State::Playing) {
            return Err(pipe
                .pending_error()
                .unwrap_or_else(|| pipe.error(format!("did not start: {e}"))));
        }
        Ok(pipe)
    }

    /// Pushes one unit of encoded data stamped `pts` (and `duration`, when known).
    ///
    /// # Errors
    /// [`DecodeError::Pipeline`]: the pipeline failed, or refused the data.
    pub fn push(
        &self,
        data: &[u8],
        pts: Option<Duration>,
        duration: Option<Duration>,
    ) -> Result<(), DecodeError> {
        let mut buffer = gst::Buffer::from_slice(data.to_vec());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(pts.map(clock_time));
            b.set_duration(duration.map(clock_time));
        }
        self.src.push_buffer(buffer).map(|_| ()).map_err(|e| {
            self.pending_error()
                .unwrap_or_else(|| self.error(format!("refused data: {e}")))
        })
    }

    /// Tells the pipeline that no more data comes.
    ///
    /// # Errors
    /// [`DecodeError::Pipeline`] when the source refuses.
    pub fn end_of_stream(&self) -> Result<(), DecodeError> {
        self.src
            .end_of_stream()
            .map(|_| ())
            .map_err(|e| self.error(format!("end of stream refused: {e}")))
    }

    /// Whether the end of the stream came out of the pipeline (everything was pulled).
    #[must_use]
    pub fn is_eos(&self) -> bool {
        self.sink.is_eos()
    }

    /// The next decoded sample within `timeout`; `Ok(None)` when none came.
    ///
    /// # Errors
    /// [`DecodeError::Pipeline`] when an element posted an error.
    pub fn pull(&self, timeout: Duration) -> Result<Option<gst::Sample>, DecodeError> {
        if let Some(sample) = self.sink.try_pull_sample(clock_time(timeout)) {
            return Ok(Some(sample));
        }
        match self.pending_error() {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    fn error(&self, message: String) -> DecodeError {
        DecodeError::Pipeline {
            what: self.what.to_owned(),
            message,
        }
    }

    /// The first error message waiting on the bus, without blocking.
    fn pending_error(&self) -> Option<DecodeError> {
        let msg = self
            .pipeline
            .bus()?
            .pop_filtered(&[gst::MessageType::Error])?;
        let gst::MessageView::Error(e) = msg.view() else {
            return None;
        };
        let element = e
            .src()
            .map_or_else(String::new, |s| format!(" in {}", s.path_string()));
        Some(self.error(format!("failed{element}: {}", e.error())))
    }
}

impl Drop for AppPipe {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A GStreamer element by factory name; `package` names what ships it when it is missing.
///
/// # Errors
/// [`DecodeError::MissingElement`].
pub fn element(name: &str, package: &'static str) -> Result<gst::Element, DecodeError> {
    gst::ElementFactory::make(name)
        .build()
        .map_err(|_| DecodeError::MissingElement {
            element: name.to_owned(),
            package,
        })
}

/// Adds `chain` to `pipeline` and links it in order; errors name `what`.
fn add_and_link(
    pipeline: &gst::Pipeline,
    chain: &[&gst::Element],
    what: &str,
) -> Result<(), DecodeError> {
    let error = |e: &dyn std::fmt::Display| DecodeError::Pipeline {
        what: what.to_owned(),
        message: e.to_string(),
    };
    pipeline.add_many(chain).map_err(|e| error(&e))?;
    gst::Element::link_many(chain).map_err(|e| error(&e))
}

/// Nanosecond `ClockTime` from a `Duration`, saturating at `ClockTime::MAX` (~584 years; the
/// all-ones value means "none" to GStreamer). Shared with the edge's encoders.
#[must_use]
pub fn clock_time(d: Duration) -> gst::ClockTime {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    gst::ClockTime::from_nseconds(ns.min(gst::ClockTime::MAX.nseconds()))
}

/// A buffer's PTS as running time: what the caller pushed. Elements may shift timestamps and
/// segment together (x264enc adds 1000 hours to keep DTS positive); running time undoes it.
/// Shared with the edge's encoders.
#[must_use]
pub fn running_time(sample: &gst::Sample, pts: Option<gst::ClockTime>) -> Option<Duration> {
    let pts = pts?;
    let rt = sample
        .segment()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .and_then(|s| s.to_running_time(pts))
        .unwrap_or(pts);
    Some(rt.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_time_round_trips_and_saturates() {
        let d = Duration::from_nanos(16_666_667);
        assert_eq!(Duration::from(clock_time(d)), d);
        assert_eq!(clock_time(Duration::MAX), gst::ClockTime::MAX);
    }
}
