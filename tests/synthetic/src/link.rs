//! How a pooled synthetic participant's datagrams reach the server: straight over its
//! UDP socket, over ICE-TCP (RFC 4571 frames on a TCP connection to the media port), or
//! relayed through a TURN server over UDP (an allocation, a channel to the media port,
//! ChannelData). The participant's rtc connection knows none of this: it writes
//! datagrams to the server's address and is handed what comes back as datagrams from
//! that address, the way a browser's ICE stack sits above its sockets.
//!
//! The TURN client is for load and tests on loopback: long-term credentials from
//! `joined.ice_servers`, one channel per peer bound on first use (waiting up to 2 s on
//! the media thread: set-up only), no refreshes (allocations live 10 minutes,
//! channels 10, permissions 5: longer than any run here).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use turn_types::attribute::{ChannelNumber, RequestedTransport, XorPeerAddress, XorRelayedAddress};
use turn_types::channel::ChannelData;
use turn_types::message::{ALLOCATE, CHANNEL_BIND};
use turn_types::stun::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_types::stun::message::{
    IntegrityAlgorithm, LongTermCredentials, Message, MessageIntegrityCredentials, MessageWrite,
    MessageWriteExt, MessageWriteVec,
};

/// Which way a participant's media goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    Udp,
    /// ICE-TCP to the server's media port number (the server needs `--ice-tcp true`).
    Tcp,
    /// Through the TURN server of `joined.ice_servers` (its UDP URL).
    Turn,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "turn" => Ok(Transport::Turn),
            _ => Err(format!("{s:?}: udp, tcp or turn")),
        }
    }
}

/// A TURN server and the credentials for it.
#[derive(Clone, Debug)]
pub struct TurnServer {
    pub addr: SocketAddr,
    pub username: String,
    pub password: String,
}

impl TurnServer {
    /// The UDP TURN server in a `joined` message's `ice_servers`, if any.
    pub fn from_joined(joined: &serde_json::Value) -> Option<TurnServer> {
        joined["ice_servers"].as_array()?.iter().find_map(|s| {
            let url = s["urls"]
                .as_array()?
                .iter()
                .filter_map(|u| u.as_str())
                .find(|u| u.starts_with("turn:") && !u.contains("transport=tcp"))?;
            let hostport = url["turn:".len()..].split('?').next()?;
            Some(TurnServer {
                addr: hostport.parse().ok()?,
                username: s["username"].as_str()?.to_string(),
                password: s["credential"].as_str()?.to_string(),
            })
        })
    }
}

/// The TCP framing state of an ICE-TCP link.
pub struct TcpLink {
    peer: SocketAddr,
    pub stream: TcpStream,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
}

/// The relaying state of a TURN link.
pub struct TurnLink {
    server: TurnServer,
    realm: String,
    nonce: String,
    channels: HashMap<SocketAddr, u16>,
    peers: HashMap<u16, SocketAddr>,
}

pub enum Link {
    Udp,
    /// Connected on the first datagram to the server (when its address is known).
    Tcp(Option<TcpLink>),
    Turn(Box<TurnLink>),
}

/// Bytes queued towards a TCP peer before datagrams are dropped (a full kernel buffer
/// on loopback means the server is not reading: loss, as on a network).
const TCP_OUTBOX: usize = 1 << 20;

impl Link {
    /// Allocates on the TURN server over `socket` (blocking until answered, 2 s at most).
    pub fn turn(socket: &UdpSocket, server: TurnServer) -> io::Result<Link> {
        let mut link = TurnLink {
            server,
            realm: String::new(),
            nonce: String::new(),
            channels: HashMap::new(),
            peers: HashMap::new(),
        };
        // The first request is refused with the realm and a nonce (401), the second
        // carries the credentials.
        let reply = link.request(socket, ALLOCATE, |_| Ok(()), false)?;
        link.learn_challenge(&reply)?;
        let reply = link.request(socket, ALLOCATE, |_| Ok(()), true)?;
        let msg = Message::from_bytes(&reply).map_err(invalid)?;
        msg.attribute::<XorRelayedAddress>()
            .map_err(|_| invalid(format!("no allocation: {}", error_of(&msg))))?;
        Ok(Link::Turn(Box::new(link)))
    }

