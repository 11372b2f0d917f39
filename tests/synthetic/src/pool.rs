//! Many synthetic participants' media on one thread: each participant's sans-I/O rtc
//! `RTCPeerConnection` and its UDP socket (the server tells connections apart by source
//! address, so each needs its own), all driven by one mio poll loop with batched
//! receive. This is what lets one core of load drive a server far past what one async
//! webrtc-rs connection per participant allows. Signaling stays async
//! ([`super::lite`]); it reaches a participant's connection by running a closure on this
//! thread ([`Pool::run`]).

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState, BATCH_SIZE};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::oneshot;

use super::media::{encode, now_micros, MediaPlan};
use super::participant::Shared;

const WAKER: Token = Token(usize::MAX);
/// The media clock: each tick sends the audio packets and video frames that fall due.
const TICK: Duration = Duration::from_millis(10);
/// Media is sent for at most this long, whatever happens.
const MAX_TICKS: u64 = 3600 * 100;
const RECV_BUF: usize = 64 * 1024;

type Job = Box<dyn FnOnce(&mut PoolState) + Send>;

/// A handle to one media thread.
#[derive(Clone)]
pub struct Pool {
    jobs: mpsc::Sender<Job>,
    waker: Arc<Waker>,
}

impl Pool {
    /// Starts the thread; it ends when every handle is dropped.
    pub fn start(name: &str) -> io::Result<Pool> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel::<Job>();
        let registry = poll.registry().try_clone()?;
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut state = PoolState {
                    registry,
                    clients: HashMap::new(),
                    next_key: 0,
                };
                run(poll, rx, &mut state);
            })?;
        Ok(Pool { jobs: tx, waker })
    }

    /// Runs `f` on the media thread and returns its result.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut PoolState) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |state| {
            let _ = tx.send(f(state));
        });
        self.jobs.send(job).ok()?;
        self.waker.wake().ok()?;
        rx.await.ok()
    }
}

/// A sending track of a client: its sender, its layers and (once negotiated) its payload
/// type and the ids of the mid/rid header extensions.
pub struct Sending {
    pub sender: RTCRtpSenderId,
    /// One per encoding, lowest first (one without simulcast).
    pub layers: Vec<LayerSend>,
    negotiated: Option<Negotiated>,
}

/// One encoding of a sending track: its SSRC, rid and numbering.
pub struct LayerSend {
    pub ssrc: u32,
    pub rid: String,
    seq: u16,
    ts: u32,
}

#[derive(Clone)]
struct Negotiated {
    payload_type: u8,
    /// (mid extension id, this sender's mid), (rid extension id)
    mid: Option<(u8, Bytes)>,
    rid_ext: Option<u8>,
}

impl Sending {
    /// `layers`: (SSRC, rid) per encoding, lowest first; rid empty without simulcast.
    pub fn new(sender: RTCRtpSenderId, layers: Vec<(u32, String)>) -> Sending {
        Sending {
            sender,
            layers: layers
                .into_iter()
                .map(|(ssrc, rid)| LayerSend {
                    ssrc,
                    rid,
                    seq: rand::random(),
                    ts: rand::random(),
                })
                .collect(),
            negotiated: None,
        }
    }
}

