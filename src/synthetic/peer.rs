//! The synthetic participants' own PeerConnection (the async webrtc-rs API over rtc, a
//! full-ICE client on a port of its own, like a browser): default interceptors,
//! loopback candidates, and the codecs the tests send.
//!
//! The codec list mirrors the server's on purpose, with the payload types the synthetic
//! senders write (96, 102, 111): a browser-like list (rtc's `register_default_codecs`,
//! H.264 in six profiles) makes the server answer H.264 with another payload type than
//! the one these senders hard-code, and they do not yet follow the negotiated one. The
//! copy is kept apart from `engine::build` so a server-side change does not silently
//! change the test clients too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler};

use crate::engine::feedback::KeyframeRequestForwarder;

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// After the application-most default interceptor, so every interceptor has seen the
/// inbound RTCP before keyframe requests are picked out of it.
pub(crate) const KEYFRAME_FORWARDER_SLOT: usize = 14_000;

fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .into_iter()
    .map(|(typ, parameter)| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    })
    .collect()
}

/// The codecs the router forwards: Opus, VP8 and H.264 (constrained baseline,
/// packetization-mode 1, what every browser sends). VP8 first: every browser decodes it.
pub(crate) fn media_engine() -> webrtc::error::Result<MediaEngine> {
    let mut m = MediaEngine::default();
    let codec = |mime: &str, clock_rate, channels, fmtp: &str, fb: Vec<RTCPFeedback>, pt| {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_string(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp.to_string(),
                rtcp_feedback: fb,
            },
            payload_type: pt,
        }
    };
    m.register_codec(
        codec(
            MIME_TYPE_OPUS,
            48_000,
            2,
            "minptime=10;useinbandfec=1",
            vec![],
            111,
        ),
        RtpCodecKind::Audio,
    )?;
    m.register_codec(
        codec(MIME_TYPE_VP8, 90_000, 0, "", video_feedback(), 96),
        RtpCodecKind::Video,
    )?;
    m.register_codec(
        codec(
            MIME_TYPE_H264,
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            video_feedback(),
            102,
        ),
        RtpCodecKind::Video,
    )?;
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
