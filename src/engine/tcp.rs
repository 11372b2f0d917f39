//! ICE-TCP on the media port number (RFC 6544 passive candidate, RFC 4571 framing): for
//! participants whose network drops UDP. One listener per shard beside its UDP socket;
//! each accepted connection gets a task that splits the byte stream into frames for the
//! shard and writes the shard's frames back, so the shard itself never waits on a
//! socket:
//! - a connection is bound to a participant by the ufrag of its first frame, which must
//!   be a STUN request naming a connection of ours (as the UDP demux does), within
//!   [`FIRST_FRAME_TIMEOUT`]; anything else closes it;
//! - what the shard sends goes through a bounded queue per connection: a peer that
//!   stops reading loses frames (counted), never the shard's time;
//! - at most [`MAX_CONNECTIONS`] per shard, more are closed at accept; at most
//!   [`MAX_PER_PARTICIPANT`] bound to one participant.
//!
//! Frames then go through the same `handle_read` as datagrams, and rtc's sends carry
//! `TransportProtocol::TCP` with the connection's address, which is how the shard's
//! flush finds its way here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::id::ParticipantId;
use crate::metrics::Metrics;

/// Connections one shard holds at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections one participant may have bound at once (a browser opens one per
/// candidate pair it checks: a few).
pub const MAX_PER_PARTICIPANT: usize = 4;
/// A connection must have sent a STUN request of ours by then.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames waiting to be written to one connection: about 100 ms of a 3 Mbit/s downlink.
const SEND_QUEUE: usize = 256;
/// Frames from all connections waiting for the shard.
const RECEIVE_QUEUE: usize = 1024;

/// What a connection task tells the shard.
pub enum TcpEvent {
    Frame(SocketAddr, BytesMut),
    /// The connection of this address and number ended (a later connection from the
    /// same address has another number).
    Closed(SocketAddr, u64),
}

struct Connection {
    number: u64,
    send: mpsc::Sender<BytesMut>,
    /// The participant its first STUN request named; `None` until then.
    participant: Option<ParticipantId>,
    opened: Instant,
}

pub struct TcpMedia {
    listener: TcpListener,
    events_tx: mpsc::Sender<TcpEvent>,
    events_rx: mpsc::Receiver<TcpEvent>,
    connections: HashMap<SocketAddr, Connection>,
    next_number: u64,
}

