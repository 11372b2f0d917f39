//! A shard without its socket, its thread or the wall clock, for deterministic scenario
//! tests (str0m's are the model): the harness hands it each datagram and each command at
//! a time of its choosing, runs its timers when they fall due, and takes what it sends.
//! The steps are the real shard's (`deliver`, `run_timers`, `housekeeping`,
//! `settle_and_flush`), so a scenario exercises the same code as a live server; only
//! the socket is replaced (`Wire::Captured`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::sync::oneshot;

use super::shard::{Shard, ShardSettings, Wire, HOUSEKEEPING};
use super::{Command, Ids, ShardInfo};
use crate::config::SrtpPolicy;
use crate::metrics::Metrics;

pub struct SimShard {
    shard: Shard,
    housekeeping: Instant,
}

impl SimShard {
    /// A shard whose one media address (its ICE candidate) is `address`, with downlink
    /// estimation on or off, at time `now`.
    pub fn new(address: SocketAddr, bwe: bool, now: Instant) -> SimShard {
        let metrics = Arc::new(Metrics::default());
        let settings = ShardSettings {
            index: 0,
            bind: address,
            advertise: None,
            srtp: SrtpPolicy::default(),
            bwe,
            max_participants: 1000,
            ice_connect_timeout: std::time::Duration::from_secs(20),
            webhooks: crate::webhook::WebhookSink::default(),
            ice_tcp: false,
        };
        let shard = Shard::new(
            settings,
            Wire::Captured(Vec::new()),
            address,
            Arc::new(Ids::default()),
            metrics,
        );
        SimShard {
            shard,
            housekeeping: now + HOUSEKEEPING,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.shard.candidate
    }

    pub fn ids(&self) -> &Ids {
        &self.shard.ids
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shard.metrics
    }

    /// A signaling command, as the shard's queue would deliver it.
    pub fn command(&mut self, cmd: Command, now: Instant) {
        self.shard.command(cmd, now);
        self.shard.settle_and_flush(now);
    }

    /// One datagram from `from`.
    pub fn receive(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        self.shard.deliver(from, BytesMut::from(datagram), now);
        self.shard.settle_and_flush(now);
    }

    /// When the shard next wants [`SimShard::handle_timeout`].
    pub fn poll_timeout(&self) -> Instant {
        self.shard
            .next_timer()
            .map_or(self.housekeeping, |t| t.min(self.housekeeping))
    }

    /// Runs what is due at `now`: connection timers, and the 20 ms housekeeping.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.shard.run_timers(now);
        if now >= self.housekeeping {
            self.shard.housekeeping(now);
            self.housekeeping = now + HOUSEKEEPING;
        }
        self.shard.settle_and_flush(now);
    }

    /// The datagrams sent since the last call, in order, with their destinations.
    pub fn take_sent(&mut self) -> Vec<(SocketAddr, BytesMut)> {
        match &mut self.shard.udp {
            Wire::Captured(out) => std::mem::take(out),
            Wire::Udp(_) => Vec::new(),
        }
    }

    /// What `/api/stats` shows of this shard: downlinks, publications, connections.
    pub fn inspect(&mut self, now: Instant) -> Option<ShardInfo> {
        let (tx, mut rx) = oneshot::channel();
        self.command(Command::Inspect { reply: tx }, now);
        rx.try_recv().ok()
    }
}
