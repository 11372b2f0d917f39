//! Several Switchyard nodes as one service (issue 19), coordinated through Redis: a
//! registry of live nodes (each refreshes its entry every second; an entry lives 3 s),
//! and a lease per room naming the one node that hosts it (taken with SET NX, renewed
//! by its holder every second through a compare-and-expire, fenced by a counter so a
//! holder that lost it cannot renew someone else's). A client may connect to any node:
//! the node looks the room up, and a room hosted elsewhere answers `moved` with that
//! node's signaling URL; the client reconnects there, and media goes straight to that
//! node (its candidates are in its SDP).
//!
//! Without `--redis` the single node places every room on itself, as before: one type,
//! two stores, so the rest of the server does not know which it has. Nothing here is on
//! the per-packet path: it runs at join and once a second.

pub mod forward;
mod redis_store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use redis_store::RedisStore;

use crate::metrics::Metrics;

/// How often a node refreshes its registry entry and renews its room leases.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a registry entry or a room lease lives without a refresh: a node killed
/// with its rooms frees them this soon.
pub const LEASE: Duration = Duration::from_secs(3);
/// A room this node holds that has had nobody on it this long is given back.
const IDLE_RELEASE: Duration = Duration::from_secs(5);

/// What a node tells the others about itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    /// Where clients reach its signaling (`ws://host:port/ws`).
    pub ws_url: String,
    pub participants: u64,
    pub rooms: Vec<String>,
    /// Its media sockets as clients reach them (advertised address, each shard's port):
    /// where the media of its rooms goes, straight from the clients.
    #[serde(default)]
    pub media: Vec<String>,
    /// Participants it takes, all rooms together (0: no limit): a node at its limit
    /// gets no new room.
    #[serde(default)]
    pub max_participants: u64,
    /// Shutting down (SIGTERM): it gets no new room, and its rooms are moving away.
    #[serde(default)]
    pub draining: bool,
}

impl NodeInfo {
    /// Whether a new room may be placed on it.
    pub fn takes_rooms(&self) -> bool {
        !self.draining && (self.max_participants == 0 || self.participants < self.max_participants)
    }
}

/// What a node is, for `Cluster::single` and `Cluster::with_redis`.
pub struct NodeSettings {
    pub node_id: String,
    pub ws_url: String,
    /// Participants it takes, all rooms together (0: no limit).
    pub max_participants: u64,
    /// Its counters (the live participant count is read there).
    pub metrics: Arc<Metrics>,
}

/// Where a room's participants meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    Here,
    Elsewhere { node: String, ws_url: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster store is unreachable: {0}")]
    Unavailable(String),
    #[error("room {0} is held by a node that stopped; try again in a few seconds")]
    Settling(String),
    #[error("every node is full or shutting down")]
    Full,
    #[error("node {0} did not answer in time")]
    NoAnswer(String),
}

/// This node's view of the cluster.
pub struct Cluster {
    pub node_id: String,
    pub ws_url: String,
    store: Option<RedisStore>,
    /// Rooms this node holds the lease of: fence, and when a participant was last seen.
    held: Mutex<HashMap<String, Held>>,
    /// This node's entry as last registered. Held across each registry write, so
    /// writes go one at a time and each carries a participant count read inside it:
    /// a heartbeat's older count never lands after a newer one.
    registry: tokio::sync::Mutex<Option<NodeInfo>>,
    /// Where the live participant count is read.
    metrics: Arc<Metrics>,
    /// Participants this node takes (0: no limit).
    pub max_participants: u64,
    /// Set on SIGTERM: no new rooms here.
    draining: AtomicBool,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    fence: u64,
    last_busy: Instant,
}

impl Cluster {
    /// One node, no Redis: every room is here.
    pub fn single(me: NodeSettings) -> Arc<Cluster> {
        Arc::new(Cluster::new(me, None))
    }

    pub async fn with_redis(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        me: NodeSettings,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let store = RedisStore::connect(url, ca_pem).await?;
        Ok(Arc::new(Cluster::new(me, Some(store))))
    }

    fn new(me: NodeSettings, store: Option<RedisStore>) -> Cluster {
        Cluster {
            node_id: me.node_id,
            ws_url: me.ws_url,
            store,
            held: Mutex::new(HashMap::new()),
            registry: tokio::sync::Mutex::new(None),
            metrics: me.metrics,
            max_participants: me.max_participants,
            draining: AtomicBool::new(false),
        }
    }

    /// Participants on this node now.
    pub fn participants(&self) -> u64 {
        self.metrics.participants_now.load(Ordering::Relaxed)
    }

