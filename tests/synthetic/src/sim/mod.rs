//! The scenario harness: a real shard ([`switchyard::engine::sim::SimShard`]) and
//! synthetic clients ([`Endpoint`]: sans-I/O rtc connections publishing paced media)
//! joined by a virtual network ([`net::Net`]) with seeded loss, delay, reordering and
//! bottlenecks, all on one simulated clock. Signaling is the shard's own command and
//! output queues, answered the way the web client answers them. Nothing sleeps and
//! nothing touches a socket, so a scenario of several simulated seconds runs in a
//! fraction of a real one and is the same each run for a seed.

pub mod net;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::sansio::Protocol;
use switchyard::auth::Grants;
use switchyard::engine::sim::SimShard;
use switchyard::engine::{Command, PeerOutput, SESSION_QUEUE};
use switchyard::id::ParticipantId;
use tokio::sync::{mpsc, oneshot};

use crate::endpoint::{build_pc, Endpoint};
use crate::media::MediaPlan;
use crate::participant::Shared;
use crate::stats::StreamStats;
pub use net::{Conditions, Direction, LinkStats};

/// The media clock of every client (as the load tester's).
const TICK: Duration = Duration::from_millis(10);
/// A connection's timer that rtc reports as already due is not run again sooner.
const MIN_TIMER_STEP: Duration = Duration::from_millis(1);

/// One synthetic participant in the world.
pub struct Client {
    pub id: ParticipantId,
    pub name: String,
    pub endpoint: Endpoint,
    events: mpsc::Receiver<PeerOutput>,
    /// Errors the server sent this client (`error` messages).
    pub errors: Vec<String>,
    /// Why the server closed this client, once it has.
    pub closed: Option<&'static str>,
    /// Offers the server made and this client answered.
    pub offers_answered: usize,
    /// Room events received (joins, leaves, publications, mutes...).
    pub room_events: usize,
    /// No timer before this (rtc may report an already expired deadline again).
    timer_floor: Instant,
    left: bool,
}

