//! The link's bytes: dialling a broker and upgrading the HTTP connection, framed
//! [`LinkMessage`]s both ways, the broker's hello, and pinning the broker's key the first time.

use std::path::Path;

use edgeplay_protocol::link::{self, FrameReader, LinkMessage, encode_frame, parse_http_head};
use edgeplay_protocol::token::{VerifyingKey, from_hex, to_hex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

use super::{DIAL_TIMEOUT, HANDSHAKE_TIMEOUT, LinkError, parse_broker_url};
use crate::link::identity::parse_key;

/// An open link after the upgrade: the stream and what was read past the response head.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) frames: FrameReader,
}

async fn dial(hostport: &str) -> Result<Conn, String> {
    let mut stream = TcpStream::connect(hostport)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let req = format!(
        "GET /v1/edges/link HTTP/1.1\r\nHost: {hostport}\r\nConnection: upgrade\r\nUpgrade: {}\r\n\r\n",
        link::UPGRADE
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = loop {
        if let Some(h) = parse_http_head(&buf).map_err(|e| e.to_string())? {
            break h;
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the broker closed the connection during the upgrade".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head.status != 101 {
        return Err(format!(
            "the broker answered {} to the link upgrade: is it an edgeplay broker of this version?",
            head.status
        ));
    }
    let mut frames = FrameReader::default();
    frames.push(&buf[head.len..]);
    Ok(Conn { stream, frames })
}

pub(super) async fn read_msg(conn: &mut Conn) -> Result<LinkMessage, String> {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(m) = conn.frames.next_message().map_err(|e| e.to_string())? {
            return Ok(m);
        }
        let n = conn
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the broker closed the link".into());
        }
        conn.frames.push(&chunk[..n]);
    }
}

pub(super) async fn write_msg(
    stream: &mut (impl AsyncWriteExt + Unpin),
    m: &LinkMessage,
) -> Result<(), String> {
    let frame = encode_frame(m).map_err(|e| e.to_string())?;
    stream.write_all(&frame).await.map_err(|e| e.to_string())
}

async fn hello(conn: &mut Conn) -> Result<(VerifyingKey, Vec<u8>), String> {
    let m = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_msg(conn))
        .await
        .map_err(|_| "no hello from the broker".to_owned())??;
    let LinkMessage::Hello {
        broker_key,
        challenge,
    } = m
    else {
        return Err("the broker did not start with `hello`".into());
    };
    let key = parse_key("the broker's key in its hello", &broker_key).map_err(|e| e.to_string())?;
    let challenge = from_hex(&challenge)
        .ok()
        .filter(|c| c.len() == 32)
        .ok_or("the broker's challenge is not 32 bytes of hex")?;
    Ok((key, challenge))
}

/// The broker's key: `--broker-key`, else the pinned `DATA_DIR/broker.pub`, else the key the
/// broker shows now, which is then pinned.
///
/// # Errors
/// [`LinkError`].
pub async fn broker_key(
    url: &str,
    given: Option<&str>,
    data_dir: &Path,
) -> Result<VerifyingKey, LinkError> {
    if let Some(hex) = given {
        return parse_key("--broker-key", hex);
    }
    let pin = data_dir.join("broker.pub");
    match std::fs::read_to_string(&pin) {
        Ok(text) => return parse_key(&pin.display().to_string(), &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(LinkError::KeyFile { path: pin, source }),
    }
    let hostport = parse_broker_url(url)?;
    let link_err = |why: String| LinkError::Link {
        url: url.to_owned(),
        why,
    };
    let mut conn = dial(&hostport).await.map_err(link_err)?;
    let (key, _) = hello(&mut conn).await.map_err(link_err)?;
    std::fs::create_dir_all(data_dir).map_err(|source| LinkError::KeyFile {
        path: data_dir.to_path_buf(),
        source,
    })?;
    std::fs::write(&pin, to_hex(key.as_bytes()) + "\n").map_err(|source| LinkError::KeyFile {
        path: pin.clone(),
        source,
    })?;
    info!(key = %to_hex(key.as_bytes()), pin = %pin.display(), "pinned the broker's key");
    Ok(key)
}

/// Dials `hostport` and reads the broker's hello, within [`DIAL_TIMEOUT`].
pub(super) async fn dial_hello(hostport: &str) -> Result<(Conn, VerifyingKey, Vec<u8>), String> {
    let dialled = tokio::time::timeout(DIAL_TIMEOUT, async {
        let mut conn = dial(hostport).await?;
        let (key, challenge) = hello(&mut conn).await?;
        Ok::<_, String>((conn, key, challenge))
    })
    .await;
    dialled.unwrap_or_else(|_| Err(format!("no hello within {} s", DIAL_TIMEOUT.as_secs_f32())))
}
