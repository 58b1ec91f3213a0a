//! Recording a session's encoded media to a file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::audio::{AUDIO_CHANNELS, AUDIO_SAMPLE_RATE};
use super::{
    EncodeError, EncodedAudio, EncodedFrame, VideoConfig, add_and_link, build_error, clock_time,
    init, make, pending_error, start, stop, wait_eos,
};

/// How long [`MediaFileWriter::finish`] waits for the muxer to write its index.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes encoded video (and audio) to a file; the format follows the extension:
/// - `.h264`: raw Annex-B access units (no audio, no timestamps), written without GStreamer;
/// - `.mkv`: Matroska with H.264 and, when asked, Opus;
/// - `.mp4`: MP4 with H.264 and, when asked, Opus.
///
/// Call [`Self::finish`] at the end: MKV and MP4 files need their index written. Dropping the
/// writer without it stops the pipeline and leaves an unfinished file.
#[derive(Debug)]
pub struct MediaFileWriter {
    path: PathBuf,
    inner: Inner,
}

/// File formats, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    AnnexB,
    Matroska,
    Mp4,
}

impl Format {
    fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "h264" | "264" => Some(Self::AnnexB),
            "mkv" => Some(Self::Matroska),
            "mp4" => Some(Self::Mp4),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Raw(Option<BufWriter<File>>),
    Muxed(Muxed),
}

#[derive(Debug)]
struct Muxed {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
    finished: bool,
}

impl MediaFileWriter {
    /// Creates the file. `with_audio` adds an Opus track (ignored, with a log line, for
    /// `.h264`).
    ///
    /// # Errors
    /// [`EncodeError::UnsupportedFile`] for an unknown extension, [`EncodeError::Io`] when the
    /// file cannot be created, [`EncodeError::MissingElement`] / [`EncodeError::Pipeline`].
    pub fn new(
        path: impl AsRef<Path>,
        cfg: &VideoConfig,
        with_audio: bool,
    ) -> Result<Self, EncodeError> {
        let path = path.as_ref().to_owned();
        let inner = match Format::of(&path) {
            Some(Format::AnnexB) => {
                if with_audio {
                    tracing::info!(path = %path.display(), "raw .h264 files hold no audio; audio is not written");
                }
                let file = File::create(&path).map_err(|source| EncodeError::Io {
                    path: path.clone(),
                    source,
                })?;
                Inner::Raw(Some(BufWriter::new(file)))
            }
            Some(Format::Matroska) => {
                Inner::Muxed(Muxed::new(&path, "matroskamux", cfg, with_audio)?)
            }
            Some(Format::Mp4) => Inner::Muxed(Muxed::new(&path, "mp4mux", cfg, with_audio)?),
            None => return Err(EncodeError::UnsupportedFile { path }),
        };
        Ok(Self { path, inner })
    }

    /// Checks that `path` has an extension [`Self::new`] supports, before any work is done.
    ///
    /// # Errors
    /// [`EncodeError::UnsupportedFile`], listing the supported extensions.
    pub fn check_extension(path: impl AsRef<Path>) -> Result<(), EncodeError> {
        match Format::of(path.as_ref()) {
            Some(_) => Ok(()),
            None => Err(EncodeError::UnsupportedFile {
                path: path.as_ref().to_owned(),
            }),
        }
    }

    /// The file being written.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether audio goes into the file.
    #[must_use]
    pub fn writes_audio(&self) -> bool {
        matches!(&self.inner, Inner::Muxed(Muxed { audio: Some(_), .. }))
    }

    /// Appends one access unit. Frames must come in order, starting with a keyframe.
    ///
    /// # Errors
    /// [`EncodeError::Io`], [`EncodeError::Pipeline`], [`EncodeError::Finished`].
    pub fn write_video(&mut self, frame: &EncodedFrame) -> Result<(), EncodeError> {
        match &mut self.inner {
            Inner::Raw(file) => {
                let file = file
                    .as_mut()
                    .ok_or(EncodeError::Finished { what: "file" })?;
                file.write_all(&frame.data)
                    .map_err(|source| EncodeError::Io {
                        path: self.path.clone(),
                        source,
                    })
            }
            Inner::Muxed(m) => {
                let mut buffer = gst::Buffer::from_slice(frame.data.clone());
                if let Some(b) = buffer.get_mut() {
                    b.set_pts(clock_time(frame.pts));
                    b.set_dts(clock_time(frame.pts));
                    if !frame.keyframe {
                        b.set_flags(gst::BufferFlags::DELTA_UNIT);
                    }
                }
                let video = m.video.clone();
                m.push(&video, buffer)
            }
        }
    }

