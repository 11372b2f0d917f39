//! One shard: a thread with a single-threaded tokio runtime that owns one UDP socket,
//! its rooms, their participants' peer connections and one timer heap.
//!
//! The loop (docs/ARCHITECTURE.md, "The packet path"):
//! 1. a batch of datagrams from the socket (recvmmsg/GRO) -> demux -> `handle_read`;
//! 2. every connection that was touched is settled: its events (state, tracks) are
//!    handled, its decrypted RTP is routed through its room to the subscriber legs
//!    (`write_rtp` on each), its RTCP keyframe requests go to the room;
//! 3. every connection with output is flushed: a subscriber's burst leaves as one GSO send;
//! 4. due timers (`handle_timeout`) run from one heap; signaling commands are taken
//!    between batches. Nothing here waits for anything but the socket, the command
//!    queue and the next deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::demux::{Demux, Miss};
use super::feedback::is_keyframe_request;
use super::peer::{Peer, RoomKey};
use super::routing::{Inbound, RoomHost};
use super::tcp::{TcpEvent, TcpMedia};
use super::udp::Udp;
use super::{Command, Ids};
use crate::config::SrtpPolicy;
use crate::id::{ParticipantId, TrackId};
use crate::metrics::Metrics;

/// Receive batches taken before the loop looks at commands and timers again.
const MAX_BATCHES_PER_WAKE: usize = 16;
/// Commands taken per wake, so a burst of signaling cannot starve the media.
const MAX_COMMANDS_PER_WAKE: usize = 64;
/// Room timers (keyframe-request retries) and first-offer waits are checked this often.
pub(super) const HOUSEKEEPING: Duration = Duration::from_millis(20);
/// rtc may report an already expired deadline again; such a peer is not run again
/// sooner than this (webrtc-rs's own driver does the same).
const MIN_TIMER_STEP: Duration = Duration::from_millis(1);
/// How long the server waits for a new participant's first offer before offering
/// itself (see `room::negotiation` for why the browser should offer first).
pub const FIRST_OFFER_WAIT: Duration = Duration::from_secs(3);

pub struct ShardSettings {
    pub index: usize,
    pub bind: SocketAddr,
    /// The address clients are told (1:1 NAT); the bound one when `None`.
    pub advertise: Option<IpAddr>,
    pub srtp: SrtpPolicy,
    /// Stamp transport-cc and estimate each subscriber's downlink.
    pub bwe: bool,
    pub max_participants: usize,
    /// A participant not connected this long after joining is removed.
    pub ice_connect_timeout: std::time::Duration,
    /// Where room, participant and track events go.
    pub webhooks: crate::webhook::WebhookSink,
    /// Listen for ICE-TCP on the UDP socket's port number too.
    pub ice_tcp: bool,
}

/// Binds the shard's socket and starts its thread; fails when the socket cannot be bound.
pub fn spawn(
    settings: ShardSettings,
    commands: mpsc::Receiver<Command>,
    ids: Arc<Ids>,
    metrics: Arc<Metrics>,
) -> std::io::Result<SocketAddr> {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("shard-{}", settings.index))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let udp = match Udp::bind(settings.bind).and_then(|u| Ok((u.local_addr()?, u))) {
                    Ok((addr, udp)) => {
                        let _ = bound_tx.send(Ok(addr));
                        (addr, udp)
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                let (bound, udp) = udp;
                let candidate = SocketAddr::new(settings.advertise.unwrap_or(bound.ip()), bound.port());
                let tcp = settings.ice_tcp.then(|| TcpMedia::bind(bound)).and_then(|r| {
                    r.map_err(|e| warn!(shard = settings.index, %bound, "no ICE-TCP: cannot listen: {e}")).ok()
                });
                info!(shard = settings.index, %bound, %candidate, ice_tcp = tcp.is_some(), gso_segments = udp.max_gso_segments(), "media shard started");
                let mut shard = Shard::new(settings, Wire::Udp(udp), candidate, ids, metrics);
                shard.tcp = tcp;
                shard.run(commands).await;
            });
        })?;
    bound_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("shard thread ended at start")))
}

