//! The shard's one UDP socket: batched receive (recvmmsg, and GRO where the kernel
//! coalesces) and batched send: one UDP GSO `sendmsg` per run of equal-size datagrams to
//! one destination (a subscriber's share of a video frame), and one `sendmmsg` for the
//! single datagrams of a round, which go to many destinations (one audio packet to
//! every subscriber, or video at low rates when packets arrive one by one).
//!
//! quinn-udp does the receive and GSO syscalls (it is already in the tree under
//! webrtc-rs) and falls back to one datagram per `sendmsg` where the kernel refuses GSO;
//! `sendmmsg` is called through libc. Sends never wait: a full socket buffer drops the
//! datagram and counts it.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::metrics::Metrics;

/// Large enough for a GRO-coalesced batch of full-size datagrams.
const RECV_BUF: usize = 64 * 1024;
/// The limit on one GSO send's payload: a UDP datagram's largest payload over IPv4
/// (65,535 less the IP and UDP headers). At 64 KiB, a keyframe burst of 65,508-65,536
/// bytes was refused whole by the kernel.
const MAX_GSO_BYTES: usize = 65_507;
/// Datagrams per `sendmmsg` (the kernel takes up to 1024).
const MMSG_BATCH: usize = 64;
/// A few hundred ms of a busy shard's traffic either way.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    recv_bufs: Vec<Vec<u8>>,
    recv_meta: Vec<RecvMeta>,
    gso_scratch: Vec<u8>,
    /// Single datagrams of this round, for one `sendmmsg` at its end.
    singles: Vec<(SocketAddr, BytesMut)>,
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
            singles: Vec::new(),
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

    /// Sends `datagrams` (all to `to`, drained): runs of equal size leave at once as GSO
    /// sends; single datagrams wait in the round's batch for [`Udp::flush`].
    pub fn send_to(&mut self, to: SocketAddr, datagrams: &mut Vec<BytesMut>, metrics: &Metrics) {
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
                let contents_len = contents.len();
                let sent = self.send_one(to, &contents, Some(seg));
                self.gso_scratch = contents;
                Metrics::inc(&metrics.udp_gso_sends);
                if sent {
                    Metrics::add(&metrics.udp_datagrams_out, (end - i) as u64);
                    Metrics::add(&metrics.udp_bytes_out, contents_len as u64);
                } else {
                    // Every datagram of the run is lost, not one.
                    Metrics::add(&metrics.udp_send_errors, (end - i) as u64);
                }
            } else {
                self.singles.push((to, std::mem::take(&mut datagrams[i])));
            }
            i = end;
        }
        datagrams.clear();
    }

    /// Sends the round's single datagrams, up to [`MMSG_BATCH`] per `sendmmsg`.
    pub fn flush(&mut self, metrics: &Metrics) {
        let singles = std::mem::take(&mut self.singles);
        for chunk in singles.chunks(MMSG_BATCH) {
            let sent = match chunk {
                [(to, d)] => {
                    let sent = self.send_one(*to, d, None);
                    if !sent {
                        Metrics::inc(&metrics.udp_send_errors);
                    }
                    usize::from(sent)
                }
                _ => {
                    let sent = send_mmsg(&self.socket, chunk).unwrap_or(0);
                    Metrics::add(&metrics.udp_send_errors, (chunk.len() - sent) as u64);
                    Metrics::inc(&metrics.udp_mmsg_sends);
                    sent
                }
            };
            Metrics::add(&metrics.udp_datagrams_out, sent as u64);
            let bytes: usize = chunk[..sent].iter().map(|(_, d)| d.len()).sum();
            Metrics::add(&metrics.udp_bytes_out, bytes as u64);
        }
        self.singles = singles;
        self.singles.clear();
    }

    /// One send (a GSO run when `segment_size` is set); false when the kernel refused it.
    fn send_one(&mut self, to: SocketAddr, contents: &[u8], segment_size: Option<usize>) -> bool {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        // Straight to the non-blocking socket: a send never waits on readiness, and a
        // full buffer is an error (loss) rather than a reason to wait.
        // Full buffer or an unreachable destination: UDP's answer is loss (counted by
        // the caller), and the media path never waits for one subscriber.
        self.state
            .try_send(UdpSockRef::from(&self.socket), &transmit)
            .is_ok()
    }
}

