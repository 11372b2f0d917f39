//! A virtual network between the scenario harness's clients and its shard: per client,
//! an uplink and a downlink with seeded random loss, delay, jitter (which reorders), and
//! a rate limit with a bounded queue (a bottleneck: what exceeds it waits, then drops).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which way a datagram crosses a client's access link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// One direction of a client's access link.
#[derive(Clone, Copy, Debug)]
pub struct Conditions {
    /// Share of datagrams lost at random (0..1).
    pub loss: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from [0, jitter) per datagram; above the gap between
    /// datagrams, it reorders them.
    pub jitter: Duration,
    /// Bottleneck rate in bits/s, none when unlimited.
    pub rate_bps: Option<u64>,
    /// The bottleneck's queue, as time at its rate: a datagram that would wait longer is
    /// dropped (tail drop).
    pub queue: Duration,
}

impl Default for Conditions {
    /// A clean 20 ms path.
    fn default() -> Self {
        Conditions {
            loss: 0.0,
            delay: Duration::from_millis(20),
            jitter: Duration::ZERO,
            rate_bps: None,
            queue: Duration::from_millis(100),
        }
    }
}

/// What one link did.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkStats {
    pub sent: u64,
    pub lost_random: u64,
    pub lost_queue: u64,
}

#[derive(Default)]
struct Link {
    conditions: Conditions,
    /// When the bottleneck finishes sending what it holds.
    busy_until: Option<Instant>,
    stats: LinkStats,
}

/// A datagram on its way: (arrival, order sent, from, to, bytes).
type InFlight = Reverse<(Instant, u64, SocketAddr, SocketAddr, Vec<u8>)>;

pub struct Net {
    server: SocketAddr,
    rng: StdRng,
    links: HashMap<(SocketAddr, Direction), Link>,
    in_flight: BinaryHeap<InFlight>,
    sent: u64,
}

impl Net {
    pub fn new(server: SocketAddr, seed: u64) -> Net {
        Net {
            server,
            rng: StdRng::seed_from_u64(seed),
            links: HashMap::new(),
            in_flight: BinaryHeap::new(),
            sent: 0,
        }
    }

    pub fn set(&mut self, client: SocketAddr, direction: Direction, conditions: Conditions) {
        self.links
            .entry((client, direction))
            .or_default()
            .conditions = conditions;
    }

    pub fn stats(&self, client: SocketAddr, direction: Direction) -> LinkStats {
        self.links
            .get(&(client, direction))
            .map(|l| l.stats)
            .unwrap_or_default()
    }

    /// Puts a datagram on the wire at `now`.
    pub fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, datagram: Vec<u8>) {
        let key = if to == self.server {
            (from, Direction::Up)
        } else {
            (to, Direction::Down)
        };
        let link = self.links.entry(key).or_default();
        let c = link.conditions;
        link.stats.sent += 1;
        if c.loss > 0.0 && self.rng.random::<f64>() < c.loss {
            link.stats.lost_random += 1;
            return;
        }
        let mut departs = now;
        if let Some(rate) = c.rate_bps.filter(|r| *r > 0) {
            let start = link.busy_until.map_or(now, |b| b.max(now));
            if start - now > c.queue {
                link.stats.lost_queue += 1;
                return;
            }
            departs = start + Duration::from_secs_f64(datagram.len() as f64 * 8.0 / rate as f64);
            link.busy_until = Some(departs);
        }
        let jitter = c.jitter.mul_f64(self.rng.random::<f64>());
        self.sent += 1;
        self.in_flight.push(Reverse((
            departs + c.delay + jitter,
            self.sent,
            from,
            to,
            datagram,
        )));
    }

    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse((t, ..))| *t)
    }

    /// The next datagram that has arrived by `now`: (from, to, bytes).
    pub fn pop_arrived(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        if self.next_arrival()? > now {
            return None;
        }
        let Reverse((_, _, from, to, bytes)) = self.in_flight.pop()?;
        Some((from, to, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loss_is_seeded_and_near_its_share() {
        let (server, client) = (addr("127.0.0.1:1"), addr("127.0.1.1:1"));
        let run = |seed| {
            let mut net = Net::new(server, seed);
            let c = Conditions {
                loss: 0.1,
                ..Default::default()
            };
            net.set(client, Direction::Up, c);
            let t0 = Instant::now();
            for _ in 0..10_000 {
                net.send(t0, client, server, vec![0; 100]);
            }
            net.stats(client, Direction::Up).lost_random
        };
        assert_eq!(run(7), run(7), "same seed, same losses");
        assert!((900..1100).contains(&run(7)), "{}", run(7));
    }

    #[test]
    fn a_bottleneck_spaces_then_drops() {
        let (server, client) = (addr("127.0.0.1:1"), addr("127.0.1.1:1"));
        let mut net = Net::new(server, 1);
        let c = Conditions {
            rate_bps: Some(800_000), // 100 bytes per ms
            queue: Duration::from_millis(10),
            delay: Duration::ZERO,
            ..Default::default()
        };
        net.set(client, Direction::Down, c);
        let t0 = Instant::now();
        for _ in 0..20 {
            net.send(t0, server, client, vec![0; 100]);
        }
        // 10 ms of queue at 1 ms each: the 12th and later wait too long.
        assert_eq!(net.stats(client, Direction::Down).lost_queue, 9);
        let mut last = t0;
        let mut n = 0;
        while let Some(t) = net.next_arrival() {
            assert!(t >= last);
            last = t;
            net.pop_arrived(t).unwrap();
            n += 1;
        }
        assert_eq!(n, 11);
        assert_eq!(last - t0, Duration::from_millis(11));
    }
}