/// Where a shard's datagrams go: its UDP socket, or, under the simulation harness
/// (`engine::sim`), a list the harness takes them from.
pub(super) enum Wire {
    Udp(Udp),
    Captured(Vec<(SocketAddr, BytesMut)>),
}

impl Wire {
    async fn readable(&self) -> std::io::Result<()> {
        match self {
            Wire::Udp(udp) => udp.readable().await,
            Wire::Captured(_) => std::future::pending().await,
        }
    }

    fn send_to(&mut self, to: SocketAddr, datagrams: &mut Vec<BytesMut>, metrics: &Metrics) {
        match self {
            Wire::Udp(udp) => udp.send_to(to, datagrams, metrics),
            Wire::Captured(out) => {
                for d in datagrams.drain(..) {
                    Metrics::inc(&metrics.udp_datagrams_out);
                    Metrics::add(&metrics.udp_bytes_out, d.len() as u64);
                    out.push((to, d));
                }
            }
        }
    }

    fn flush(&mut self, metrics: &Metrics) {
        if let Wire::Udp(udp) = self {
            udp.flush(metrics);
        }
    }

    pub(super) fn max_gso_segments(&self) -> usize {
        match self {
            Wire::Udp(udp) => udp.max_gso_segments(),
            Wire::Captured(_) => 1,
        }
    }
}

pub(super) struct Shard {
    pub(super) settings: ShardSettings,
    pub(super) udp: Wire,
    /// Our one ICE candidate: the address rtc must see as the local end of every pair.
    pub(super) candidate: SocketAddr,
    pub(super) peers: HashMap<ParticipantId, Peer>,
    pub(super) rooms: HashMap<RoomKey, RoomHost>,
    pub(super) room_keys: HashMap<String, RoomKey>,
    next_room_key: RoomKey,
    pub(super) demux: Demux<ParticipantId>,
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    /// Connections touched this round: to settle (events, reads) and then to flush.
    pub(super) touched: Vec<ParticipantId>,
    /// Decrypted RTP waiting to be routed, reused every round.
    pub(super) inbound: Vec<Inbound>,
    received: Vec<(SocketAddr, BytesMut)>,
    outgoing: Vec<BytesMut>,
    pub(super) ids: Arc<Ids>,
    pub(super) metrics: Arc<Metrics>,
    /// (participants, rooms) this shard last added to the process-wide gauges.
    published_counts: (u64, u64),
    /// The packet counts of rooms that finished (the live ones' are added on demand).
    pub(super) finished_rooms_rtp: crate::room::RoomRtpCounts,
    /// ICE-TCP on the media port number, when listening.
    pub(super) tcp: Option<TcpMedia>,
}

impl Shard {
    pub(super) fn new(
        settings: ShardSettings,
        udp: Wire,
        candidate: SocketAddr,
        ids: Arc<Ids>,
        metrics: Arc<Metrics>,
    ) -> Shard {
        Shard {
            settings,
            udp,
            candidate,
            peers: HashMap::new(),
            rooms: HashMap::new(),
            room_keys: HashMap::new(),
            next_room_key: 1,
            demux: Demux::default(),
            timers: BinaryHeap::new(),
            touched: Vec::new(),
            inbound: Vec::new(),
            received: Vec::new(),
            outgoing: Vec::new(),
            ids,
            metrics,
            published_counts: (0, 0),
            finished_rooms_rtp: Default::default(),
            tcp: None,
        }
    }

