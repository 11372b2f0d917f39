//! The shard's one UDP socket: batched receive (recvmmsg, and GRO where the kernel
//! coalesces) and batched send (one UDP GSO `sendmsg` per run of equal-size datagrams to
//! one destination, which is what a subscriber's burst of a video frame is).
//!
//! quinn-udp does the syscalls (it is already in the tree under webrtc-rs), and falls
//! back to one datagram per `sendmsg` where the kernel refuses GSO. Sends never wait: a
//! full socket buffer drops the datagram and counts it.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::metrics::Metrics;

/// Large enough for a GRO-coalesced batch of full-size datagrams.
const RECV_BUF: usize = 64 * 1024;
/// The kernel's limit on one GSO send's payload.
const MAX_GSO_BYTES: usize = 64 * 1024;
/// A few hundred ms of a busy shard's traffic either way.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    recv_bufs: Vec<Vec<u8>>,
    recv_meta: Vec<RecvMeta>,
    gso_scratch: Vec<u8>,
}

impl Udp {
    /// Binds `addr` (port 0: any). Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Udp> {
        let std_socket = std::net::UdpSocket::bind(addr)?;
        std_socket.set_nonblocking(true)?;
        let state = UdpSocketState::new(UdpSockRef::from(&std_socket))?;
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = state.set_recv_buffer_size(UdpSockRef::from(&std_socket), SOCKET_BUFFER_BYTES);
        let _ = state.set_send_buffer_size(UdpSockRef::from(&std_socket), SOCKET_BUFFER_BYTES);
        let socket = UdpSocket::from_std(std_socket)?;
        Ok(Udp {
            socket,
            state,
            recv_bufs: (0..BATCH_SIZE).map(|_| vec![0u8; RECV_BUF]).collect(),
            recv_meta: vec![RecvMeta::default(); BATCH_SIZE],
            gso_scratch: Vec::with_capacity(MAX_GSO_BYTES),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// One batch of datagrams, handed to `each(from, datagram)`. `Ok(0)` when none waits.
    pub fn recv_batch(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let Udp {
            socket,
            state,
            recv_bufs,
            recv_meta,
            ..
        } = self;
        let mut slices: Vec<IoSliceMut<'_>> =
            recv_bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = match socket.try_io(Interest::READABLE, || {
            state.recv(UdpSockRef::from(&*socket), &mut slices, recv_meta)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut datagrams = 0;
        for (meta, buf) in recv_meta.iter().zip(slices.iter()).take(n) {
            // GRO: one buffer may hold several datagrams of `stride` bytes each.
            let stride = meta.stride.max(1);
            for chunk in buf[..meta.len].chunks(stride) {
                each(meta.addr, chunk);
                datagrams += 1;
            }
        }
        Ok(datagrams)
    }

    /// Sends `datagrams` (all to `to`), coalescing runs of equal size into GSO sends.
    pub fn send_to(&mut self, to: SocketAddr, datagrams: &[BytesMut], metrics: &Metrics) {
        let mut i = 0;
        while i < datagrams.len() {
            let seg = datagrams[i].len();
            let mut end = i + 1;
            let mut total = seg;
            // Re-read each time: quinn-udp turns GSO off itself when the kernel refuses it.
            let max_segments = self.state.max_gso_segments();
            if max_segments > 1 && seg > 0 {
                while end < datagrams.len()
                    && end - i < max_segments
                    && total + datagrams[end].len() <= MAX_GSO_BYTES
                {
                    let len = datagrams[end].len();
                    // A shorter datagram may only end a run; a longer one starts the next.
                    if len > seg || len == 0 {
                        break;
                    }
                    total += len;
                    end += 1;
                    if len < seg {
                        break;
                    }
                }
            }
            if end - i > 1 {
                self.gso_scratch.clear();
                for d in &datagrams[i..end] {
                    self.gso_scratch.extend_from_slice(d);
                }
                let contents = std::mem::take(&mut self.gso_scratch);
                self.send_one(to, &contents, Some(seg), metrics);
                self.gso_scratch = contents;
                Metrics::inc(&metrics.udp_gso_sends);
            } else {
                self.send_one(to, &datagrams[i], None, metrics);
            }
            Metrics::add(&metrics.udp_datagrams_out, (end - i) as u64);
            i = end;
        }
    }

    fn send_one(
        &mut self,
        to: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
        metrics: &Metrics,
    ) {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        // Straight to the non-blocking socket: a send never waits on readiness, and a
        // full buffer is an error (loss) rather than a reason to wait.
        let result = self
            .state
            .try_send(UdpSockRef::from(&self.socket), &transmit);
        if result.is_err() {
            // Full buffer or an unreachable destination: UDP's answer is loss, and the
            // media path never waits for one subscriber.
            Metrics::inc(&metrics.udp_send_errors);
        }
    }
}
