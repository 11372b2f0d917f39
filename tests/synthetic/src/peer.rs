//! The synthetic participants' own PeerConnection (the async webrtc-rs API over rtc, a
//! full-ICE client on a port of its own, like a browser): a browser-like codec offer,
//! default interceptors, loopback candidates. Nothing here is shared with the server's
//! `engine::build`, so a codec or extension mismatch between them fails a test.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler};

use switchyard::engine::feedback::KeyframeRequestForwarder;

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// After the application-most default interceptor, so every interceptor has seen the
/// inbound RTCP before keyframe requests are picked out of it.
pub(crate) const KEYFRAME_FORWARDER_SLOT: usize = 14_000;

/// What a browser offers, roughly: rtc's default codec set (Opus, VP8, VP9, H.264 in
/// several profiles and packetization modes, AV1, RTX) and the audio-level extension.
/// The server must pick its codecs out of a real offer, and the synthetic senders use
/// whatever payload type it accepted, as a browser does.
pub(crate) fn media_engine() -> webrtc::error::Result<MediaEngine> {
    let mut m = MediaEngine::default();
    m.register_default_codecs()?;
    m.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_string(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    Ok(m)
}

/// A client PeerConnection on one UDP port (any) of `bind_ip`.
pub async fn client_peer(
    bind_ip: IpAddr,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> webrtc::error::Result<Arc<dyn PeerConnection>> {
    let addrs = vec![SocketAddr::new(bind_ip, 0)];
    let mut engine = media_engine()?;
    let registry = register_default_interceptors(Registry::new(), &mut engine)?.with(
        Slot::from(KEYFRAME_FORWARDER_SLOT),
        KeyframeRequestForwarder::default(),
    );

    let loopback = bind_ip.is_loopback();
    let settings = SettingEngineBuilder::new()
        // mDNS would open a second socket per connection and hide the address we bind.
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(loopback)
        // Disconnected after 4 s of silence, failed 6 s later: a vanished participant is
        // removed within about 10 s (the WebSocket heartbeat catches most sooner).
        .with_ice_timeouts(
            Some(Duration::from_secs(4)),
            Some(Duration::from_secs(6)),
            Some(Duration::from_secs(1)),
        );
    let config = RTCConfigurationBuilder::new().build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(engine)
        .with_setting_engine(settings.build())
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(addrs)
        .build()
        .await?;
    Ok(Arc::new(pc))
}
