//! The embedded TURN server's one task: it owns the TURN protocol state (the
//! `turn-server-proto` library, sans-I/O: one instance per listening port), the client
//! UDP socket, the relayed UDP sockets, and the queues to TCP/TLS connections. Every
//! message passes the gate (gate.rs) on its way in; every relayed datagram passes the
//! peer policy on its way out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use turn_server_proto::api::{
    SocketAllocateError, TcpConnectError, Transmit, TurnServerApi, TurnServerPollRet,
};
use turn_server_proto::server::TurnServer;
use turn_server_proto::types::attribute::XorPeerAddress;
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};
use turn_server_proto::types::prelude::DelayedTransmitBuild;
use turn_server_proto::types::stun::attribute::{
    Attribute, AttributeFromRaw, AttributeStaticType, ErrorCode, Username,
};
use turn_server_proto::types::stun::message::{Message, MessageClass};
use turn_server_proto::types::{AddressFamily, Instant, TransportType};

use super::counters::TurnCounters;
use super::gate::{self, Ledger, PeerPolicy, Refusal};
use super::stream::StreamEvent;

/// Datagrams from relayed sockets queued into the service; more are dropped (counted).
pub const RELAY_QUEUE: usize = 4096;
/// Allocate requests remembered (5-tuple -> participant) until the library asks for a
/// socket; past this the memory is cleared (an attacker's unanswered requests).
const PENDING_ALLOCATES: usize = 4096;

