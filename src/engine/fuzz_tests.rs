//! Property test of the one-port path against hostile input: real datagrams (STUN,
//! DTLS, SRTP, SRTCP) captured from an in-memory session between a server connection
//! and an rtc client, mutated a million times and fed to the demux and to the server's
//! live connection. The property: no panic, and the connection still answers afterwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::build::server_peer;
use super::demux::Demux;
use crate::config::SrtpPolicy;

pub(super) const SERVER: &str = "127.0.0.1:40000";
pub(super) const CLIENT: &str = "127.0.0.1:41000";

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(super) fn tagged(
    now: Instant,
    local: SocketAddr,
    peer: SocketAddr,
    message: BytesMut,
) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: peer,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message,
    }
}

pub(super) fn client(now: Instant) -> (RTCPeerConnection, rtc::rtp_transceiver::RTCRtpSenderId) {
    let mut me = MediaEngine::default();
    me.register_default_codecs().unwrap();
    let se = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_setting_engine(se)
        .with_media_engine(me)
        .build(now)
        .unwrap();
    let track = MediaStreamTrack::new(
        "s".into(),
        "camera".into(),
        "camera".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(0x1234),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.into(),
                clock_rate: 90_000,
                ..Default::default()
            },
            ..Default::default()
        }],
    );
    let sender = pc.add_track(track).unwrap();
    let c = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".into(),
            address: "127.0.0.1".into(),
            port: 41000,
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .unwrap();
    pc.add_local_candidate(RTCIceCandidate::from(&c).to_json().unwrap())
        .unwrap();
    (pc, sender)
}

/// Runs both connections in memory until `done` or 5 s; returns client->server datagrams.
fn pump(
    server: &mut RTCPeerConnection,
    client: &mut RTCPeerConnection,
    done: impl FnMut(&mut RTCPeerConnection) -> bool,
) -> Vec<BytesMut> {
    pump_reading(server, client, done, |_| {})
}

/// As [`pump`], handing every message the server's application reads to `read`.
pub(super) fn pump_reading(
    server: &mut RTCPeerConnection,
    client: &mut RTCPeerConnection,
    mut done: impl FnMut(&mut RTCPeerConnection) -> bool,
    mut read: impl FnMut(rtc::peer_connection::message::RTCMessage),
) -> Vec<BytesMut> {
    let mut captured = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let now = Instant::now();
        while let Some(m) = client.poll_write() {
            captured.push(m.message.clone());
            let _ = server.handle_read(tagged(now, addr(SERVER), addr(CLIENT), m.message));
        }
        while let Some(m) = server.poll_write() {
            let _ = client.handle_read(tagged(now, addr(CLIENT), addr(SERVER), m.message));
        }
        while let Some(m) = server.poll_read() {
            read(m.message);
        }
        while client.poll_read().is_some() {}
        while client.poll_event().is_some() {}
        if done(server) {
            break;
        }
        for pc in [&mut *server, &mut *client] {
            if pc.poll_timeout().is_some_and(|t| t <= now) {
                let _ = pc.handle_timeout(now);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    captured
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    match rng.random_range(0..6) {
        0 => {
            // flip a few bytes
            for _ in 0..rng.random_range(1..8) {
                if !d.is_empty() {
                    let i = rng.random_range(0..d.len());
                    d[i] ^= rng.random::<u8>() | 1;
                }
            }
        }
        1 => d.truncate(rng.random_range(0..=d.len())),
        2 => d.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
        3 => {
            // a length field or header byte set to an extreme
            if d.len() > 4 {
                let i = rng.random_range(0..4);
                d[i] = [0x00, 0xff, 0x7f, 0x80][rng.random_range(0..4)];
            }
        }
        4 => {
            d = (0..rng.random_range(0..1500))
                .map(|_| rng.random())
                .collect()
        }
        _ => {
            // splice the head of one kind onto random bytes
            let keep = rng.random_range(0..=d.len().min(24));
            d.truncate(keep);
            d.extend((0..rng.random_range(0..300)).map(|_| rng.random::<u8>()));
        }
    }
    d
}

/// A server connection and an rtc client connected in memory.
pub(super) struct Session {
    pub server: RTCPeerConnection,
    pub client: RTCPeerConnection,
    pub sender: rtc::rtp_transceiver::RTCRtpSenderId,
    /// The server's ICE username fragment.
    pub ufrag: String,
    /// The client's datagrams to the server while connecting.
    pub datagrams: Vec<BytesMut>,
}

pub(super) fn connected_session(t0: Instant) -> Session {
    let mut server = server_peer(
        addr(SERVER),
        false,
        SrtpPolicy::Gcm,
        Default::default(),
        Default::default(),
        Default::default(),
        t0,
    )
    .unwrap();
    let (mut client, sender) = client(t0);
    let offer = client.create_offer(None).unwrap();
    client.set_local_description(t0, offer.clone()).unwrap();
    server.set_remote_description(t0, offer).unwrap();
    let answer = server.create_answer(None).unwrap();
    server.set_local_description(t0, answer.clone()).unwrap();
    let ufrag = answer
        .sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim()
        .to_string();
    client.set_remote_description(t0, answer).unwrap();

    let mut connected = false;
    let seeds = pump(&mut server, &mut client, |s| {
        while let Some(e) = s.poll_event() {
            if let rtc::peer_connection::event::RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                RTCPeerConnectionState::Connected,
            ) = e
            {
                connected = true;
            }
        }
        connected
    });
    assert!(connected, "the in-memory session connects");
    Session {
        server,
        client,
        sender,
        ufrag,
        datagrams: seeds,
    }
}

/// The client's video payload type.
pub(super) fn video_payload_type(s: &mut Session) -> u8 {
    s.client
        .rtp_sender(s.sender)
        .unwrap()
        .get_parameters()
        .rtp_parameters
        .codecs[0]
        .payload_type
}

/// A VP8-looking packet numbered `seq` from the client's camera.
pub(super) fn video_packet(pt: u8, seq: u16) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: seq as u32 * 3000,
            ssrc: 0x1234,
            ..Default::default()
        },
        payload: Bytes::from(vec![0x10, 0, 0x9d, 0x01, 0x2a, 7, 7, 7]),
    }
}