    /// Appends one Opus packet; a no-op when the file has no audio track.
    ///
    /// # Errors
    /// [`EncodeError::Pipeline`], [`EncodeError::Finished`].
    pub fn write_audio(&mut self, packet: &EncodedAudio) -> Result<(), EncodeError> {
        let Inner::Muxed(m) = &mut self.inner else {
            return Ok(());
        };
        let Some(audio) = m.audio.clone() else {
            return Ok(());
        };
        let mut buffer = gst::Buffer::from_slice(packet.data.clone());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(clock_time(packet.pts));
            b.set_duration(clock_time(packet.duration));
        }
        m.push(&audio, buffer)
    }

    /// Ends the streams and waits (at most 10 s) until the file is complete.
    ///
    /// # Errors
    /// [`EncodeError::Io`], [`EncodeError::Timeout`], [`EncodeError::Pipeline`].
    pub fn finish(mut self) -> Result<(), EncodeError> {
        match &mut self.inner {
            Inner::Raw(file) => {
                let Some(file) = file.take() else {
                    return Ok(());
                };
                let io = |source| EncodeError::Io {
                    path: self.path.clone(),
                    source,
                };
                let file = file.into_inner().map_err(|e| io(e.into_error()))?;
                file.sync_all().map_err(io)
            }
            Inner::Muxed(m) => m.finish(),
        }
    }
}

impl Muxed {
    fn new(
        path: &Path,
        muxer: &'static str,
        cfg: &VideoConfig,
        with_audio: bool,
    ) -> Result<Self, EncodeError> {
        init()?;
        // Fail early, and with a file error rather than a pipeline one, when the path is bad.
        File::create(path).map_err(|source| EncodeError::Io {
            path: path.to_owned(),
            source,
        })?;
        let pipeline = gst::Pipeline::with_name("media-file-writer");
        let video_caps = gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .field("width", i32::try_from(cfg.width).unwrap_or(i32::MAX))
            .field("height", i32::try_from(cfg.height).unwrap_or(i32::MAX))
            .field(
                "framerate",
                gst::Fraction::new(i32::try_from(cfg.fps).unwrap_or(i32::MAX), 1),
            )
            .build();
        let video = app_src("video", &video_caps);
        let parse = make("h264parse")?;
        let mux = make(muxer)?;
        let sink = make("filesink")?;
        sink.set_property("location", path.to_string_lossy().as_ref());
        add_and_link(&pipeline, &[video.upcast_ref(), &parse])?;
        add_and_link(&pipeline, &[&mux, &sink])?;
        link_to_mux(&parse, &mux, "video_%u")?;

        let audio = if with_audio {
            let audio_caps = gst::Caps::builder("audio/x-opus")
                .field("rate", i32::try_from(AUDIO_SAMPLE_RATE).unwrap_or(48_000))
                .field("channels", i32::try_from(AUDIO_CHANNELS).unwrap_or(1))
                .field("channel-mapping-family", 0i32)
                .field("stream-count", 1i32)
                .field("coupled-count", 0i32)
                .build();
            let src = app_src("audio", &audio_caps);
            pipeline
                .add(&src)
                .map_err(|e| build_error("pipeline", &e))?;
            link_to_mux(src.upcast_ref(), &mux, "audio_%u")?;
            Some(src)
        } else {
            None
        };
        start(&pipeline)?;
        Ok(Self {
            pipeline,
            video,
            audio,
            finished: false,
        })
    }

    fn push(&mut self, src: &gst_app::AppSrc, buffer: gst::Buffer) -> Result<(), EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished { what: "file" });
        }
        if let Some(err) = pending_error(&self.pipeline) {
            return Err(err);
        }
        src.push_buffer(buffer).map(|_| ()).map_err(|e| {
            pending_error(&self.pipeline).unwrap_or_else(|| build_error(&src.name(), &e))
        })
    }

    fn finish(&mut self) -> Result<(), EncodeError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        for src in std::iter::once(&self.video).chain(&self.audio) {
            src.end_of_stream()
                .map_err(|e| build_error(&src.name(), &e))?;
        }
        let result = wait_eos(&self.pipeline, FINISH_TIMEOUT);
        stop(&self.pipeline);
        result
    }
}

impl Drop for Muxed {
    fn drop(&mut self) {
        if !self.finished {
            tracing::warn!("media file writer dropped without finish(); the file is incomplete");
        }
        stop(&self.pipeline);
    }
}

/// Links `upstream` to a new request pad of `mux` made from `template` (linking by caps alone
/// can pick the wrong kind of pad before caps are known).
fn link_to_mux(
    upstream: &gst::Element,
    mux: &gst::Element,
    template: &str,
) -> Result<(), EncodeError> {
    let sink = mux
        .request_pad_simple(template)
        .ok_or_else(|| build_error(&mux.name(), &format!("no {template} pad")))?;
    let src = upstream
        .static_pad("src")
        .ok_or_else(|| build_error(&upstream.name(), &"no src pad"))?;
    src.link(&sink)
        .map(|_| ())
        .map_err(|e| build_error(&mux.name(), &e))
}

/// A non-live appsrc in time format that queues without bound (the caller paces it).
fn app_src(name: &str, caps: &gst::Caps) -> gst_app::AppSrc {
    gst_app::AppSrc::builder()
        .name(name)
        .caps(caps)
        .format(gst::Format::Time)
        .is_live(false)
        .do_timestamp(false)
        .block(false)
        .max_bytes(0)
        .build()
}
