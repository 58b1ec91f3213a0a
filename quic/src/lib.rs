//! The QUIC set-up both ends of the media transport share, so the edge and the SDK cannot drift
//! apart: one set of transport settings ([`transport_config`]: BBR, room for a second of frame
//! streams, datagrams), the edge's self-signed certificate ([`self_signed_server`]) and the
//! client's pinning of exactly that certificate by its SHA-256 ([`pinned_client`]).
//!
//! It is not the media protocol (`edgeplay_protocol::media`: ALPN, frame header, control
//! messages), nor either end's connection logic (the edge's `transport::quic`, the SDK's
//! session): only quinn and rustls configuration.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quinn::VarInt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Why a QUIC configuration could not be built (a TLS library refusal; not expected with the
/// fixed settings used here, so it is reported rather than retried).
#[derive(Debug, thiserror::Error)]
#[error("QUIC/TLS set-up failed: {0}")]
pub struct SetupError(String);

fn setup(e: impl std::fmt::Display) -> SetupError {
    SetupError(e.to_string())
}

/// The transport settings both ends use: BBR, 256 concurrent frame streams (over a second of
/// video at 120 fps), a 1 MiB datagram buffer for audio and inputs, a 1 s keep-alive, and
/// windows large enough for a 4K keyframe in flight.
#[must_use]
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
        .max_concurrent_uni_streams(VarInt::from_u32(256))
        .max_concurrent_bidi_streams(VarInt::from_u32(4))
        .datagram_receive_buffer_size(Some(1 << 20))
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .stream_receive_window(VarInt::from_u32(8 << 20))
        .receive_window(VarInt::from_u32(64 << 20))
        .send_window(64 << 20);
    t
}

/// SHA-256 of a certificate's DER: the fingerprint clients pin.
#[must_use]
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    out
}

/// A server configuration with a fresh self-signed certificate, and that certificate's
/// fingerprint.
#[derive(Debug)]
pub struct SelfSigned {
    /// TLS 1.3 only, the given ALPN, [`transport_config`].
    pub server: quinn::ServerConfig,
    /// SHA-256 of the certificate, what clients pin.
    pub fingerprint: [u8; 32],
}

/// Makes a self-signed certificate for `name` and a quinn server configuration around it.
///
/// # Errors
/// [`SetupError`] when rcgen or rustls refuse.
pub fn self_signed_server(name: &str, alpn: &[u8]) -> Result<SelfSigned, SetupError> {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).map_err(setup)?;
    let der = cert.cert.der().clone();
    let fp = fingerprint(&der);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        cert.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .map_err(setup)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(setup)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config()));
    Ok(SelfSigned {
        server,
        fingerprint: fp,
    })
}

/// Trusts exactly the certificate with this fingerprint: the edge's certificate is
/// self-signed, and the broker (or `run --dev`) says which one to expect.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
    mismatch: Arc<AtomicBool>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity.as_ref()) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            self.mismatch.store(true, Ordering::Release);
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // QUIC is TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A quinn client configuration that trusts only the certificate with `fingerprint`, with the
/// given ALPN and [`transport_config`], and the flag it raises when a server showed another
/// certificate (so the caller can say "wrong fingerprint" rather than a bare TLS error).
///
/// # Errors
/// [`SetupError`] when rustls refuses.
pub fn pinned_client(
    fingerprint: [u8; 32],
    alpn: &[u8],
) -> Result<(quinn::ClientConfig, Arc<AtomicBool>), SetupError> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let mismatch = Arc::new(AtomicBool::new(false));
    let verifier = Arc::new(Pinned {
        fingerprint,
        algorithms: provider.signature_verification_algorithms,
        mismatch: Arc::clone(&mismatch),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(setup)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok((cfg, mismatch))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPN: &[u8] = b"edgeplay-test/1";

    /// Connects a pinned client to a self-signed server on loopback.
    async fn connect(pin: impl FnOnce([u8; 32]) -> [u8; 32]) -> (bool, bool) {
        let server = self_signed_server("edgeplay-test", ALPN).expect("server config");
        let endpoint = quinn::Endpoint::server(server.server, "127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = endpoint.local_addr().expect("addr");
        let accept = tokio::spawn(async move {
            if let Some(incoming) = endpoint.accept().await {
                let _ = incoming.await;
            }
        });
        let (cfg, mismatch) = pinned_client(pin(server.fingerprint), ALPN).expect("client");
        let mut client =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client bind");
        client.set_default_client_config(cfg);
        let ok = tokio::time::timeout(Duration::from_secs(10), async {
            client
                .connect(addr, "edgeplay-test")
                .expect("connect")
                .await
        })
        .await
        .expect("handshake within 10 s")
        .is_ok();
        accept.abort();
        (ok, mismatch.load(Ordering::Acquire))
    }

    #[tokio::test]
    async fn the_pinned_certificate_is_trusted() {
        assert_eq!(connect(|fp| fp).await, (true, false));
    }

    #[tokio::test]
    async fn another_certificate_is_refused_and_flagged() {
        let (ok, mismatch) = connect(|mut fp| {
            fp[0] ^= 1;
            fp
        })
        .await;
        assert!(!ok, "a wrong pin connected");
        assert!(mismatch, "the mismatch flag was not raised");
    }

    #[test]
    fn fingerprint_is_sha256() {
        assert_eq!(
            fingerprint(b"abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
    }
}