pub struct Service {
    /// One TURN protocol instance per listening port (UDP, TCP, TLS).
    servers: Vec<TurnServer>,
    udp: Option<Arc<UdpSocket>>,
    /// The client UDP socket's address (asked once, not per datagram).
    udp_listen: Option<SocketAddr>,
    relay_ip: IpAddr,
    relays: HashMap<SocketAddr, Relay>,
    relay_tx: mpsc::Sender<(SocketAddr, SocketAddr, Vec<u8>)>,
    streams: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>,
    /// (over UDP?, listen, client) of an Allocate request -> the participant it names.
    pending: HashMap<(bool, SocketAddr, SocketAddr), String>,
    ledger: Ledger,
    policy: PeerPolicy,
    counters: Arc<TurnCounters>,
    base: std::time::Instant,
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    /// The library instance (listening port) whose client holds the allocation.
    server: usize,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Credentials as the sessions issue and revoke them.
#[derive(Debug)]
pub enum Credential {
    Issued { username: String, password: String },
    Revoked { username: String },
}

pub struct Inputs {
    pub users: mpsc::Receiver<Credential>,
    pub streams: mpsc::Receiver<StreamEvent>,
    pub relayed: mpsc::Receiver<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Service {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        servers: Vec<TurnServer>,
        udp: Option<Arc<UdpSocket>>,
        relay_ip: IpAddr,
        relay_tx: mpsc::Sender<(SocketAddr, SocketAddr, Vec<u8>)>,
        ledger: Ledger,
        policy: PeerPolicy,
        counters: Arc<TurnCounters>,
    ) -> Self {
        let udp_listen = udp.as_ref().and_then(|s| s.local_addr().ok());
        Self {
            servers,
            udp,
            udp_listen,
            relay_ip,
            relays: HashMap::new(),
            relay_tx,
            streams: HashMap::new(),
            pending: HashMap::new(),
            ledger,
            policy,
            counters,
            base: std::time::Instant::now(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_std(self.base)
    }

    pub async fn run(mut self, mut inputs: Inputs) {
        let mut buf = vec![0u8; 2048];
        let mut wake = tokio::time::Instant::now();
        // Without TCP/TLS listeners the stream channel is closed from the start: a
        // closed channel is ready at once, so it must not be polled again.
        let mut streams_open = true;
        loop {
            let udp = self.udp.clone();
            let recv_udp = async {
                match &udp {
                    Some(s) => s
                        .recv_from(&mut buf)
                        .await
                        .map(|(n, from)| (buf[..n].to_vec(), from)),
                    None => std::future::pending().await,
                }
            };
            // Relayed data (ChannelData from a client, a datagram from a peer) goes
            // through the library's `recv` alone; anything else may leave requests
            // (allocations) for its `poll`, which runs then, or when a timer is due.
            let mut needs_drive = true;
            tokio::select! {
                got = recv_udp => {
                    if let (Ok((frame, from)), Some(listen)) = (got, self.udp_listen) {
                        needs_drive = !is_channel_data(&frame);
                        self.on_client_message(TransportType::Udp, listen, from, frame);
                    }
                }
                ev = inputs.streams.recv(), if streams_open => match ev {
                    Some(StreamEvent::Opened { listen, client, out }) => {
                        self.streams.insert((listen, client), out);
                    }
                    Some(StreamEvent::Frame { listen, client, mut frame }) => {
                        needs_drive = !is_channel_data(&frame);
                        unpad_channel_data(&mut frame);
                        self.on_client_message(TransportType::Tcp, listen, client, frame);
                    }
                    Some(StreamEvent::Closed { listen, client }) => {
                        self.streams.remove(&(listen, client));
                    }
                    None => streams_open = false,
                },
                relayed = inputs.relayed.recv() => {
                    if let Some((relayed, peer, data)) = relayed {
                        needs_drive = false;
                        self.on_peer_datagram(relayed, peer, data);
                    }
                }
                user = inputs.users.recv() => match user {
                    Some(Credential::Issued { username, password }) => {
                        for s in &mut self.servers {
                            s.add_user(username.clone(), password.clone());
                        }
                    }
                    Some(Credential::Revoked { username }) => {
                        // The library has no removal: a password nobody knows replaces
                        // the participant's, so its requests meet a 401 from now on.
                        let unguessable = crate::secret::Secret::generate();
                        for s in &mut self.servers {
                            s.add_user(username.clone(), unguessable.expose().to_string());
                        }
                    }
                    // The server is shutting down.
                    None => return,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            if needs_drive || tokio::time::Instant::now() >= wake {
                wake = self.drive();
            }
        }
    }

    fn server_for(&mut self, transport: TransportType, listen: SocketAddr) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.transport() == transport && s.listen_address() == listen)
    }

    /// A message from a TURN client, through the gate into the library.
    fn on_client_message(
        &mut self,
        transport: TransportType,
        listen: SocketAddr,
        client: SocketAddr,
        frame: Vec<u8>,
    ) {
        if let Err(why) = self.admit_message(transport, listen, client, &frame) {
            self.counters.refused(why);
            return;
        }
        let Some(i) = self.server_for(transport, listen) else {
            return;
        };
        let now = self.now();
        let out = self.servers[i]
            .recv(Transmit::new(frame, transport, client, listen), now)
            .map(|t| {
                let data = t.data.build();
                Transmit::new(data, t.transport, t.from, t.to)
            });
        if let Some(t) = out {
            self.send(t);
        }
    }

    /// The gate: expired credentials, and permissions or channels for peers that are
    /// not ours, never reach the library. Remembers who asks for an allocation.
    fn admit_message(
        &mut self,
        transport: TransportType,
        listen: SocketAddr,
        client: SocketAddr,
        frame: &[u8],
    ) -> Result<(), Refusal> {
        // ChannelData (and anything else that is no STUN) goes to the library as is.
        if frame.first().is_none_or(|b| b >> 6 != 0) {
            return Ok(());
        }
        let Ok(msg) = Message::from_bytes(frame) else {
            return Ok(());
        };
        if !msg.has_class(MessageClass::Request) {
            return Ok(());
        }
        let participant = match msg.attribute::<Username>() {
            Ok(u) => Some(gate::check_username(u.username(), crate::auth::unix_now())?.to_string()),
            Err(_) => None,
        };
        if msg.has_method(ALLOCATE) {
            if let Some(who) = participant {
                if self.pending.len() >= PENDING_ALLOCATES {
                    self.pending.clear();
                }
                self.pending
                    .insert((transport == TransportType::Udp, listen, client), who);
            }
        } else if msg.has_method(CREATE_PERMISSION) || msg.has_method(CHANNEL_BIND) {
            let id = msg.transaction_id();
            for (_, raw) in msg.iter_attributes() {
                if raw.get_type() != XorPeerAddress::TYPE {
                    continue;
                }
                let Ok(peer) = XorPeerAddress::from_raw_ref(&raw) else {
                    continue;
                };
                if !self.policy.permits_ip(peer.addr(id).ip()) {
                    return Err(Refusal::ForbiddenPeer);
                }
            }
        }
        Ok(())
    }

    /// A datagram a peer sent to a relayed address.
    fn on_peer_datagram(&mut self, relayed: SocketAddr, peer: SocketAddr, data: Vec<u8>) {
        let Some(i) = self.relays.get(&relayed).map(|r| r.server) else {
            return;
        };
        let len = data.len() as u64;
        let now = self.now();
        let out = self.servers[i]
            .recv(Transmit::new(data, TransportType::Udp, peer, relayed), now)
            .map(|t| {
                let data = t.data.build();
                Transmit::new(data, t.transport, t.from, t.to)
            });
        if let Some(t) = out {
            self.counters
                .relayed_bytes_to_clients
                .fetch_add(len, Relaxed);
            self.send(t);
        }
    }

    /// Sends what the library produced: to a UDP client, a TCP/TLS client, or from a
    /// relayed address to a peer the policy allows.
    fn send(&mut self, t: Transmit<Vec<u8>>) {
        if is_error_response(&t.data) {
            self.counters.error_responses.fetch_add(1, Relaxed);
            if tracing::enabled!(tracing::Level::DEBUG) {
                let code = Message::from_bytes(&t.data)
                    .ok()
                    .and_then(|m| m.attribute::<ErrorCode>().ok().map(|e| e.code()));
                tracing::debug!(to = %t.to, ?code, "TURN error response");
            }
        }
        if let Some(relay) = self.relays.get(&t.from) {
            if !self.policy.permits(t.to) {
                self.counters.refused(Refusal::ForbiddenPeer);
                return;
            }
            match relay.socket.try_send_to(&t.data, t.to) {
                Ok(n) => {
                    self.counters
                        .relayed_bytes_to_peers
                        .fetch_add(n as u64, Relaxed);
                }
                Err(_) => {
                    self.counters.dropped.fetch_add(1, Relaxed);
                }
            }
            return;
        }
        match t.transport {
            TransportType::Udp => {
                let sent = self
                    .udp
                    .as_ref()
                    .is_some_and(|s| s.try_send_to(&t.data, t.to).is_ok());
                if !sent {
                    self.counters.dropped.fetch_add(1, Relaxed);
                }
            }
            TransportType::Tcp => {
                let mut data = t.data;
                pad_channel_data(&mut data);
                let queued = self
                    .streams
                    .get(&(t.from, t.to))
                    .is_some_and(|q| q.try_send(data).is_ok());
                if !queued {
                    self.counters.dropped.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Runs every library instance's timers and requests; returns when to come back.
    fn drive(&mut self) -> tokio::time::Instant {
        let now = self.now();
        let mut wake = now + std::time::Duration::from_secs(1);
        for i in 0..self.servers.len() {
            loop {
                match self.servers[i].poll(now) {
                    TurnServerPollRet::WaitUntil(t) => {
                        wake = wake.min(t);
                        break;
                    }
                    TurnServerPollRet::AllocateSocket {
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                    } => {
                        let result = self.allocate(
                            i,
                            transport,
                            listen_addr,
                            client_addr,
                            allocation_transport,
                            family,
                        );
                        self.servers[i].allocated_socket(
                            transport,
                            listen_addr,
                            client_addr,
                            allocation_transport,
                            family,
                            result,
                            now,
                        );
                    }
                    TurnServerPollRet::TcpConnect {
                        relayed_addr,
                        peer_addr,
                        listen_addr,
                        client_addr,
                    } => {
                        self.counters.refused(Refusal::TcpRelay);
                        self.servers[i].tcp_connected(
                            relayed_addr,
                            peer_addr,
                            listen_addr,
                            client_addr,
                            Err(TcpConnectError::Forbidden),
                            now,
                        );
                    }
                    TurnServerPollRet::TcpClose {
                        local_addr,
                        remote_addr,
                    } => {
                        // Dropping the queue ends the connection's task.
                        self.streams.remove(&(local_addr, remote_addr));
                    }
                    TurnServerPollRet::SocketClose { listen_addr, .. } => {
                        if self.relays.remove(&listen_addr).is_some() {
                            self.ledger.release(listen_addr);
                            self.counters
                                .allocations_now
                                .store(self.ledger.len() as u64, Relaxed);
                        }
                    }
                }
            }
            while let Some(t) = self.servers[i].poll_transmit(now) {
                self.send(t);
            }
        }
        let wait = wake.saturating_duration_since(now);
        tokio::time::Instant::now() + wait.max(std::time::Duration::from_millis(1))
    }

    /// A relayed UDP socket for an allocation the library granted, if quotas allow.
    fn allocate(
        &mut self,
        server: usize,
        transport: TransportType,
        listen: SocketAddr,
        client: SocketAddr,
        allocation_transport: TransportType,
        family: AddressFamily,
    ) -> Result<SocketAddr, SocketAllocateError> {
        let who = self
            .pending
            .remove(&(transport == TransportType::Udp, listen, client))
            .unwrap_or_default();
        if allocation_transport != TransportType::Udp {
            self.counters.refused(Refusal::TcpRelay);
            return Err(SocketAllocateError::InsufficientCapacity);
        }
        let ours = match self.relay_ip {
            IpAddr::V4(_) => AddressFamily::IPV4,
            IpAddr::V6(_) => AddressFamily::IPV6,
        };
        if family != ours {
            return Err(SocketAllocateError::AddressFamilyNotSupported);
        }
        if let Err(why) = self.ledger.admit(&who) {
            self.counters.refused(why);
            return Err(SocketAllocateError::InsufficientCapacity);
        }
        let socket = std::net::UdpSocket::bind(SocketAddr::new(self.relay_ip, 0))
            .and_then(|s| {
                s.set_nonblocking(true)?;
                widen_buffers(&s);
                UdpSocket::from_std(s)
            })
            .map_err(|_| SocketAllocateError::InsufficientCapacity)?;
        let addr = socket
            .local_addr()
            .map_err(|_| SocketAllocateError::InsufficientCapacity)?;
        let socket = Arc::new(socket);
        let reader = tokio::spawn(read_relayed(
            socket.clone(),
            addr,
            self.relay_tx.clone(),
            self.counters.clone(),
        ));
        self.relays.insert(
            addr,
            Relay {
                socket,
                reader,
                server,
            },
        );
        self.ledger.hold(addr, &who);
        self.counters.allocations.fetch_add(1, Relaxed);
        self.counters
            .allocations_now
            .store(self.ledger.len() as u64, Relaxed);
        Ok(addr)
    }
}

/// A relayed socket takes a publisher's whole keyframe burst from the shard while the
/// service is busy elsewhere: the default (about 200 KB) lost 10-15 % of a loaded
/// meeting's packets in the kernel (best effort: capped at net.core.rmem_max).
pub fn widen_buffers(socket: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER_BYTES);
}

const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Datagrams peers send to one relayed address, into the service.
async fn read_relayed(
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    into: mpsc::Sender<(SocketAddr, SocketAddr, Vec<u8>)>,
    counters: Arc<TurnCounters>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            // An unconnected UDP socket's errors are transient (ICMP echoes); never spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        match into.try_send((addr, from, buf[..n].to_vec())) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                counters.dropped.fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

// Over TCP and TLS a ChannelData message is padded to a multiple of 4 bytes (RFC 8656
// 12.5; browsers read the stream that way). turn-server-proto 0.7 neither writes nor
// expects the padding, so it is added on the way out and taken off on the way in.

fn is_channel_data(frame: &[u8]) -> bool {
    frame.len() >= 4 && frame[0] >> 6 == 1
}

fn pad_channel_data(frame: &mut Vec<u8>) {
    if is_channel_data(frame) {
        frame.resize(frame.len().div_ceil(4) * 4, 0);
    }
}

fn unpad_channel_data(frame: &mut Vec<u8>) {
    if is_channel_data(frame) {
        let len = 4 + u16::from_be_bytes([frame[2], frame[3]]) as usize;
        frame.truncate(len);
    }
}

/// A STUN error response (class bits 0x0110 of the message type)?
fn is_error_response(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] >> 6 == 0 && (data[0] & 0x01) == 0x01 && (data[1] & 0x10) == 0x10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_is_padded_towards_stream_clients_and_unpadded_from_them() {
        let mut out = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5];
        pad_channel_data(&mut out);
        assert_eq!(out, [0x40, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]);
        unpad_channel_data(&mut out);
        assert_eq!(out, [0x40, 0, 0, 5, 1, 2, 3, 4, 5]);
        // STUN messages are a multiple of 4 already and left alone.
        let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        pad_channel_data(&mut stun);
        unpad_channel_data(&mut stun);
        assert_eq!(stun.len(), 8);
    }

    #[test]
    fn error_responses_are_told_by_their_class_bits() {
        // Allocate error response (0x0113), success response (0x0103), request (0x0003).
        let msg = |t: u16| {
            let mut m = vec![0u8; 20];
            m[..2].copy_from_slice(&t.to_be_bytes());
            m
        };
        assert!(is_error_response(&msg(0x0113)));
        assert!(!is_error_response(&msg(0x0103)));
        assert!(!is_error_response(&msg(0x0003)));
    }
}