#[test]
fn a_million_mutated_datagrams_never_panic_the_demux_or_a_connection() {
    let mut session = connected_session(Instant::now());
    let pt = video_payload_type(&mut session);
    let Session {
        mut server,
        mut client,
        sender,
        ufrag,
        datagrams: mut seeds,
    } = session;
    // Some SRTP (and the SRTCP that comes with it) to mutate too.
    for i in 0..50u16 {
        client
            .rtp_sender(sender)
            .unwrap()
            .write_rtp(Instant::now(), video_packet(pt, i))
            .unwrap();
    }
    let mut n = 0;
    seeds.extend(pump(&mut server, &mut client, |_| {
        n += 1;
        n > 200
    }));
    assert!(
        seeds.len() > 20,
        "captured STUN, DTLS and SRTP: {}",
        seeds.len()
    );

    let iterations = if cfg!(debug_assertions) {
        50_000
    } else {
        1_000_000
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut demux = Demux::default();
    demux.add(1u32, &ufrag);
    let (mut routed, mut refused) = (0u64, 0u64);
    let now = Instant::now();
    for i in 0..iterations {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let d = if rng.random_range(0..10) == 0 {
            seed.to_vec()
        } else {
            mutate(&mut rng, seed)
        };
        let from = SocketAddr::from(([127, 0, 0, 1], 41000 + (i % 3) as u16));
        if demux.route(&d, from).is_ok() {
            routed += 1;
        }
        if server
            .handle_read(tagged(now, addr(SERVER), from, BytesMut::from(&d[..])))
            .is_err()
        {
            refused += 1;
        }
        if i % 64 == 0 {
            while server.poll_read().is_some() {}
            while server.poll_event().is_some() {}
            while server.poll_write().is_some() {}
        }
    }
    eprintln!(
        "{iterations} datagrams from {} seeds: {routed} routed by the demux, {refused} refused with an error",
        seeds.len()
    );
    // Still a working connection: a real binding request from the client's address gets
    // an answer.
    let stun = seeds
        .iter()
        .find(|s| super::demux::stun_local_ufrag(s).is_some())
        .expect("a captured binding request")
        .clone();
    server
        .handle_read(tagged(Instant::now(), addr(SERVER), addr(CLIENT), stun))
        .unwrap();
    let mut answered = false;
    while let Some(m) = server.poll_write() {
        answered |= m.transport.peer_addr == addr(CLIENT);
    }
    assert!(answered, "the connection still answers STUN");
}