impl Client {
    /// What this client received from `publisher` (video or audio).
    pub fn received(&self, publisher: ParticipantId, kind: &str) -> StreamStats {
        crate::participant::lock(&self.endpoint.shared.received)
            .get(&(publisher.to_string(), kind.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Video packets this client has sent so far (its next synthetic counter).
    pub fn video_sent(&self) -> u64 {
        self.endpoint
            .shared
            .video_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn plis_received(&self) -> u64 {
        self.endpoint
            .shared
            .plis_received
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub struct World {
    pub now: Instant,
    pub shard: SimShard,
    pub net: net::Net,
    pub clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, usize>,
    tick: u64,
    next_tick: Instant,
}

impl World {
    /// A shard with downlink estimation on, and a network seeded with `seed`.
    pub fn new(seed: u64) -> World {
        let now = Instant::now();
        let server: SocketAddr = "127.0.0.1:3478".parse().expect("address");
        World {
            now,
            shard: SimShard::new(server, true, now),
            net: net::Net::new(server, seed),
            clients: Vec::new(),
            by_addr: HashMap::new(),
            tick: 0,
            next_tick: now + TICK,
        }
    }

    /// `name` joins `room`, publishing `plan`, and sends its first offer (as the web
    /// client does). Returns the client's index.
    pub fn join(&mut self, room: &str, name: &str, plan: MediaPlan) -> usize {
        let id = self.shard.ids().participant();
        let (events_tx, events) = mpsc::channel(SESSION_QUEUE);
        let (reply, mut joined) = oneshot::channel();
        let cmd = Command::Join {
            id,
            room: room.to_string(),
            name: name.to_string(),
            grants: Grants::default(),
            events: events_tx,
            reply,
        };
        self.shard.command(cmd, self.now);
        match joined.try_recv() {
            Ok(Ok(_)) => {}
            other => panic!("{name} could not join: {other:?}"),
        }
        let n = self.clients.len();
        let local: SocketAddr = format!("127.0.{}.{}:5000", 1 + n / 200, 1 + n % 200)
            .parse()
            .expect("address");
        let pc = build_pc(self.now).expect("a client connection");
        let mut endpoint = Endpoint::new(pc, local, Arc::new(Shared::default()), plan);
        let offer = endpoint
            .prepare(self.now)
            .expect("the client's first offer");
        self.shard.command(
            Command::Offer {
                id,
                sdp: offer,
                sources: HashMap::new(),
            },
            self.now,
        );
        self.by_addr.insert(local, n);
        self.clients.push(Client {
            id,
            name: name.to_string(),
            endpoint,
            events,
            errors: Vec::new(),
            closed: None,
            offers_answered: 0,
            room_events: 0,
            timer_floor: self.now,
            left: false,
        });
        self.pump();
        n
    }

    /// Client `i` leaves (its `leave` message) and its connection closes.
    pub fn leave(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.left = true;
        let _ = c.endpoint.pc.close();
        let id = c.id;
        self.shard.command(Command::Leave { id }, self.now);
        self.pump();
    }

    /// Sets one direction of client `i`'s access link.
    pub fn link(&mut self, i: usize, direction: Direction, conditions: Conditions) {
        let addr = self.clients[i].endpoint.local;
        self.net.set(addr, direction, conditions);
    }

    pub fn link_stats(&self, i: usize, direction: Direction) -> LinkStats {
        self.net.stats(self.clients[i].endpoint.local, direction)
    }

    /// Runs the world for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.pump();
            let next = self.next_event();
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            self.step();
        }
    }

    /// Runs until `done(world)` holds, at most `limit` of simulated time; whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.run_for(Duration::from_millis(50).min(end - self.now));
        }
        done(self)
    }

    fn next_event(&mut self) -> Instant {
        let mut next = self.shard.poll_timeout().min(self.next_tick);
        if let Some(t) = self.net.next_arrival() {
            next = next.min(t);
        }
        for c in self.clients.iter_mut().filter(|c| !c.left) {
            if let Some(t) = c.endpoint.pc.poll_timeout() {
                next = next.min(t.max(c.timer_floor));
            }
        }
        next
    }

    /// Everything due at `self.now`: arrivals, timers, then the media tick.
    fn step(&mut self) {
        let now = self.now;
        while let Some((from, to, bytes)) = self.net.pop_arrived(now) {
            if to == self.shard.address() {
                self.shard.receive(from, &bytes, now);
            } else if let Some(&i) = self.by_addr.get(&to) {
                let c = &mut self.clients[i];
                if !c.left {
                    c.endpoint.handle_datagram(from, &bytes, now);
                    c.endpoint.settle();
                }
            }
        }
        if self.shard.poll_timeout() <= now {
            self.shard.handle_timeout(now);
        }
        for c in self.clients.iter_mut().filter(|c| !c.left) {
            let due = c.endpoint.pc.poll_timeout();
            if due.is_some_and(|t| t.max(c.timer_floor) <= now) {
                let _ = c.endpoint.pc.handle_timeout(now);
                c.timer_floor = now + MIN_TIMER_STEP;
                c.endpoint.settle();
            }
        }
        if now >= self.next_tick {
            for c in self.clients.iter_mut().filter(|c| !c.left) {
                c.endpoint.send_media(self.tick, now);
            }
            self.tick += 1;
            self.next_tick += TICK;
        }
    }

    /// Moves signaling and datagrams until nothing is left to move at this instant.
    fn pump(&mut self) {
        let now = self.now;
        for _ in 0..1000 {
            let mut moved = false;
            for c in self.clients.iter_mut() {
                while let Ok(out) = c.events.try_recv() {
                    moved = true;
                    if c.left {
                        continue;
                    }
                    match out {
                        PeerOutput::Offer(sdp) => match c.endpoint.answer(sdp, now) {
                            Ok(answer) => {
                                c.offers_answered += 1;
                                let cmd = Command::Answer {
                                    id: c.id,
                                    sdp: answer,
                                };
                                self.shard.command(cmd, now);
                            }
                            Err(e) => c.errors.push(format!("answering: {e}")),
                        },
                        PeerOutput::Answer(sdp) => {
                            if let Err(e) = c.endpoint.apply_answer(sdp, now) {
                                c.errors.push(format!("applying the answer: {e}"));
                            }
                        }
                        PeerOutput::Layers { active, .. } => {
                            let rids = c.endpoint.video.as_ref().map(|v| {
                                v.layers.iter().map(|l| l.rid.clone()).collect::<Vec<_>>()
                            });
                            c.endpoint.paused_rids = rids
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|r| !active.contains(r))
                                .collect();
                        }
                        PeerOutput::Error(e) => c.errors.push(e.to_string()),
                        PeerOutput::Closed(why) | PeerOutput::Removed(why) => c.closed = Some(why),
                        PeerOutput::Moved { .. } => c.closed = Some("moved to another node"),
                        PeerOutput::Room(_) | PeerOutput::Resync(_) => c.room_events += 1,
                    }
                }
                if c.left {
                    continue;
                }
                c.endpoint.settle();
                while let Some(msg) = c.endpoint.pc.poll_write() {
                    moved = true;
                    let to = msg.transport.peer_addr;
                    self.net
                        .send(now, c.endpoint.local, to, msg.message.to_vec());
                }
            }
            let from = self.shard.address();
            for (to, datagram) in self.shard.take_sent() {
                moved = true;
                self.net.send(now, from, to, datagram.to_vec());
            }
            if !moved {
                return;
            }
        }
    }
}
