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

mod redis_store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use redis_store::RedisStore;

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
}

/// This node's view of the cluster.
pub struct Cluster {
    pub node_id: String,
    pub ws_url: String,
    store: Option<RedisStore>,
    /// Rooms this node holds the lease of: fence, and when a participant was last seen.
    held: Mutex<HashMap<String, Held>>,
    /// This node's entry as last registered.
    last_info: Mutex<Option<NodeInfo>>,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    fence: u64,
    last_busy: Instant,
}

impl Cluster {
    /// One node, no Redis: every room is here.
    pub fn single(node_id: String, ws_url: String) -> Arc<Cluster> {
        Arc::new(Cluster {
            node_id,
            ws_url,
            store: None,
            held: Mutex::new(HashMap::new()),
            last_info: Mutex::new(None),
        })
    }

    pub async fn with_redis(
        url: &str,
        node_id: String,
        ws_url: String,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let store = RedisStore::connect(url).await?;
        Ok(Arc::new(Cluster {
            node_id,
            ws_url,
            store: Some(store),
            held: Mutex::new(HashMap::new()),
            last_info: Mutex::new(None),
        }))
    }

    pub fn clustered(&self) -> bool {
        self.store.is_some()
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
                Some((node, _)) if node == self.node_id => {
                    // Ours from an earlier life of this node id: take it afresh.
                    return self.take(store, room).await;
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
                    let nodes = store.nodes().await?;
                    match least_loaded(&nodes, &self.node_id) {
                        Some(n) if n.id != self.node_id => {
                            return Ok(Placement::Elsewhere {
                                node: n.id.clone(),
                                ws_url: n.ws_url.clone(),
                            })
                        }
                        _ => {
                            if let Some(p) = self.try_take(store, room).await? {
                                return Ok(p);
                            }
                            // Someone took it between our look and our SET: look again.
                        }
                    }
                }
            }
        }
    }

    async fn take(&self, store: &RedisStore, room: &str) -> Result<Placement, ClusterError> {
        match self.try_take(store, room).await? {
            Some(p) => Ok(p),
            None => Err(ClusterError::Settling(room.to_string())),
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
        self.held().insert(
            room.to_string(),
            Held {
                fence,
                last_busy: Instant::now(),
            },
        );
        // Tell the others at once (not at the next heartbeat) that this node has one
        // more room, so a burst of new rooms spreads instead of piling up here.
        let info = {
            let mut last = self.last_info.lock().unwrap_or_else(|e| e.into_inner());
            last.as_mut().map(|info| {
                info.rooms.push(room.to_string());
                info.clone()
            })
        };
        if let Some(info) = info {
            store.register(&info).await?;
        }
        Ok(Some(Placement::Here))
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
        store.register(me).await?;
        *self.last_info.lock().unwrap_or_else(|e| e.into_inner()) = Some(me.clone());
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

/// The node to place a new room on: the fewest participants and rooms together (a
/// new room counts before anyone is in it); on a tie this node (no redirect), then
/// the lowest id.
pub fn least_loaded<'a>(nodes: &'a [NodeInfo], me: &str) -> Option<&'a NodeInfo> {
    nodes.iter().min_by_key(|n| {
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
        }
    }

    #[test]
    fn new_rooms_go_to_the_least_loaded_node_and_ties_stay_here() {
        let nodes = [node("a", 5), node("b", 2), node("c", 2)];
        assert_eq!(least_loaded(&nodes, "a").unwrap().id, "b");
        assert_eq!(least_loaded(&nodes, "c").unwrap().id, "c");
        assert!(least_loaded(&[], "a").is_none());
    }
}