/// One `sendmmsg` of single datagrams to their destinations; returns how many left.
/// Those after the first refused one (a full buffer) are dropped: UDP's answer is loss.
fn send_mmsg(socket: &UdpSocket, batch: &[(SocketAddr, BytesMut)]) -> io::Result<usize> {
    let names: Vec<socket2::SockAddr> = batch.iter().map(|(to, _)| (*to).into()).collect();
    let mut iovecs: Vec<libc::iovec> = batch
        .iter()
        .map(|(_, d)| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut messages: Vec<libc::mmsghdr> = names
        .iter()
        .zip(iovecs.iter_mut())
        .map(|(name, iov)| {
            // SAFETY: an all-zero msghdr is valid (no control data, no flags).
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = name.as_ptr() as *mut libc::c_void;
            hdr.msg_namelen = name.len();
            hdr.msg_iov = iov as *mut libc::iovec;
            hdr.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        })
        .collect();
    // SAFETY: every pointer in `messages` points into `names`, `iovecs` and `batch`,
    // which outlive the call; the count matches the array.
    let n = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            messages.as_mut_ptr(),
            messages.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

impl Udp {
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.singles.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receiver() -> std::net::UdpSocket {
        let r = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        r
    }

    fn received(r: &std::net::UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        (0..n)
            .map(|_| {
                let (len, _) = r.recv_from(&mut buf).expect("datagram within 2 s");
                buf[..len].to_vec()
            })
            .collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bursts_leave_as_gso_and_singles_as_one_sendmmsg() {
        let metrics = Metrics::default();
        let mut udp = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (r1, r2, r3) = (receiver(), receiver(), receiver());
        let d = |byte: u8, len: usize| BytesMut::from(&vec![byte; len][..]);
        // A burst of three equal datagrams and a shorter last one to r1: one GSO send.
        let mut burst = vec![d(1, 1000), d(2, 1000), d(3, 1000), d(4, 300)];
        udp.send_to(r1.local_addr().unwrap(), &mut burst, &metrics);
        assert!(burst.is_empty());
        // One datagram each to r2 and r3: held for the round's sendmmsg.
        udp.send_to(r2.local_addr().unwrap(), &mut vec![d(5, 100)], &metrics);
        udp.send_to(r3.local_addr().unwrap(), &mut vec![d(6, 120)], &metrics);
        assert_eq!(udp.pending(), 2);
        udp.flush(&metrics);
        assert_eq!(udp.pending(), 0);

        let got = received(&r1, 4);
        assert_eq!(
            got.iter().map(|g| (g[0], g.len())).collect::<Vec<_>>(),
            [(1, 1000), (2, 1000), (3, 1000), (4, 300)],
            "segments arrive as separate datagrams, in order"
        );
        assert_eq!(received(&r2, 1)[0], vec![5u8; 100]);
        assert_eq!(received(&r3, 1)[0], vec![6u8; 120]);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.udp_datagrams_out, 6);
        assert_eq!(snapshot.udp_mmsg_sends, 1);
        if udp.max_gso_segments() > 1 {
            assert_eq!(snapshot.udp_gso_sends, 1);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_above_the_datagram_limit_is_split_and_a_refused_send_counts_each_datagram() {
        let metrics = Metrics::default();
        let mut udp = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let r = receiver();
        // 64 x 1024 bytes = 65,536: above one UDP payload, so two GSO runs (one run of
        // it, as before, was refused by the kernel whole).
        let mut burst: Vec<BytesMut> = (0..64u8)
            .map(|i| BytesMut::from(&vec![i; 1024][..]))
            .collect();
        udp.send_to(r.local_addr().unwrap(), &mut burst, &metrics);
        udp.flush(&metrics);
        let got = received(&r, 64);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, g)| g[0] == i as u8 && g.len() == 1024));
        let snapshot = metrics.snapshot();
        assert_eq!(
            (snapshot.udp_datagrams_out, snapshot.udp_send_errors),
            (64, 0)
        );

        // A destination the kernel refuses (port 0): every datagram of the run is lost.
        let mut burst: Vec<BytesMut> = (0..4u8).map(|i| BytesMut::from(&[i; 500][..])).collect();
        udp.send_to("127.0.0.1:0".parse().unwrap(), &mut burst, &metrics);
        udp.flush(&metrics);
        let snapshot = metrics.snapshot();
        assert_eq!(
            snapshot.udp_datagrams_out, 64,
            "nothing more counted as sent"
        );
        assert_eq!(snapshot.udp_send_errors, 4);
    }
}
