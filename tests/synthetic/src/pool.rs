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

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState, BATCH_SIZE};
use rtc::peer_connection::RTCPeerConnection;
use rtc::sansio::Protocol;
use tokio::sync::oneshot;

use super::endpoint::Endpoint;
use super::link::{Link, Transport, TurnServer};
use super::media::MediaPlan;
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

/// One synthetic participant's connection on the media thread, over its own socket.
pub struct Client {
    pub endpoint: Endpoint,
    socket: UdpSocket,
    state: UdpSocketState,
    /// How its datagrams reach the server (straight, ICE-TCP, or through TURN).
    link: Link,
    token: Token,
    /// The downlink policer's tokens (bytes) and when they were last filled.
    bucket: f64,
    bucket_at: Instant,
}

impl std::ops::Deref for Client {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }
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
        self.add_via(ip, pc, shared, plan, Transport::Udp, None)
    }

    /// As `add`, with the media going over `transport` (`turn`: the TURN server to
    /// allocate on; the allocation is made here, before the client is added).
    pub fn add_via(
        &mut self,
        ip: IpAddr,
        pc: RTCPeerConnection,
        shared: Arc<Shared>,
        plan: MediaPlan,
        transport: Transport,
        turn: Option<TurnServer>,
    ) -> io::Result<usize> {
        let mut socket = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let link = match transport {
            Transport::Udp => Link::Udp,
            Transport::Tcp => Link::Tcp(None),
            Transport::Turn => {
                let server = turn.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        "no TURN server in joined.ice_servers",
                    )
                })?;
                Link::turn(&socket, server)?
            }
        };
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
                endpoint: Endpoint::new(pc, local, shared, plan),
                socket,
                state,
                link,
                token: Token(key),
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
            if let Link::Tcp(Some(tcp)) = &mut c.link {
                let _ = self.registry.deregister(&mut tcp.stream);
            }
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
        let PoolState {
            registry, clients, ..
        } = state;
        for c in clients.values_mut() {
            if c.pc.poll_timeout().is_some_and(|t| t <= now) {
                let _ = c.pc.handle_timeout(now);
            }
            c.settle();
            if media_due {
                c.send_media(ticks, now);
            }
            c.flush(registry);
        }
        if media_due {
            ticks += 1;
        }
    }
}

impl Client {
    fn receive(&mut self, bufs: &mut [Vec<u8>], meta: &mut [RecvMeta], now: Instant) {
        let Client { link, endpoint, .. } = self;
        link.read_tcp(|from, frame| endpoint.handle_datagram(from, frame, now));
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
                    let Some((from, datagram)) = self.link.unwrap_udp(m.addr, datagram) else {
                        continue;
                    };
                    if !self.downlink_admits(datagram.len(), now) {
                        continue;
                    }
                    self.endpoint.handle_datagram(from, datagram, now);
                }
            }
            self.endpoint.settle();
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

    fn flush(&mut self, registry: &mio::Registry) {
        while let Some(msg) = self.endpoint.pc.poll_write() {
            // Loopback: a full buffer is loss, as on a network; never wait.
            self.link.send(
                &self.socket,
                registry,
                self.token,
                &msg.message,
                msg.transport.peer_addr,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::endpoint::due;

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