/// One synthetic participant's connection on the media thread.
pub struct Client {
    pub pc: RTCPeerConnection,
    socket: UdpSocket,
    state: UdpSocketState,
    pub local: SocketAddr,
    shared: Arc<Shared>,
    plan: MediaPlan,
    pub video: Option<Sending>,
    pub audio: Option<Sending>,
    /// rtc's track id of each received track -> (publisher, "audio" | "video").
    remote: HashMap<String, (String, &'static str)>,
    connected: bool,
    frame: u64,
    force_keyframe: bool,
    /// The downlink policer's tokens (bytes) and when they were last filled.
    bucket: f64,
    bucket_at: Instant,
}

/// The policer holds at most this much: about 100 ms at a few hundred kbit/s, like a
/// shaper's short queue on a slow link.
const DOWNLINK_BUCKET_BYTES: f64 = 8_000.0;

pub struct PoolState {
    registry: mio::Registry,
    clients: HashMap<usize, Client>,
    next_key: usize,
}

impl PoolState {
    /// Binds a socket on `ip` for a new client and registers it; returns its key.
    pub fn add(
        &mut self,
        ip: IpAddr,
        pc: RTCPeerConnection,
        shared: Arc<Shared>,
        plan: MediaPlan,
    ) -> io::Result<usize> {
        let mut socket = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        // A subscriber's share of a frame arrives as one burst; while this thread serves
        // the other sockets it must wait in the buffer, not be lost (best effort: the
        // kernel caps it at net.core.rmem_max).
        let _ = state.set_recv_buffer_size(UdpSockRef::from(&socket), 1 << 20);
        let local = socket.local_addr()?;
        let key = self.next_key;
        self.next_key += 1;
        self.registry
            .register(&mut socket, Token(key), Interest::READABLE)?;
        self.clients.insert(
            key,
            Client {
                pc,
                socket,
                state,
                local,
                shared,
                plan,
                video: None,
                audio: None,
                remote: HashMap::new(),
                connected: false,
                frame: 0,
                force_keyframe: false,
                bucket: DOWNLINK_BUCKET_BYTES,
                bucket_at: Instant::now(),
            },
        );
        Ok(key)
    }

    pub fn client(&mut self, key: usize) -> Option<&mut Client> {
        self.clients.get_mut(&key)
    }