    /// Brings the process-wide participant and room gauges up to date with this
    /// shard's own counts (by the difference, so shards never overwrite each other):
    /// `/healthz` reads them without asking any shard.
    /// Sends each participant whose notifications were dropped the room as it is now,
    /// once its queue has drained.
    fn resync_lagging(&mut self) {
        for peer in self.peers.values_mut().filter(|p| p.resync_due) {
            if let Some(host) = self.rooms.get(&peer.room) {
                if peer.resync_if_due(&host.room) {
                    Metrics::inc(&self.metrics.resyncs_sent);
                }
            }
        }
    }

    pub(super) fn publish_counts(&mut self) {
        let now = (self.peers.len() as u64, self.rooms.len() as u64);
        let (before, m) = (self.published_counts, &self.metrics);
        if now != before {
            m.participants_now
                .fetch_add(now.0.wrapping_sub(before.0), Relaxed);
            m.rooms_now.fetch_add(now.1.wrapping_sub(before.1), Relaxed);
            self.published_counts = now;
        }
    }

    /// The earliest connection timer (rtc's deadlines), if any.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut housekeeping = Instant::now() + HOUSEKEEPING;
        loop {
            let deadline = self
                .timers
                .peek()
                .map(|Reverse((t, _))| *t)
                .map_or(housekeeping, |t| t.min(housekeeping));
            tokio::select! {
                readable = self.udp.readable() => {
                    if let Err(e) = readable {
                        warn!("media socket failed: {e}");
                        break;
                    }
                    self.receive();
                }
                event = next_tcp(&mut self.tcp, &self.metrics) => {
                    if let Some(event) = event {
                        self.on_tcp(event, Instant::now());
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.command(cmd, Instant::now());
                    for _ in 1..MAX_COMMANDS_PER_WAKE {
                        match commands.try_recv() {
                            Ok(cmd) => self.command(cmd, Instant::now()),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            self.run_timers(now);
            if now >= housekeeping {
                self.housekeeping(now);
                housekeeping = now + HOUSEKEEPING;
            }
            self.settle_and_flush(now);
        }
        debug!(shard = self.settings.index, "media shard stopped");
        let ids: Vec<ParticipantId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_participant(id, "the server is shutting down", Instant::now());
        }
    }

    /// Reads what the socket holds (a bounded number of batches) into the connections.
    fn receive(&mut self) {
        for _ in 0..MAX_BATCHES_PER_WAKE {
            let received = &mut self.received;
            let Wire::Udp(udp) = &mut self.udp else {
                return;
            };
            let mut bytes = 0u64;
            let n = match udp.recv_batch(|from, datagram| {
                bytes += datagram.len() as u64;
                received.push((from, BytesMut::from(datagram)));
            }) {
                Ok(n) => n,
                Err(e) => {
                    debug!("recv: {e}");
                    Metrics::inc(&self.metrics.udp_recv_errors);
                    break;
                }
            };
            if n == 0 {
                break;
            }
            let now = Instant::now();
            Metrics::add(&self.metrics.udp_datagrams_in, n as u64);
            Metrics::add(&self.metrics.udp_bytes_in, bytes);
            let mut received = std::mem::take(&mut self.received);
            for (from, datagram) in received.drain(..) {
                self.deliver(from, datagram, now);
            }
            self.received = received;
            // Route this batch before reading the next, so each subscriber's share of
            // it leaves as one burst.
            self.settle_and_flush(now);
        }
    }

    /// A frame from an ICE-TCP connection, or its end. A connection's first frame must
    /// be a STUN request naming one of our connections: that binds it to the participant
    /// (anything else closes it, counted); later frames go straight to that participant.
    fn on_tcp(&mut self, event: TcpEvent, now: Instant) {
        let Some(tcp) = self.tcp.as_mut() else {
            return;
        };
        let (from, frame) = match event {
            TcpEvent::Frame(from, frame) => (from, frame),
            TcpEvent::Closed(from, number) => return tcp.closed(from, number),
        };
        Metrics::inc(&self.metrics.tcp_frames_in);
        Metrics::add(&self.metrics.udp_bytes_in, frame.len() as u64);
        if self.candidate.ip().is_loopback() && !from.ip().is_loopback() {
            Metrics::inc(&self.metrics.udp_foreign_source);
            Metrics::inc(&self.metrics.tcp_connections_refused);
            return tcp.close(from);
        }
        let id = match tcp.participant(from) {
            Some(id) => id,
            None => match self.demux.stun_owner(&frame) {
                Some(id) if tcp.bind_to(from, id) => id,
                _ => {
                    Metrics::inc(&self.metrics.tcp_connections_refused);
                    return tcp.close(from);
                }
            },
        };
        // (The loop settles and flushes after every event.)
        if !self.read_into(id, from, TransportProtocol::TCP, frame, now) {
            if let Some(tcp) = self.tcp.as_mut() {
                tcp.close(from);
            }
        }
    }

    pub(super) fn deliver(&mut self, from: SocketAddr, datagram: BytesMut, now: Instant) {
        // A server that offers a loopback candidate talks to loopback peers only. Without
        // this, a browser on the same machine that checks from one of the machine's other
        // addresses (Chromium does) would get its media sent there.
        if self.candidate.ip().is_loopback() && !from.ip().is_loopback() {
            Metrics::inc(&self.metrics.udp_foreign_source);
            return;
        }
        let id = match self.demux.route(&datagram, from) {
            Ok(id) => id,
            Err(miss) => {
                let counter = match miss {
                    Miss::UnknownUfrag => &self.metrics.udp_unknown_ufrag,
                    Miss::UnknownAddress => &self.metrics.udp_unknown_address,
                    Miss::Garbage => &self.metrics.udp_garbage,
                };
                Metrics::inc(counter);
                return;
            }
        };
        if !self.read_into(id, from, TransportProtocol::UDP, datagram, now) {
            Metrics::inc(&self.metrics.udp_unknown_address);
        }
    }

    /// Hands what arrived from `from` (a datagram, or an ICE-TCP frame) to `id`'s
    /// connection and marks it for settling; false when there is no such connection.
    fn read_into(
        &mut self,
        id: ParticipantId,
        from: SocketAddr,
        transport_protocol: TransportProtocol,
        message: BytesMut,
        now: Instant,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.candidate,
                peer_addr: from,
                ecn: None,
                transport_protocol,
            },
            message,
        };
        if peer.pc.handle_read(msg).is_err() {
            // Bad integrity, a replayed or undecryptable packet, a protocol error:
            // the connection refused it, nothing else happens.
            Metrics::inc(&self.metrics.rtc_read_errors);
        }
        touch(&mut self.touched, peer);
        true
    }

    pub(super) fn run_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.armed != Some(t) {
                continue; // a stale entry: the peer was re-armed since
            }
            peer.armed = None;
            Metrics::inc(&self.metrics.rtc_timeouts);
            if peer.pc.handle_timeout(now).is_err() {
                Metrics::inc(&self.metrics.rtc_timeout_errors);
            }
            touch(&mut self.touched, peer);
        }
    }

    /// Settles every touched connection (events, media, RTCP), routes the media, then
    /// sends what the connections have to send and re-arms their timers.
    pub(super) fn settle_and_flush(&mut self, now: Instant) {
        // Settling may touch more peers (subscribers written to, publishers asked for
        // keyframes); they are settled in the same round, bounded by the peer count.
        let mut i = 0;
        while i < self.touched.len() {
            let id = self.touched[i];
            self.settle(id, now);
            i += 1;
            if i == self.touched.len() {
                self.route_inbound(now);
            }
        }
        let mut touched = std::mem::take(&mut self.touched);
        for id in touched.drain(..) {
            self.flush(id, now);
        }
        self.touched = touched;
        self.udp.flush(&self.metrics);
    }

    /// Drains one connection's events and reads.
    fn settle(&mut self, id: ParticipantId, now: Instant) {
        let mut events = Vec::new();
        let mut feedback = Vec::new();
        let mut chat = Vec::new();
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        while let Some(event) = peer.pc.poll_event() {
            events.push(event);
        }
        while let Some(msg) = peer.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(track, mut packet) => {
                    let Some(p) = peer.published.get(&track) else {
                        Metrics::inc(&self.metrics.rtp_in_unrouted);
                        continue;
                    };
                    let ssrc = packet.header.ssrc;
                    let Some(&(_, layer)) = p.ssrcs.iter().find(|(s, _)| *s == ssrc) else {
                        Metrics::inc(&self.metrics.rtp_in_unrouted);
                        continue;
                    };
                    p.forwardable_extensions.filter(&mut packet.header);
                    let audio_level = p.audio_level_id.and_then(|ext| {
                        let e = packet.header.extensions.iter().find(|e| e.id == ext)?;
                        Some(e.payload.first()? & 0x7f)
                    });
                    self.inbound.push(Inbound {
                        room: peer.room,
                        track: p.track,
                        layer,
                        audio_level,
                        packet,
                    })
                }
                // Only keyframe requests and transport-cc feedback are let through to us
                // (feedback.rs); the track is the subscriber leg's, named after the
                // published track it carries.
                RTCMessage::RtcpPacket(track, packets) => {
                    for p in &packets {
                        if let Some(fb) = p.as_any().downcast_ref::<TransportLayerCc>() {
                            feedback.push(fb.clone());
                        }
                    }
                    if !packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        continue;
                    }
                    if let Ok(track) = track.parse::<TrackId>() {
                        Metrics::inc(&self.metrics.keyframe_requests_from_subscribers);
                        if let Some(host) = self.rooms.get_mut(&peer.room) {
                            host.room.keyframe_request(id, track, now);
                        }
                    }
                }
                RTCMessage::DataChannelMessage(channel, message) => {
                    chat.push((channel, message));
                }
                _ => {}
            }
        }
        for (channel, message) in chat {
            self.data_channel_message(id, channel, message, now);
        }
        for fb in &feedback {
            self.transport_feedback(id, fb, now);
        }
        for event in events {
            self.peer_event(id, event, now);
        }
        if let Some(peer) = self.peers.get(&id) {
            let room = peer.room;
            self.drain_room_outputs(room, now);
        }
    }

    fn peer_event(&mut self, id: ParticipantId, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                debug!(participant = %id, %state, "peer connection state");
                if state == RTCPeerConnectionState::Connected {
                    if let Some(peer) = self.peers.get_mut(&id) {
                        if !peer.connected_once {
                            peer.connected_once = true;
                            let room = peer.room;
                            if let Some(host) = self.rooms.get_mut(&room) {
                                host.room.subscriber_connected(id, now);
                            }
                        }
                    }
                }
                if matches!(
                    state,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                ) {
                    if let Some(peer) = self.peers.get_mut(&id) {
                        peer.doomed.get_or_insert("media connection lost");
                    }
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.publish(id, init, now)
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track)) => {
                self.unpublish(id, &track, now)
            }
            RTCPeerConnectionEvent::OnDataChannel(event) => self.data_channel_event(id, event, now),
            _ => {}
        }
    }

    /// Sends what one connection has queued: runs to one destination go out as GSO.
    fn flush(&mut self, id: ParticipantId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.touched = false;
        if let Some(ufrag) = peer.new_local_ufrag() {
            debug!(participant = %id, "ICE ufrag {ufrag}");
            self.demux.follow(id, &ufrag);
            peer.ufrag = Some(ufrag);
        }
        let mut dest: Option<SocketAddr> = None;
        while let Some(msg) = peer.pc.poll_write() {
            let to = msg.transport.peer_addr;
            if msg.transport.transport_protocol == TransportProtocol::TCP {
                if let Some(tcp) = self.tcp.as_mut() {
                    tcp.send(to, msg.message, &self.metrics);
                }
                continue;
            }
            if dest != Some(to) {
                if let Some(d) = dest {
                    self.udp.send_to(d, &mut self.outgoing, &self.metrics);
                }
                // The connection sends here, so it accepted this address (demux.rs).
                self.demux.learn(id, to);
            }
            dest = Some(to);
            self.outgoing.push(msg.message);
        }
        if let Some(to) = dest {
            self.udp.send_to(to, &mut self.outgoing, &self.metrics);
        }
        // Re-arm: rtc's next deadline, never sooner than a millisecond from now.
        if let Some(t) = peer.pc.poll_timeout() {
            let t = t.max(now + MIN_TIMER_STEP);
            if peer.armed.is_none_or(|armed| t < armed) {
                peer.armed = Some(t);
                self.timers.push(Reverse((t, id)));
            }
        }
    }

    /// The slow path, every 20 ms: room timers, first-offer waits, and removing the
    /// participants marked for removal (kept off the per-packet rounds, which would
    /// otherwise scan every peer each time).
    pub(super) fn housekeeping(&mut self, now: Instant) {
        self.publish_counts();
        if let Some(tcp) = self.tcp.as_mut() {
            tcp.expire(now, &self.metrics);
        }
        self.resync_lagging();
        self.remove_doomed(now);
        self.close_expired_rooms(now);
        self.probe_tick(HOUSEKEEPING, now);
        let keys: Vec<RoomKey> = self.rooms.keys().copied().collect();
        for key in keys {
            if let Some(host) = self.rooms.get_mut(&key) {
                if host.room.poll_timeout().is_some_and(|t| t <= now) {
                    host.room.handle_timeout(now);
                }
            }
            self.drain_room_outputs(key, now);
        }
        let waited: Vec<ParticipantId> = self
            .peers
            .values_mut()
            .filter(|p| p.negotiator.waiting_for_client() && now >= p.first_offer_deadline)
            .map(|p| {
                p.negotiator.stop_waiting_for_client();
                p.id
            })
            .collect();
        for id in waited {
            self.offer_if_due(id, now);
        }
    }

    fn remove_doomed(&mut self, now: Instant) {
        let limit = self.settings.ice_connect_timeout;
        for peer in self.peers.values_mut() {
            if !peer.connected_once
                && peer.doomed.is_none()
                && now.saturating_duration_since(peer.joined_at) >= limit
            {
                peer.doomed = Some("media never connected");
                Metrics::inc(&self.metrics.ice_connect_timeouts);
            }
        }
        let doomed: Vec<(ParticipantId, &'static str)> = self
            .peers
            .values()
            .filter_map(|p| p.doomed.map(|why| (p.id, why)))
            .collect();
        for (id, why) in doomed {
            info!(participant = %id, "{why}; removing participant");
            self.remove_participant(id, why, now);
        }
    }

    pub(super) fn srtp_ciphers(&mut self, now: Instant) -> Vec<(ParticipantId, String)> {
        let mut out = Vec::new();
        for peer in self.peers.values_mut() {
            let report = peer.pc.get_stats(now, rtc::statistics::StatsSelector::None);
            for entry in report.iter() {
                if let rtc::statistics::report::RTCStatsReportEntry::Transport(t) = entry {
                    out.push((peer.id, t.srtp_cipher.clone()));
                }
            }
        }
        out
    }

    pub(super) fn next_room_key(&mut self) -> RoomKey {
        let key = self.next_room_key;
        self.next_room_key += 1;
        key
    }
}

/// Puts a peer on this round's list once.
pub(super) fn touch(touched: &mut Vec<ParticipantId>, peer: &mut Peer) {
    if !peer.touched {
        peer.touched = true;
        touched.push(peer.id);
    }
}

/// The next ICE-TCP event; never, when the shard does not listen for TCP.
async fn next_tcp(tcp: &mut Option<TcpMedia>, metrics: &Metrics) -> Option<TcpEvent> {
    match tcp {
        Some(tcp) => tcp.next(metrics).await,
        None => std::future::pending().await,
    }
}