    /// Sends one datagram of the participant's connection towards `to`.
    pub fn send(
        &mut self,
        socket: &UdpSocket,
        registry: &mio::Registry,
        token: mio::Token,
        data: &[u8],
        to: SocketAddr,
    ) {
        match self {
            Link::Udp => {
                let _ = socket.send_to(data, to);
            }
            Link::Tcp(tcp) => {
                if tcp.is_none() {
                    *tcp = TcpLink::connect(to, registry, token).ok();
                }
                if let Some(tcp) = tcp {
                    tcp.send(data);
                }
            }
            Link::Turn(turn) => {
                let Some(channel) = turn.channel_for(socket, to) else {
                    return;
                };
                let mut frame = Vec::with_capacity(4 + data.len());
                frame.extend_from_slice(&channel.to_be_bytes());
                frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
                frame.extend_from_slice(data);
                let _ = socket.send_to(&frame, turn.server.addr);
            }
        }
    }

    /// Turns what arrived over UDP from `from` into the connection's datagrams.
    pub fn unwrap_udp<'a>(
        &self,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Option<(SocketAddr, &'a [u8])> {
        match self {
            Link::Turn(turn) if from == turn.server.addr => {
                let channel = ChannelData::parse(datagram).ok()?;
                let peer = *turn.peers.get(&channel.id())?;
                let offset = 4;
                Some((peer, &datagram[offset..offset + channel.data().len()]))
            }
            Link::Turn(_) => None,
            _ => Some((from, datagram)),
        }
    }

    /// Reads what the ICE-TCP connection has; calls `deliver` with each whole frame.
    pub fn read_tcp(&mut self, mut deliver: impl FnMut(SocketAddr, &[u8])) {
        let Link::Tcp(Some(tcp)) = self else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match tcp.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => tcp.inbox.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        let mut at = 0;
        while tcp.inbox.len() >= at + 2 {
            let len = u16::from_be_bytes([tcp.inbox[at], tcp.inbox[at + 1]]) as usize;
            if tcp.inbox.len() < at + 2 + len {
                break;
            }
            deliver(tcp.peer, &tcp.inbox[at + 2..at + 2 + len]);
            at += 2 + len;
        }
        tcp.inbox.drain(..at);
        tcp.flush();
    }
}

impl TcpLink {
    fn connect(
        peer: SocketAddr,
        registry: &mio::Registry,
        token: mio::Token,
    ) -> io::Result<TcpLink> {
        let std = std::net::TcpStream::connect_timeout(&peer, Duration::from_secs(2))?;
        std.set_nonblocking(true)?;
        let _ = std.set_nodelay(true);
        let mut stream = TcpStream::from_std(std);
        registry.register(
            &mut stream,
            token,
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
        Ok(TcpLink {
            peer,
            stream,
            inbox: Vec::new(),
            outbox: Vec::new(),
        })
    }

    fn send(&mut self, data: &[u8]) {
        if self.outbox.len() + data.len() + 2 > TCP_OUTBOX || data.len() > u16::MAX as usize {
            return;
        }
        self.outbox
            .extend_from_slice(&(data.len() as u16).to_be_bytes());
        self.outbox.extend_from_slice(data);
        self.flush();
    }

    fn flush(&mut self) {
        while !self.outbox.is_empty() {
            match self.stream.write(&self.outbox) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    self.outbox.drain(..n);
                }
            }
        }
    }
}

