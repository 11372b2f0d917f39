//! Building one participant's sans-I/O `RTCPeerConnection`: the codecs the router
//! forwards, the interceptors, ICE-lite with our own credentials and our one host
//! candidate (the shard's shared port), and the SRTP profiles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder};
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::shared::error::Result;

use super::feedback::KeyframeRequestForwarder;
use super::retransmit::{RetransmissionLimiter, RetransmitLimits};
use super::uplink::{UplinkFeedback, UplinkFeedbackMeter};
use crate::config::SrtpPolicy;
use crate::metrics::Metrics;

use super::extensions::AUDIO_LEVEL_URI;

/// After the application-most default interceptor, so every interceptor has seen the
/// inbound RTCP before keyframe requests are picked out of it.
const KEYFRAME_FORWARDER_SLOT: usize = 14_000;

/// Just below the NACK responder (4 000) on the way out, so its resends pass through.
const RETRANSMISSION_LIMITER_SLOT: usize = 3_500;
/// Below the transport-cc receiver (8 000) on the way out, so its feedback passes.
const UPLINK_FEEDBACK_SLOT: usize = 3_400;

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
fn media_engine() -> Result<MediaEngine> {
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

/// A browser NACKs one lost packet about ten times before giving up on it (libwebrtc's
/// NackModule); rtc's generator would NACK it until it leaves the window, and on a
/// policed link the retransmissions of retransmissions then keep the link full.
const MAX_NACKS_PER_PACKET: u16 = 10;

/// How often the server's NACK generator looks for holes in what publishers send and
/// NACKs them; rtc's default, 100 ms, is what the synthetic clients keep. A publisher's
/// lost packet is missing for every subscriber until it comes back, and their own NACKs
/// to us find nothing to resend meanwhile: at 5 % loss on a publisher's link, 40 ms
/// took what the others decoded of its camera from 86-92 % to 95-97 % of its frames
/// (tests/e2e/loss.test.mjs). Browsers ignore a repeated NACK within a round trip, so a
/// long path costs a few small NACK packets, no duplicate resends.
pub const SERVER_NACK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(40);
/// rtc's own default, for the synthetic clients (which stand in for browsers).
pub const CLIENT_NACK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// How far behind the newest packet of a publisher's stream a packet may arrive and
/// still be decrypted: resends (no RTX, so they keep their numbers) must get through
/// for as long as the server's NACKs ask for them (10 x 40 ms, during which a full
/// layer sends a few hundred packets, a keyframe's burst included). The window is a
/// bitmap: 128 bytes per stream.
pub const SRTP_REPLAY_WINDOW: usize = 1024;

/// rtc's default interceptors (NACK both ways, transport-cc feedback for what arrives,
/// sender and receiver reports, the simulcast header extensions), with NACK generation
/// bounded per packet as browsers bound it, looking for holes every `nack_interval`.
/// Used by the server and the load tester.
pub fn interceptor_registry(
    engine: &mut MediaEngine,
    nack_interval: std::time::Duration,
) -> Result<Registry> {
    for parameter in ["", "pli"] {
        engine.register_feedback(
            RTCPFeedback {
                typ: "nack".into(),
                parameter: parameter.into(),
            },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(engine)?;
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_interval(nack_interval)
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build(),
        );
    let registry = configure_twcc_receiver_only(registry, engine)?;
    Ok(configure_rtcp_reports(registry))
}

/// The SRTP profiles we accept. rtc, as the DTLS server, takes the CLIENT's first
/// profile that is also on this list, and libwebrtc lists AES_CM_80 first: so GCM wins
/// only when CM_80 is not on our list at all (see docs/ARCHITECTURE.md, "SRTP").
fn srtp_profiles(policy: SrtpPolicy) -> Vec<SrtpProtectionProfile> {
    use SrtpProtectionProfile::*;
    match policy {
        // AES-128-GCM alone: Chromium lists AES-256-GCM before it, and would get that.
        SrtpPolicy::Gcm => vec![Srtp_Aead_Aes_128_Gcm],
        SrtpPolicy::Compatible => vec![
            Srtp_Aead_Aes_128_Gcm,
            Srtp_Aead_Aes_256_Gcm,
            Srtp_Aes128_Cm_Hmac_Sha1_80,
        ],
    }
}

/// A server-side connection: ICE-lite on `candidate` (the shard's shared address as
/// clients reach it), DTLS server, no gathering of its own. Its ICE credentials are
/// rtc's random ones, new on every ICE restart: the demux learns each ufrag from the
/// local description (`Peer::new_local_ufrag`).
pub fn server_peer(
    candidate: SocketAddr,
    ice_tcp: bool,
    srtp: SrtpPolicy,
    metrics: Arc<Metrics>,
    retransmit_limits: RetransmitLimits,
    uplink_feedback: UplinkFeedback,
    now: Instant,
) -> Result<RTCPeerConnection> {
    let mut engine = media_engine()?;
    let registry = interceptor_registry(&mut engine, SERVER_NACK_INTERVAL)?
        .with(
            Slot::from(KEYFRAME_FORWARDER_SLOT),
            KeyframeRequestForwarder::default(),
        )
        // Resends spaced, and without their old transport-wide numbers.
        .with(
            Slot::from(RETRANSMISSION_LIMITER_SLOT),
            RetransmissionLimiter::new(metrics, retransmit_limits),
        )
        .with(
            Slot::from(UPLINK_FEEDBACK_SLOT),
            UplinkFeedbackMeter::new(uplink_feedback),
        );
    let settings = SettingEngineBuilder::new()
        .with_lite(true)
        // mDNS would hide the one address we serve on behind a name.
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        // We answer the browser's offers, so this makes us the DTLS server, which is
        // what lets our profile list decide between GCM and CM_80.
        .with_answering_dtls_role(RTCDtlsRole::Server)
        .with_srtp_protection_profiles(srtp_profiles(srtp))
        // A resend comes back numbered as its original; rtc's default window (64)
        // refused one that came after more than 64 newer packets, a keyframe's burst
        // or a few hundred ms of video, so a lost packet whose resend came late was lost
        // for good, and the picture froze until the receiver asked for a keyframe.
        .with_srtp_replay_protection_window(SRTP_REPLAY_WINDOW)
        // Disconnected after 4 s of silence, failed 6 s later: a vanished participant is
        // removed within about 10 s (the WebSocket heartbeat catches most sooner).
        .with_ice_timeouts(
            Some(Duration::from_secs(4)),
            Some(Duration::from_secs(6)),
            Some(Duration::from_secs(1)),
        )
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_setting_engine(settings)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)?;
    pc.add_local_candidate(host_candidate(candidate, false)?)?;
    if ice_tcp {
        // RFC 6544's passive host candidate on the same port number: its priority is
        // below the UDP one's, so browsers that can use UDP do.
        pc.add_local_candidate(host_candidate(candidate, true)?)?;
    }
    Ok(pc)
}

fn host_candidate(
    addr: SocketAddr,
    tcp: bool,
) -> Result<rtc::peer_connection::transport::RTCIceCandidateInit> {
    let c = CandidateHostConfig {
        base_config: CandidateConfig {
            network: if tcp { "tcp" } else { "udp" }.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type: if tcp {
            rtc::ice::tcp_type::TcpType::Passive
        } else {
            rtc::ice::tcp_type::TcpType::Unspecified
        },
    }
    .new_candidate_host()?;
    RTCIceCandidate::from(&c).to_json()
}