    pub fn remove(&mut self, key: usize) {
        if let Some(mut c) = self.clients.remove(&key) {
            let _ = self.registry.deregister(&mut c.socket);
            let _ = c.pc.close();
        }
    }
}

fn run(mut poll: Poll, jobs: mpsc::Receiver<Job>, state: &mut PoolState) {
    let mut events = Events::with_capacity(1024);
    let mut bufs: Vec<Vec<u8>> = (0..BATCH_SIZE).map(|_| vec![0u8; RECV_BUF]).collect();
    let mut meta = vec![RecvMeta::default(); BATCH_SIZE];
    let mut next_tick = Instant::now() + TICK;
    let mut ticks = 0u64;
    loop {
        let now = Instant::now();
        let deadline = state
            .clients
            .values_mut()
            .filter_map(|c| c.pc.poll_timeout())
            .fold(next_tick, Instant::min);
        let wait = deadline.saturating_duration_since(now).min(TICK);
        if poll.poll(&mut events, Some(wait)).is_err() {
            continue;
        }
        loop {
            match jobs.try_recv() {
                Ok(job) => job(state),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        for event in events.iter() {
            let Some(c) = state.clients.get_mut(&event.token().0) else {
                continue;
            };
            c.receive(&mut bufs, &mut meta, now);
        }
        let media_due = now >= next_tick && ticks < MAX_TICKS;
        if media_due {
            next_tick += TICK;
            if next_tick < now {
                next_tick = now + TICK; // fell behind: skip, never burst
            }
        }
        for c in state.clients.values_mut() {
            if c.pc.poll_timeout().is_some_and(|t| t <= now) {
                let _ = c.pc.handle_timeout(now);
            }
            c.settle();
            if media_due {
                c.send_media(ticks, now);
            }
            c.flush();
        }
        if media_due {
            ticks += 1;
        }
    }
}

impl Client {
    fn receive(&mut self, bufs: &mut [Vec<u8>], meta: &mut [RecvMeta], now: Instant) {
        // Bounded: a flood on one socket cannot starve the others.
        for _ in 0..8 {
            let mut slices: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let n = match self
                .state
                .recv(UdpSockRef::from(&self.socket), &mut slices, meta)
            {
                Ok(n) => n,
                Err(_) => return, // WouldBlock, or an ICMP error: nothing to read now
            };
            for (m, buf) in meta.iter().zip(slices.iter()).take(n) {
                for datagram in buf[..m.len].chunks(m.stride.max(1)) {
                    if !self.downlink_admits(datagram.len(), now) {
                        continue;
                    }
                    let msg = TaggedBytesMut {
                        now,
                        transport: TransportContext {
                            local_addr: self.local,
                            peer_addr: m.addr,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: BytesMut::from(datagram),
                    };
                    let _ = self.pc.handle_read(msg);
                }
            }
            self.settle();
        }
    }

    /// A simulated slow downlink (`Shared::downlink_limit_bps`, 0 = none): a token
    /// bucket that drops what exceeds the rate, as a policer at the access link would.
    fn downlink_admits(&mut self, bytes: usize, now: Instant) -> bool {
        let limit = self.shared.downlink_limit_bps.load(Ordering::Relaxed);
        let elapsed = now.saturating_duration_since(self.bucket_at).as_secs_f64();
        self.bucket_at = now;
        if limit == 0 {
            self.bucket = DOWNLINK_BUCKET_BYTES;
            return true;
        }
        self.bucket = (self.bucket + elapsed * limit as f64 / 8.0).min(DOWNLINK_BUCKET_BYTES);
        if self.bucket < bytes as f64 {
            self.shared.downlink_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.bucket -= bytes as f64;
        true
    }

    /// Handles the connection's events and counts what it received.
    fn settle(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => {
                    self.connected = s == RTCPeerConnectionState::Connected;
                    self.shared
                        .connected
                        .store(self.connected, Ordering::Relaxed);
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let kind = match self.pc.rtp_receiver(init.receiver_id) {
                        Some(r) if r.track().kind() == RtpCodecKind::Video => "video",
                        _ => "audio",
                    };
                    // Switchyard names each stream after its publisher.
                    let publisher = init.stream_ids.first().cloned().unwrap_or_default();
                    self.remote.insert(init.track_id, (publisher, kind));
                }
                _ => {}
            }
        }
        while let Some(msg) = self.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(track, p) => {
                    if let Some((publisher, kind)) = self.remote.get(&track) {
                        let key = (publisher.clone(), kind.to_string());
                        let h = &p.header;
                        super::participant::lock(&self.shared.received)
                            .entry(key)
                            .or_default()
                            .record(h.ssrc, h.payload_type, h.sequence_number, &p.payload);
                    }
                }
                RTCMessage::RtcpPacket(_, packets)
                    if packets
                        .iter()
                        .any(|p| p.as_any().is::<PictureLossIndication>()) =>
                {
                    self.shared.plis_received.fetch_add(1, Ordering::Relaxed);
                    self.force_keyframe = true;
                }
                _ => {}
            }
        }
    }

    fn flush(&mut self) {
        while let Some(msg) = self.pc.poll_write() {
            // Loopback: a full buffer is loss, as on a network; never wait.
            let _ = self.socket.send_to(&msg.message, msg.transport.peer_addr);
        }
    }

    /// One 10 ms tick of media: audio and video frames at the plan's rates (each
    /// simulcast layer its own share: the lowest one packet a frame, the middle a third
    /// of the full layer's).
    fn send_media(&mut self, tick: u64, now: Instant) {
        if !self.connected || self.shared.stop_media.load(Ordering::Relaxed) {
            return;
        }
        if due(tick, self.plan.audio_pps) && self.audio.is_some() {
            let counter = self.shared.audio_sent.fetch_add(1, Ordering::Relaxed);
            let payload = encode(
                [0xfc, 0xff],
                counter,
                now_micros(),
                self.plan.audio_packet_bytes,
            );
            self.write(false, 0, true, payload, now, 960);
        }
        let (Some(codec), Some(video)) = (self.plan.video, self.video.as_ref()) else {
            return;
        };
        if !due(tick, self.plan.video_fps) {
            return;
        }
        let key = self
            .frame
            .is_multiple_of(self.plan.keyframe_interval_frames)
            || std::mem::take(&mut self.force_keyframe);
        let per_layer = self.plan.layer_packets_per_frame();
        let layers = video.layers.len().min(per_layer.len());
        for (layer, &per_frame) in per_layer.iter().enumerate().take(layers) {
            for i in 0..per_frame {
                let counter = self.shared.video_sent.fetch_add(1, Ordering::Relaxed);
                let head = codec.payload_head(i == 0, key);
                let payload = encode(head, counter, now_micros(), self.plan.video_packet_bytes);
                let last = i + 1 == per_frame;
                self.write(true, layer, last, payload, now, if last { 3000 } else { 0 });
            }
        }
        self.frame += 1;
    }

    /// Sends one packet of `layer` and advances its numbering (`ts_step` after it).
    fn write(
        &mut self,
        video: bool,
        layer: usize,
        marker: bool,
        payload: Vec<u8>,
        now: Instant,
        ts_step: u32,
    ) {
        let mime = match video {
            true => self.plan.video.map_or("video/VP8", |v| v.mime()),
            false => "audio/opus",
        };
        let Some(sending) = (if video {
            &mut self.video
        } else {
            &mut self.audio
        }) else {
            return;
        };
        let negotiated = match &sending.negotiated {
            Some(n) => n.clone(),
            None => {
                let Some(n) = negotiated(&mut self.pc, sending.sender, mime) else {
                    return;
                };
                sending.negotiated = Some(n.clone());
                n
            }
        };
        let simulcast = sending.layers.len() > 1;
        let Some(l) = sending.layers.get_mut(layer) else {
            return;
        };
        let mut header = rtp::header::Header {
            version: 2,
            marker,
            payload_type: negotiated.payload_type,
            sequence_number: l.seq,
            timestamp: l.ts,
            ssrc: l.ssrc,
            ..Default::default()
        };
        l.seq = l.seq.wrapping_add(1);
        l.ts = l.ts.wrapping_add(ts_step);
        // A browser sends mid and rid until the server acknowledges the SSRC; sending
        // them always is allowed and keeps the synthetic publisher simple.
        if simulcast {
            if let (Some((id, mid)), Some(rid_id)) = (&negotiated.mid, negotiated.rid_ext) {
                header.extension = true;
                header.extension_profile = 0xBEDE;
                header.extensions = vec![
                    rtp::header::Extension {
                        id: *id,
                        payload: mid.clone(),
                    },
                    rtp::header::Extension {
                        id: rid_id,
                        payload: Bytes::copy_from_slice(l.rid.as_bytes()),
                    },
                ];
            }
        }
        let packet = rtp::Packet {
            header,
            payload: Bytes::from(payload),
        };
        if let Some(mut sender) = self.pc.rtp_sender(sending.sender) {
            let _ = sender.write_rtp(now, packet);
        }
    }
}

/// What a sender negotiated: the payload type of the codec we send (H.264: packetization
/// mode 1, what the synthetic packets are), and the mid/rid extension ids and our mid.
fn negotiated(
    pc: &mut RTCPeerConnection,
    sender: RTCRtpSenderId,
    mime: &str,
) -> Option<Negotiated> {
    let mid = pc
        .get_transceivers()
        .collect::<Vec<_>>()
        .into_iter()
        .find_map(|t| {
            let t = pc.rtp_transceiver(t)?;
            (t.sender() == Some(sender))
                .then(|| t.mid().clone())
                .flatten()
        });
    let mut sender = pc.rtp_sender(sender)?;
    let params = &sender.get_parameters().rtp_parameters;
    let payload_type = params
        .codecs
        .iter()
        .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .max_by_key(|c| c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1"))
        .map(|c| c.payload_type)?;
    let ext = |uri: &str| {
        params
            .header_extensions
            .iter()
            .find(|e| e.uri == uri)
            .map(|e| e.id as u8)
    };
    let mid_ext = ext("urn:ietf:params:rtp-hdrext:sdes:mid");
    let rid_ext = ext("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
    Some(Negotiated {
        payload_type,
        mid: mid_ext.zip(mid.map(Bytes::from)),
        rid_ext,
    })
}

/// Whether an event `per_second` times a second (at most 100) falls in 10 ms tick `tick`:
/// spread evenly, so 30/s alternates 3- and 4-tick gaps.
fn due(tick: u64, per_second: u32) -> bool {
    let rate = u64::from(per_second.min(100));
    (tick * rate) / 100 != ((tick + 1) * rate) / 100
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn rates_are_met_each_second_and_spread() {
        for rate in [1, 5, 30, 50, 100] {
            let ticks: Vec<u64> = (0..100).filter(|&t| due(t, rate)).collect();
            assert_eq!(ticks.len(), rate as usize, "{rate}/s");
            let widest = ticks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
            assert!(
                widest <= 100 / u64::from(rate) + 1,
                "{rate}/s bunched: {ticks:?}"
            );
        }
        assert_eq!(
            (0..100).filter(|&t| due(t, 500)).count(),
            100,
            "capped at 100/s"
        );
    }
}