impl TurnLink {
    /// The channel to `peer`, bound now if it is the first datagram to it.
    fn channel_for(&mut self, socket: &UdpSocket, peer: SocketAddr) -> Option<u16> {
        if let Some(&c) = self.channels.get(&peer) {
            return Some(c);
        }
        let channel = 0x4000 + self.channels.len() as u16;
        let reply = self
            .request(
                socket,
                CHANNEL_BIND,
                |m| {
                    m.add_attribute(&ChannelNumber::new(channel))?;
                    m.add_attribute(&XorPeerAddress::new(peer, m.transaction_id()))
                },
                true,
            )
            .ok()?;
        let msg = Message::from_bytes(&reply).ok()?;
        if msg.attribute::<ErrorCode>().is_ok() {
            return None;
        }
        self.channels.insert(peer, channel);
        self.peers.insert(channel, peer);
        Some(channel)
    }

    fn learn_challenge(&mut self, reply: &[u8]) -> io::Result<()> {
        let msg = Message::from_bytes(reply).map_err(invalid)?;
        self.realm = msg
            .attribute::<Realm>()
            .map_err(|_| invalid("no realm in the challenge"))?
            .realm()
            .to_string();
        self.nonce = msg
            .attribute::<Nonce>()
            .map_err(|_| invalid("no nonce in the challenge"))?
            .nonce()
            .to_string();
        Ok(())
    }

    /// Sends a request and waits (2 s at most) for the response with its transaction id.
    fn request(
        &mut self,
        socket: &UdpSocket,
        method: turn_types::stun::message::Method,
        attrs: impl Fn(&mut MessageWriteVec) -> Result<(), turn_types::stun::message::StunWriteError>,
        signed: bool,
    ) -> io::Result<Vec<u8>> {
        let signer = signed.then_some((&self.server, self.realm.as_str(), self.nonce.as_str()));
        let (id, bytes) = build_request(method, attrs, signer)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut resend = Instant::now();
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if Instant::now() >= resend {
                socket.send_to(&bytes, self.server.addr)?;
                resend = Instant::now() + Duration::from_millis(250);
            }
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if from == self.server.addr => {
                    if let Ok(reply) = Message::from_bytes(&buf[..n]) {
                        if reply.transaction_id() == id {
                            return Ok(buf[..n].to_vec());
                        }
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the TURN server did not answer",
        ))
    }
}

/// A TURN request (an Allocate asks for UDP relaying), signed with long-term
/// credentials when `signer` gives them with the realm and nonce of a challenge:
/// (transaction id, bytes).
pub fn build_request(
    method: turn_types::stun::message::Method,
    attrs: impl Fn(&mut MessageWriteVec) -> Result<(), turn_types::stun::message::StunWriteError>,
    signer: Option<(&TurnServer, &str, &str)>,
) -> io::Result<(turn_types::stun::message::TransactionId, Vec<u8>)> {
    let mut msg = Message::builder_request(method, MessageWriteVec::new());
    let id = msg.transaction_id();
    if method == ALLOCATE {
        msg.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .map_err(invalid)?;
    }
    attrs(&mut msg).map_err(invalid)?;
    if let Some((server, realm, nonce)) = signer {
        msg.add_attribute(&Username::new(&server.username).map_err(invalid)?)
            .map_err(invalid)?;
        msg.add_attribute(&Realm::new(realm).map_err(invalid)?)
            .map_err(invalid)?;
        msg.add_attribute(&Nonce::new(nonce).map_err(invalid)?)
            .map_err(invalid)?;
        let key = LongTermCredentials::new(server.username.clone(), server.password.clone())
            .to_key(realm.to_string());
        msg.add_message_integrity(
            &MessageIntegrityCredentials::LongTerm(key),
            IntegrityAlgorithm::Sha1,
        )
        .map_err(invalid)?;
    }
    Ok((id, msg.finish()))
}

fn error_of(msg: &Message<'_>) -> String {
    msg.attribute::<ErrorCode>()
        .map(|e| format!("{} {}", e.code(), e.reason()))
        .unwrap_or_else(|_| "no error code".into())
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
