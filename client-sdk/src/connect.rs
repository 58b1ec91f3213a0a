//! Dialing an edge: QUIC with its certificate pinned, the hello with the join token, and the
//! welcome that starts a [`Session`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgeplay_protocol::media::{ControlMessage, close_code};

use crate::control::ControlReader;
use crate::decode::{self, DecoderPreference, PixelFormat};
use crate::error::ClientError;
use crate::pin;
use crate::session::Session;

/// How long the edge has to welcome a session (it builds a GPU target and encoders first).
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// How a session decodes.
///
/// ```no_run
/// # async fn demo(fp: [u8; 32]) -> Result<(), edgeplay_client::ClientError> {
/// use edgeplay_client::{Client, ClientOptions, DecoderPreference, PixelFormat};
/// let options = ClientOptions { decoder: DecoderPreference::Software, format: PixelFormat::Rgba };
/// let session = Client::connect_with("127.0.0.1:4433".parse().unwrap(), fp, "token", options).await?;
/// assert_eq!(session.stats().decoder, "avdec_h264");
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Hardware decoding when it works ([`DecoderPreference::Auto`]), or software only.
    pub decoder: DecoderPreference,
    /// The layout of [`Frame::data`](crate::Frame::data).
    pub format: PixelFormat,
}

/// Connects to edges.
///
/// ```no_run
/// # async fn demo(fp: [u8; 32]) -> Result<(), edgeplay_client::ClientError> {
/// let session = edgeplay_client::Client::connect("127.0.0.1:4433".parse().unwrap(), fp, "token").await?;
/// session.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to the edge at `addr`, pinning its certificate to `cert_fingerprint` (SHA-256 of
    /// its DER), and joins with `token`.
    ///
    /// # Errors
    /// [`ClientError::CertificateMismatch`], [`ClientError::EdgeFull`] (every session slot of
    /// the edge is taken), [`ClientError::Refused`] (bad token: code
    /// [`close_code::BAD_TOKEN`]), [`ClientError::Connection`], [`ClientError::Protocol`],
    /// [`ClientError::Decoder`], [`ClientError::Setup`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), edgeplay_client::ClientError> {
    /// use edgeplay_client::{Client, parse_fingerprint};
    /// let fp = parse_fingerprint(&std::env::var("EDGE_FINGERPRINT").unwrap_or_default())?;
    /// let session = Client::connect("127.0.0.1:4433".parse().unwrap(), fp, "dev-token").await?;
    /// println!("session {}", session.id());
    /// # Ok(()) }
    /// ```
    pub async fn connect(
        addr: SocketAddr,
        cert_fingerprint: [u8; 32],
        token: impl AsRef<[u8]>,
    ) -> Result<Session, ClientError> {
        Self::connect_with(addr, cert_fingerprint, token, ClientOptions::default()).await
    }

    /// [`Client::connect`] with [`ClientOptions`]: the decoder preference and the frames'
    /// pixel format. The decoder is chosen before dialing (with [`DecoderPreference::Auto`],
    /// once per process: each registered hardware decoder must decode a test picture).
    ///
    /// # Errors
    /// As [`Client::connect`].
    ///
    /// ```no_run
    /// # async fn demo(fp: [u8; 32]) -> Result<(), edgeplay_client::ClientError> {
    /// use edgeplay_client::{Client, ClientOptions, PixelFormat};
    /// let options = ClientOptions { format: PixelFormat::Rgba, ..ClientOptions::default() };
    /// let mut session = Client::connect_with("127.0.0.1:4433".parse().unwrap(), fp, "t", options).await?;
    /// let frame = session.next_frame().await.unwrap();
    /// assert_eq!(frame.data.len(), (frame.width * frame.height * 4) as usize);
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        addr: SocketAddr,
        cert_fingerprint: [u8; 32],
        token: impl AsRef<[u8]>,
        options: ClientOptions,
    ) -> Result<Session, ClientError> {
        let decoder = tokio::task::spawn_blocking(move || decode::choose_cached(options.decoder))
            .await
            .map_err(|e| ClientError::Decoder(e.to_string()))?
            .map_err(ClientError::Decoder)?;
        let (client_cfg, mismatch) = pin::client_config(cert_fingerprint)?;
        let bind: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| ClientError::Setup(e.to_string()))?;
        endpoint.set_default_client_config(client_cfg);
        let connecting = endpoint
            .connect(addr, "edgeplay-edge")
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        let conn = match tokio::time::timeout(WELCOME_TIMEOUT, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(if mismatch.load(Ordering::Acquire) {
                    ClientError::CertificateMismatch
                } else {
                    ClientError::Connection(e.to_string())
                });
            }
            Err(_) => return Err(ClientError::Connection("handshake timed out".into())),
        };
        let (mut ctl_send, ctl_recv) = conn.open_bi().await.map_err(|e| closed(&conn, &e))?;
        let mut hello = Vec::new();
        ControlMessage::Hello {
            token: token.as_ref().to_vec(),
        }
        .encode(&mut hello)
        .map_err(|e| ClientError::Setup(e.to_string()))?;
        ctl_send
            .write_all(&hello)
            .await
            .map_err(|e| closed(&conn, &e))?;
        let mut reader = ControlReader::new(ctl_recv);
        let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, reader.next()).await {
            Ok(Ok(Some(ControlMessage::Welcome { session_id, .. }))) => session_id,
            Ok(Ok(Some(other))) => {
                return Err(ClientError::Protocol(format!(
                    "expected a welcome, got {other:?}"
                )));
            }
            Ok(Ok(None)) => return Err(closed(&conn, &"control stream closed")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ClientError::Connection("no welcome in time".into())),
        };
        Session::start(
            endpoint,
            conn,
            ctl_send,
            reader,
            welcome,
            (decoder, options.format),
        )
    }
}

/// The error for a connection the edge closed, with its code when it gave one.
fn closed(conn: &quinn::Connection, fallback: &dyn std::fmt::Display) -> ClientError {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code.into_inner() == u64::from(close_code::EDGE_FULL) =>
        {
            ClientError::EdgeFull {
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            }
        }
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            let code = c.error_code.into_inner();
            ClientError::Refused {
                code,
                meaning: close_code::describe(code),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            }
        }
        Some(other) => ClientError::Connection(other.to_string()),
        None => ClientError::Connection(fallback.to_string()),
    }
}
