//! Building the one PeerConnection each participant holds: codecs, interceptors,
//! the UDP port, the advertised address and ICE timeouts.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::transport::RTCIceCandidateType;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler};

use super::feedback::KeyframeRequestForwarder;
use crate::config::MediaConfig;

pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// After the application-most default interceptor, so every interceptor has seen the
/// inbound RTCP before keyframe requests are picked out of it.
const KEYFRAME_FORWARDER_SLOT: usize = 14_000;

/// Hands out UDP ports from the configured range, round robin; the builder reports a
/// port that is taken and the next one is tried.
pub struct PortAllocator {
    min: u16,
    max: u16,
    next: AtomicU32,
}

impl PortAllocator {
    pub fn new(min: u16, max: u16) -> Self {
        PortAllocator {
            min,
            max,
            next: AtomicU32::new(0),
        }
    }

    fn span(&self) -> u32 {
        (self.max as u32).saturating_sub(self.min as u32) + 1
    }

    /// Port 0 (any) when the range is 0..0.
    fn next_port(&self) -> u16 {
        if self.min == 0 {
            return 0;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.span();
        self.min + n as u16
    }
}

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
fn media_engine() -> webrtc::error::Result<MediaEngine> {
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

/// Builds a PeerConnection bound to one UDP port on each configured media address.
pub async fn build_peer(
    media: &MediaConfig,
    ports: &PortAllocator,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> webrtc::error::Result<Arc<dyn PeerConnection>> {
    let mut last_err = None;
    // A taken port fails the build; try the next few in the range.
    for _ in 0..ports.span().min(16) {
        let port = ports.next_port();
        let addrs: Vec<SocketAddr> = media
            .bind_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect();
        match build_on(media, addrs, handler.clone()).await {
            Ok(pc) => return Ok(pc),
            Err(e) => last_err = Some(e),
        }
        if port == 0 {
            break;
        }
    }
    Err(last_err.unwrap_or_else(|| webrtc::error::Error::Other("no media port available".into())))
}

async fn build_on(
    media: &MediaConfig,
    addrs: Vec<SocketAddr>,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> webrtc::error::Result<Arc<dyn PeerConnection>> {
    let mut engine = media_engine()?;
    let registry = register_default_interceptors(Registry::new(), &mut engine)?.with(
        Slot::from(KEYFRAME_FORWARDER_SLOT),
        KeyframeRequestForwarder::default(),
    );

    let loopback = media.bind_ips.iter().any(IpAddr::is_loopback);
    let mut settings = SettingEngineBuilder::new()
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
    if !media.advertise_ips.is_empty() {
        settings = settings.with_nat_1to1_ips(
            media
                .advertise_ips
                .iter()
                .map(|ip| ip.to_string())
                .collect(),
            RTCIceCandidateType::Host,
        );
    }
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
