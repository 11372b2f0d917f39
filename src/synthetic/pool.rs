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
/// The media clock: audio every 2 ticks, video frames at 30/s.
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

/// A sending track of a client: its sender, SSRC and (once negotiated) payload type.
pub struct Sending {
    pub sender: RTCRtpSenderId,
    pub ssrc: u32,
    payload_type: Option<u8>,
}

impl Sending {
    pub fn new(sender: RTCRtpSenderId, ssrc: u32) -> Sending {
        Sending {
            sender,
            ssrc,
            payload_type: None,
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
    seq: (u16, u16),
    ts: (u32, u32),
    frame: u64,
    force_keyframe: bool,
}

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
                seq: (rand::random(), rand::random()),
                ts: (rand::random(), rand::random()),
                frame: 0,
                force_keyframe: false,
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

    /// One 10 ms tick of media: audio every other tick, video frames at 30/s.
    fn send_media(&mut self, tick: u64, now: Instant) {
        if !self.connected || self.shared.stop_media.load(Ordering::Relaxed) {
            return;
        }
        if tick.is_multiple_of(2) && self.audio.is_some() {
            let counter = self.shared.audio_sent.fetch_add(1, Ordering::Relaxed);
            let payload = encode(
                [0xfc, 0xff],
                counter,
                now_micros(),
                self.plan.audio_packet_bytes,
            );
            let (seq, ts) = (self.seq.1, self.ts.1);
            self.write(false, seq, ts, true, payload, now);
            self.seq.1 = seq.wrapping_add(1);
            self.ts.1 = ts.wrapping_add(960);
        }
        let (Some(codec), true) = (self.plan.video, self.video.is_some()) else {
            return;
        };
        if (tick * 30) / 100 == ((tick + 1) * 30) / 100 {
            return;
        }
        let key = self
            .frame
            .is_multiple_of(self.plan.keyframe_interval_frames)
            || std::mem::take(&mut self.force_keyframe);
        let per_frame = self.plan.packets_per_frame();
        for i in 0..per_frame {
            let counter = self.shared.video_sent.fetch_add(1, Ordering::Relaxed);
            let head = codec.payload_head(i == 0, key);
            let payload = encode(head, counter, now_micros(), self.plan.video_packet_bytes);
            let seq = self.seq.0;
            self.write(true, seq, self.ts.0, i + 1 == per_frame, payload, now);
            self.seq.0 = seq.wrapping_add(1);
        }
        self.ts.0 = self.ts.0.wrapping_add(3000);
        self.frame += 1;
    }

    fn write(
        &mut self,
        video: bool,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
        now: Instant,
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
        let Some(mut sender) = self.pc.rtp_sender(sending.sender) else {
            return;
        };
        // The payload type this connection negotiated for the codec we send (H.264:
        // packetization mode 1, what the synthetic packets are).
        let pt = *sending.payload_type.get_or_insert_with(|| {
            sender
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                .max_by_key(|c| c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1"))
                .map_or(0, |c| c.payload_type)
        });
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc: sending.ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        let _ = sender.write_rtp(now, packet);
    }
}