    pub fn clustered(&self) -> bool {
        self.store.is_some()
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether this node is at its participant limit.
    pub fn full(&self, participants: u64) -> bool {
        self.max_participants != 0 && participants >= self.max_participants
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where `room` is hosted, taking its lease when it is free and this node is the
    /// least loaded. A room this node already holds stays here even while the store is
    /// unreachable (running meetings keep going; others cannot take it meanwhile, since
    /// they cannot reach the store either).
    pub async fn place(&self, room: &str) -> Result<Placement, ClusterError> {
        let Some(store) = &self.store else {
            return Ok(Placement::Here);
        };
        let ours = self.held().get(room).map(|h| h.fence);
        // A holder killed a moment ago still holds its lease for up to LEASE: wait it
        // out (bounded) rather than refuse.
        let deadline = Instant::now() + LEASE + HEARTBEAT;
        loop {
            let lease = match store.lease_of(room).await {
                Ok(lease) => lease,
                // The store is away: a room held here stays here; others must wait.
                Err(_) if ours.is_some() => return Ok(Placement::Here),
                Err(e) => return Err(e),
            };
            match lease {
                Some((node, fence)) if node == self.node_id && Some(fence) == ours => {
                    if let Some(h) = self.held().get_mut(room) {
                        h.last_busy = Instant::now();
                    }
                    return Ok(Placement::Here);
                }
                Some((node, fence)) if node == self.node_id => {
                    // Leased to this node by the node that placed the room here (or by
                    // an earlier life of this node id): it is ours to host, unless this
                    // node filled up or began draining meanwhile (the lease then lapses
                    // unrenewed, and the room is placed afresh).
                    if self.full(self.participants()) || self.draining() {
                        return Err(ClusterError::Full);
                    }
                    self.adopt(store, room, fence).await?;
                    return Ok(Placement::Here);
                }
                Some((node, _)) => {
                    // Held elsewhere now, even if this node thought it held it.
                    self.held().remove(room);
                    if let Some(info) = store.fresh_node(&node).await? {
                        return Ok(Placement::Elsewhere {
                            node,
                            ws_url: info.ws_url,
                        });
                    }
                    if Instant::now() >= deadline {
                        return Err(ClusterError::Settling(room.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                None if ours.is_some() => {
                    // Our lease lapsed (the store was away): keep the room here if we can.
                    self.held().remove(room);
                    if let Some(p) = self.try_take(store, room).await? {
                        return Ok(p);
                    }
                }
                None => {
                    let mut nodes = store.nodes().await?;
                    // This node as it is now, not as it registered up to a second ago.
                    nodes.retain(|n| n.id != self.node_id);
                    nodes.push(NodeInfo {
                        id: self.node_id.clone(),
                        ws_url: self.ws_url.clone(),
                        participants: self.participants(),
                        rooms: self.held().keys().cloned().collect(),
                        media: vec![],
                        max_participants: self.max_participants,
                        draining: self.draining(),
                    });
                    match least_loaded(&nodes, &self.node_id) {
                        Some(n) if n.id != self.node_id => {
                            // Decided once, here: the lease names that node before the
                            // client is sent there, so that node hosts the room whatever
                            // its own (equally stale) view of the loads says. Two nodes
                            // deciding for each other would send a client back and forth.
                            if store.acquire(room, &n.id).await?.is_some() {
                                return Ok(Placement::Elsewhere {
                                    node: n.id.clone(),
                                    ws_url: n.ws_url.clone(),
                                });
                            }
                            // Someone placed it meanwhile: look again.
                        }
                        Some(_) => {
                            if let Some(p) = self.try_take(store, room).await? {
                                return Ok(p);
                            }
                            // Someone took it between our look and our SET: look again.
                        }
                        None => return Err(ClusterError::Full),
                    }
                }
            }
        }
    }

    async fn try_take(
        &self,
        store: &RedisStore,
        room: &str,
    ) -> Result<Option<Placement>, ClusterError> {
        let Some(fence) = store.acquire(room, &self.node_id).await? else {
            return Ok(None);
        };
        self.adopt(store, room, fence).await?;
        Ok(Some(Placement::Here))
    }

    /// Hosts `room` under the lease `fence` that names this node: renewed from now on
    /// with the others.
    async fn adopt(&self, store: &RedisStore, room: &str, fence: u64) -> Result<(), ClusterError> {
        self.held().insert(
            room.to_string(),
            Held {
                fence,
                last_busy: Instant::now(),
            },
        );
        // Tell the others at once (not at the next heartbeat) that this node has one
        // more room, so a burst of new rooms spreads instead of piling up here.
        let mut entry = self.registry.lock().await;
        if let Some(info) = entry.as_mut() {
            if !info.rooms.iter().any(|r| r == room) {
                info.rooms.push(room.to_string());
            }
            info.participants = self.participants();
            store.register(info).await?;
        }
        Ok(())
    }

    /// After a join: a node that has just reached its participant limit says so in the
    /// registry at once (not at the next heartbeat), so no other node sends it a new
    /// room meanwhile (two full nodes would send a join back and forth). Nothing is
    /// written while the limit is not crossed.
    pub async fn note_load(&self) {
        let Some(store) = &self.store else { return };
        let mut entry = self.registry.lock().await;
        let now = self.participants();
        if let Some(info) = entry.as_mut() {
            if self.full(info.participants) != self.full(now) {
                info.participants = now;
                let _ = store.register(info).await;
            }
        }
    }

    /// Writes this node's entry, `me` with the participant count and the draining flag
    /// as they are now.
    async fn register(&self, store: &RedisStore, me: &NodeInfo) -> Result<(), ClusterError> {
        let mut entry = self.registry.lock().await;
        let me = NodeInfo {
            participants: self.participants(),
            draining: self.draining(),
            ..me.clone()
        };
        store.register(&me).await?;
        *entry = Some(me);
        Ok(())
    }

    /// The live node hosting `room`, if one holds its lease (a holder that stopped
    /// refreshing its entry counts as none: its rooms are about to be placed again).
    pub async fn host_of(&self, room: &str) -> Result<Option<NodeInfo>, ClusterError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        match store.lease_of(room).await? {
            Some((node, _)) => store.fresh_node(&node).await,
            None => Ok(None),
        }
    }

    /// SIGTERM: no new room is placed here from now on (the registry says so at once),
    /// and every room this node holds is given back, so the next join for it places it
    /// on another node. Returns the node its participants should move to (the least
    /// loaded that takes rooms), if there is one.
    pub async fn drain(&self, me: &NodeInfo) -> Result<Option<NodeInfo>, ClusterError> {
        self.draining.store(true, Ordering::Relaxed);
        let Some(store) = &self.store else {
            return Ok(None);
        };
        self.register(store, me).await?;
        let held: Vec<(String, Held)> = self.held().drain().collect();
        for (room, h) in held {
            store.release(&room, &self.node_id, h.fence).await?;
        }
        let nodes = store.nodes().await?;
        Ok(least_loaded(&nodes, &self.node_id)
            .filter(|n| n.id != self.node_id)
            .cloned())
    }

    /// The live nodes (this one alone without Redis).
    pub async fn nodes(&self, local: NodeInfo) -> Result<Vec<NodeInfo>, ClusterError> {
        match &self.store {
            None => Ok(vec![local]),
            Some(store) => store.nodes().await,
        }
    }

    /// Once a second: refresh this node's entry, renew its leases, give back the rooms
    /// nobody is in, and return the rooms whose lease was lost (another node holds
    /// them now: the caller closes them here, their participants rejoin there).
    pub async fn heartbeat(
        &self,
        me: &NodeInfo,
        busy_rooms: &[String],
    ) -> Result<Vec<String>, ClusterError> {
        let Some(store) = &self.store else {
            return Ok(vec![]);
        };
        self.register(store, me).await?;
        let now = Instant::now();
        let mut lost = Vec::new();
        let mut release = Vec::new();
        let held: Vec<(String, Held)> = {
            let mut held = self.held();
            for (room, h) in held.iter_mut() {
                if busy_rooms.contains(room) {
                    h.last_busy = now;
                }
            }
            held.iter().map(|(r, h)| (r.clone(), *h)).collect()
        };
        for (room, h) in held {
            if now.duration_since(h.last_busy) > IDLE_RELEASE {
                release.push((room, h.fence));
                continue;
            }
            if !store.renew(&room, &self.node_id, h.fence).await? {
                lost.push(room);
            }
        }
        for (room, fence) in release {
            store.release(&room, &self.node_id, fence).await?;
            self.held().remove(&room);
        }
        for room in &lost {
            self.held().remove(room);
        }
        Ok(lost)
    }

    /// Gives back every lease (a node shutting down cleanly).
    pub async fn leave(&self) {
        let Some(store) = &self.store else { return };
        let held: Vec<(String, Held)> = self.held().drain().collect();
        for (room, h) in held {
            let _ = store.release(&room, &self.node_id, h.fence).await;
        }
        let _ = store.unregister(&self.node_id).await;
    }
}

/// The node to place a new room on: of those that take rooms (not draining, below
/// their participant limit), the fewest participants and rooms together (a new room
/// counts before anyone is in it); on a tie this node (no redirect), then the lowest id.
pub fn least_loaded<'a>(nodes: &'a [NodeInfo], me: &str) -> Option<&'a NodeInfo> {
    nodes.iter().filter(|n| n.takes_rooms()).min_by_key(|n| {
        (
            n.participants + n.rooms.len() as u64,
            n.id != me,
            n.id.clone(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, participants: u64) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            ws_url: format!("ws://{id}/ws"),
            participants,
            rooms: vec![],
            media: vec![],
            max_participants: 0,
            draining: false,
        }
    }

    #[test]
    fn new_rooms_go_to_the_least_loaded_node_and_ties_stay_here() {
        let nodes = [node("a", 5), node("b", 2), node("c", 2)];
        assert_eq!(least_loaded(&nodes, "a").unwrap().id, "b");
        assert_eq!(least_loaded(&nodes, "c").unwrap().id, "c");
        assert!(least_loaded(&[], "a").is_none());
    }

    #[test]
    fn draining_and_full_nodes_get_no_new_rooms() {
        let mut nodes = [node("a", 5), node("b", 2), node("c", 3)];
        nodes[1].draining = true;
        assert_eq!(least_loaded(&nodes, "a").unwrap().id, "c");
        nodes[2].max_participants = 3;
        assert_eq!(least_loaded(&nodes, "b").unwrap().id, "a");
        nodes[0].max_participants = 5;
        assert!(
            least_loaded(&nodes, "a").is_none(),
            "everyone is full or draining"
        );
    }
}
