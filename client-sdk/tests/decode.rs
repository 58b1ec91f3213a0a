//! The SDK's decoder options against a live edge: RGBA frames with the stamp read back by the
//! SDK, the software preference, and the decoder `Auto` picks on this machine in the stats.

mod support;

use std::time::Duration;

use edgeplay_client::{
    Client, ClientOptions, DecoderPreference, HARDWARE_DECODERS, PixelFormat, SOFTWARE_DECODER,
    parse_fingerprint,
};
use edgeplay_game::stamp::read_luma;
use support::Edge;

async fn frames(options: ClientOptions, n: usize) -> (Vec<edgeplay_client::Frame>, &'static str) {
    let edge = Edge::start();
    let fp = parse_fingerprint(&edge.fingerprint_hex).unwrap();
    let mut session = Client::connect_with(edge.addr, fp, &edge.token, options)
        .await
        .expect("the session starts");
    let mut out = Vec::new();
    while out.len() < n {
        let f = tokio::time::timeout(Duration::from_secs(60), session.next_frame())
            .await
            .expect("frames keep coming")
            .expect("the session lives");
        out.push(f);
    }
    let decoder = session.stats().decoder;
    session.close().await;
    edge.stop().await;
    (out, decoder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rgba_frames_from_the_software_decoder() {
    let options = ClientOptions {
        decoder: DecoderPreference::Software,
        format: PixelFormat::Rgba,
    };
    let (frames, decoder) = frames(options, 20).await;
    assert_eq!(decoder, SOFTWARE_DECODER);
    for f in &frames {
        let (w, h) = (f.width as usize, f.height as usize);
        assert_eq!((w, h, f.format), (1280, 720, PixelFormat::Rgba));
        let planes = f.planes();
        assert_eq!(planes.len(), 1);
        assert!(planes[0].stride >= w * 4);
        assert_eq!(planes[0].rows, h);
        assert_eq!(f.data.len(), w * 4 * h);
        assert!(f.luma().is_empty(), "no NV12 luma plane in an RGBA frame");
        // The SDK read the stamp from the RGBA picture; reading it again agrees.
        let stamp = f.stamp.expect("every RGBA frame's stamp passes its CRC");
        assert_eq!(read_luma(&f.to_luma(), w, h, w).unwrap(), stamp);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reports_its_decoder_and_hands_out_nv12() {
    let (frames, decoder) = frames(ClientOptions::default(), 10).await;
    let registered = HARDWARE_DECODERS
        .iter()
        .any(|e| gstreamer::ElementFactory::find(e).is_some());
    if registered {
        assert!(decoder == SOFTWARE_DECODER || HARDWARE_DECODERS.contains(&decoder));
    } else {
        // No hardware decoder on this machine: the fallback.
        assert_eq!(decoder, SOFTWARE_DECODER);
    }
    for f in &frames {
        let (w, h) = (f.width as usize, f.height as usize);
        assert_eq!(f.format, PixelFormat::Nv12);
        let planes = f.planes();
        assert_eq!(planes.len(), 2);
        assert_eq!((planes[0].stride, planes[0].rows), (w, h));
        assert_eq!((planes[1].stride, planes[1].rows), (w, h.div_ceil(2)));
        assert_eq!(f.data.len(), w * h + w * h.div_ceil(2));
        assert!(f.stamp.is_some());
    }
}
