//! The edge's UDP echo: players and peer edges measure their RTT to it.

use edgeplay_protocol::link;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::debug;

/// Answers players' RTT probes on `socket` until `stop` fires: every datagram that is an echo
/// probe ([`link::is_echo_probe`]) goes back as it came; anything else is dropped.
pub async fn serve_echo(socket: UdpSocket, mut stop: watch::Receiver<bool>) {
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) if link::is_echo_probe(&buf[..n]) => {
                    let _ = socket.send_to(&buf[..n], from).await;
                }
                Ok(_) => {}
                Err(e) => debug!(error = %e, "echo socket"),
            },
            _ = stop.changed() => return,
        }
    }
}