impl TcpMedia {
    /// Listens on `addr` (the shard's UDP address: TCP and UDP ports are separate).
    pub fn bind(addr: SocketAddr) -> std::io::Result<TcpMedia> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(128)?;
        let (events_tx, events_rx) = mpsc::channel(RECEIVE_QUEUE);
        Ok(TcpMedia {
            listener,
            events_tx,
            events_rx,
            connections: HashMap::new(),
            next_number: 0,
        })
    }

    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// The next thing to handle: a new connection (handled here) or a frame or close
    /// from one (handed back).
    pub async fn next(&mut self, metrics: &Metrics) -> Option<TcpEvent> {
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((stream, from)) = accepted else { continue };
                    self.accept(stream, from, metrics);
                }
                event = self.events_rx.recv() => return event,
            }
        }
    }

    fn accept(&mut self, stream: TcpStream, from: SocketAddr, metrics: &Metrics) {
        if self.connections.len() >= MAX_CONNECTIONS {
            Metrics::inc(&metrics.tcp_connections_refused);
            return; // dropped: closed
        }
        Metrics::inc(&metrics.tcp_connections_accepted);
        let _ = stream.set_nodelay(true);
        let (send, outgoing) = mpsc::channel(SEND_QUEUE);
        self.next_number += 1;
        let number = self.next_number;
        tokio::spawn(run_connection(
            stream,
            from,
            number,
            outgoing,
            self.events_tx.clone(),
        ));
        self.connections.insert(
            from,
            Connection {
                number,
                send,
                participant: None,
                opened: Instant::now(),
            },
        );
    }

    /// The participant `from`'s connection is bound to, if any.
    pub fn participant(&self, from: SocketAddr) -> Option<ParticipantId> {
        self.connections.get(&from)?.participant
    }

    /// Binds `from`'s connection to `id` (its first STUN request named it); false when
    /// `id` already has [`MAX_PER_PARTICIPANT`].
    pub fn bind_to(&mut self, from: SocketAddr, id: ParticipantId) -> bool {
        let bound = self
            .connections
            .values()
            .filter(|c| c.participant == Some(id))
            .count();
        if bound >= MAX_PER_PARTICIPANT {
            return false;
        }
        if let Some(c) = self.connections.get_mut(&from) {
            c.participant = Some(id);
        }
        true
    }

    /// Closes a connection (dropping its queue ends its task, which closes the socket).
    pub fn close(&mut self, from: SocketAddr) {
        self.connections.remove(&from);
    }

    /// A connection task ended: forgets it, unless a newer one has its address.
    pub fn closed(&mut self, from: SocketAddr, number: u64) {
        if self
            .connections
            .get(&from)
            .is_some_and(|c| c.number == number)
        {
            self.connections.remove(&from);
        }
    }

    /// Closes every connection of a participant that left.
    pub fn forget(&mut self, id: ParticipantId) {
        self.connections.retain(|_, c| c.participant != Some(id));
    }

    /// Closes connections that named nobody within [`FIRST_FRAME_TIMEOUT`]; counted.
    pub fn expire(&mut self, now: Instant, metrics: &Metrics) {
        let before = self.connections.len();
        self.connections.retain(|_, c| {
            c.participant.is_some() || now.saturating_duration_since(c.opened) < FIRST_FRAME_TIMEOUT
        });
        Metrics::add(
            &metrics.tcp_connections_refused,
            (before - self.connections.len()) as u64,
        );
    }

    /// Queues `frame` for `to`; a connection that is gone or too far behind loses it.
    pub fn send(&mut self, to: SocketAddr, frame: BytesMut, metrics: &Metrics) {
        let Some(c) = self.connections.get(&to) else {
            Metrics::inc(&metrics.tcp_frames_dropped);
            return;
        };
        let len = frame.len() as u64;
        match c.send.try_send(frame) {
            Ok(()) => {
                Metrics::inc(&metrics.tcp_frames_out);
                Metrics::add(&metrics.udp_bytes_out, len);
            }
            Err(_) => Metrics::inc(&metrics.tcp_frames_dropped),
        }
    }
}

/// One connection: frames in to the shard, the shard's frames out, until either side
/// ends. The 2-byte length prefix is RFC 4571's; a frame is at most 65,535 bytes.
async fn run_connection(
    stream: TcpStream,
    from: SocketAddr,
    number: u64,
    mut outgoing: mpsc::Receiver<BytesMut>,
    events: mpsc::Sender<TcpEvent>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let read = async {
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            while buf.len() >= 2 {
                let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                if buf.len() < 2 + len {
                    break;
                }
                let _ = buf.split_to(2);
                let frame = buf.split_to(len);
                if events.send(TcpEvent::Frame(from, frame)).await.is_err() {
                    return;
                }
            }
            buf.reserve(4096);
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let write = async {
        let mut out = BytesMut::with_capacity(4096);
        while let Some(frame) = outgoing.recv().await {
            out.clear();
            out.put_u16(frame.len().min(u16::MAX as usize) as u16);
            out.extend_from_slice(&frame[..frame.len().min(u16::MAX as usize)]);
            if writer.write_all(&out).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
    let _ = events.send(TcpEvent::Closed(from, number)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_split_and_joined_by_their_length_prefix() {
        let metrics = Metrics::default();
        let mut tcp = TcpMedia::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = tcp.listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        // Two frames, the second split across writes.
        client
            .write_all(&[0, 3, b'a', b'b', b'c', 0, 2, b'x'])
            .await
            .unwrap();
        let first = tcp.next(&metrics).await;
        let Some(TcpEvent::Frame(from, frame)) = first else {
            panic!("a frame")
        };
        assert_eq!(&frame[..], b"abc");
        client.write_all(b"y").await.unwrap();
        let Some(TcpEvent::Frame(_, frame)) = tcp.next(&metrics).await else {
            panic!("a frame")
        };
        assert_eq!(&frame[..], b"xy");
        // And back, framed.
        tcp.send(from, BytesMut::from(&b"hello"[..]), &metrics);
        let mut got = [0u8; 7];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x00\x05hello");
        // A connection that names nobody is closed after the deadline, counted.
        tcp.expire(Instant::now() + FIRST_FRAME_TIMEOUT, &metrics);
        assert_eq!(tcp.connections(), 0);
        assert_eq!(
            metrics
                .tcp_connections_refused
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "closed");
    }
}
