//! The control stream (one bidirectional QUIC stream): the hello and welcome, then keyframe
//! requests, receive reports and overflowing inputs out, input acknowledgements and notices in.

use std::sync::Arc;

use edgeplay_protocol::media::{ControlMessage, close_code};
use quinn::VarInt;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::error::ClientError;
use crate::shared::Shared;

/// Reads whole control messages off the stream.
#[derive(Debug)]
pub(crate) struct ControlReader {
    recv: quinn::RecvStream,
    buf: Vec<u8>,
}

impl ControlReader {
    pub(crate) fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            buf: Vec::new(),
        }
    }

    /// The next message, `None` at the end of the stream. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Option<ControlMessage>, ClientError> {
        loop {
            match ControlMessage::decode_frame(&self.buf) {
                Ok(Some((msg, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(msg));
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            let mut chunk = [0u8; 4096];
            match self.recv.read(&mut chunk).await {
                Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(None) | Err(_) => return Ok(None),
            }
        }
    }
}

/// Writes the SDK's control messages, in order, until the stream or the channel ends.
pub(crate) async fn write_control(
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<ControlMessage>,
    conn: quinn::Connection,
) {
    let mut out = Vec::new();
    while let Some(msg) = rx.recv().await {
        out.clear();
        if let Err(e) = msg.encode(&mut out) {
            warn!("control message not sent: {e}");
            continue;
        }
        if send.write_all(&out).await.is_err() {
            break;
        }
    }
    drop(conn);
}

/// Reads the edge's control messages: input acknowledgements go to the input machine; the
/// edge's goodbye, or a malformed message, closes the connection.
pub(crate) async fn read_control(
    mut reader: ControlReader,
    shared: Arc<Shared>,
    conn: quinn::Connection,
) {
    loop {
        match reader.next().await {
            Ok(Some(ControlMessage::InputAck { applied, committed })) => {
                shared.inputs().handle_ack(applied, committed);
            }
            Ok(Some(ControlMessage::Goodbye { code, reason })) => {
                debug!(code, %reason, "the edge ends the session");
                shared.set_goodbye(format!("{} ({reason})", close_code::describe(code.into())));
                conn.close(VarInt::from_u32(code), reason.as_bytes());
                break;
            }
            Ok(Some(ControlMessage::Failover(n))) => {
                warn!(edge = %n.edge, "the edge announced a failover; reconnecting is not implemented yet");
            }
            Ok(Some(other)) => debug!("control message {other:?}"),
            Ok(None) => break,
            Err(e) => {
                warn!("{e}");
                conn.close(
                    VarInt::from_u32(close_code::PROTOCOL_VIOLATION),
                    b"bad control message",
                );
                break;
            }
        }
    }
}
