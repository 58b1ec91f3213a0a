//! RTT probes from browsers: a browser cannot send UDP echoes, so it opens a short-lived
//! `RTCPeerConnection` (a data channel, no media) to each candidate edge, signalled through the
//! broker (`POST /v1/sessions/{id}/probe/{edge}`, relayed to the edge's `/v1/probe`), and reads
//! the ICE candidate pair's round-trip time from `getStats`. The edge answers with a peer that
//! carries nothing and closes itself after [`PROBE_LIFETIME`]; at most [`MAX_PROBES`] live at once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tracing::debug;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCSessionDescription,
};

use super::WebRtcError;
use super::negotiate::answer_and_gather;

/// How long a probe peer lives.
pub const PROBE_LIFETIME: Duration = Duration::from_secs(10);
/// Most probe peers at once.
pub const MAX_PROBES: usize = 32;

/// Answers probe offers.
#[derive(Debug)]
pub struct Prober {
    local_ip: IpAddr,
    slots: Arc<Semaphore>,
}

struct Gathered(watch::Sender<bool>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Gathered {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.send(true);
        }
    }
}

impl Prober {
    /// Probe peers bind their ICE sockets on `local_ip`.
    #[must_use]
    pub fn new(local_ip: IpAddr) -> Self {
        Self {
            local_ip,
            slots: Arc::new(Semaphore::new(MAX_PROBES)),
        }
    }

    /// The answer to a probe `offer`; the peer closes itself after [`PROBE_LIFETIME`].
    ///
    /// # Errors
    /// [`WebRtcError::Wire`] for a bad offer, [`WebRtcError::Internal`] when
    /// [`MAX_PROBES`] are live or the peer cannot be built.
    pub async fn answer(&self, offer: &[u8]) -> Result<String, WebRtcError> {
        let internal = |e: &dyn std::fmt::Display| WebRtcError::Internal(e.to_string());
        // A probe offers a data channel only, so the WHEP check (which wants video) does not fit.
        edgeplay_protocol::whep::check_sdp_size(offer, "probe offer")?;
        let sdp = std::str::from_utf8(offer)
            .ok()
            .filter(|s| s.starts_with("v=0"))
            .ok_or(edgeplay_protocol::whep::WireError::BadOffer(
                "a probe offer is SDP text starting with `v=0`",
            ))?
            .to_owned();
        let permit = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| internal(&"too many RTT probes at once; retry in a few seconds"))?;
        let (tx, mut gathered) = watch::channel(false);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(MediaEngine::default())
            .with_handler(Arc::new(Gathered(tx)))
            .with_udp_addrs(vec![format!("{}:0", self.local_ip)])
            .build()
            .await
            .map_err(|e| internal(&e))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let negotiated = async {
            let offer = RTCSessionDescription::offer(sdp)
                .map_err(|e| WebRtcError::Negotiation(e.to_string()))?;
            answer_and_gather(pc.as_ref(), offer, &mut gathered).await?;
            pc.local_description()
                .await
                .map(|d| d.sdp)
                .ok_or_else(|| internal(&"no local description"))
        }
        .await;
        let closer = Arc::clone(&pc);
        // Bounded in time and count: the probe's own timer ends it.
        tokio::spawn(async move {
            tokio::time::sleep(PROBE_LIFETIME).await;
            if let Err(e) = closer.close().await {
                debug!(error = %e, "closing a probe peer");
            }
            drop(permit);
        });
        negotiated
    }
}
