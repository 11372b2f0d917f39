//! The cluster's state in Redis (the `redis` crate over one multiplexed connection that
//! reconnects by itself). Keys:
//! - `switchyard:node:{id}`: a node's `NodeInfo` as JSON, expiring after `LEASE`;
//! - `switchyard:nodes`: the set of node ids ever registered (entries without a live
//!   node key are skipped, and dropped);
//! - `switchyard:room:{room}`: `{node}|{fence}`, the room's lease, expiring after `LEASE`;
//! - `switchyard:fence`: the counter fences come from;
//! - channels `switchyard:rpc:{node}` (requests forwarded to a node) and
//!   `switchyard:reply:{node}:{n}` (one answer each; forward.rs).
//!
//! A lease is renewed and released only by compare-and-act scripts on the exact
//! `{node}|{fence}` value: a node that lost a lease (it expired while the node stalled,
//! and another took it) can neither renew nor release the new holder's.

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::{ClusterError, NodeInfo, HEARTBEAT, LEASE};

const NODES: &str = "switchyard:nodes";
const FENCE: &str = "switchyard:fence";

fn node_key(id: &str) -> String {
    format!("switchyard:node:{id}")
}

fn room_key(room: &str) -> String {
    format!("switchyard:room:{room}")
}

/// Extends the lease when it is still exactly ours; re-takes it when it expired
/// meanwhile (Redis restarted, or was away longer than a lease) and nobody else did.
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not v then
  if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

pub struct RedisStore {
    /// Opens the subscriber connections forwarded requests use.
    client: redis::Client,
    con: ConnectionManager,
    renew: Script,
    release: Script,
}

fn unavailable(e: redis::RedisError) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

impl RedisStore {
    /// `ca_pem`: the trust anchors for a `rediss://` URL (none: the system's).
    pub async fn connect(url: &str, ca_pem: Option<Vec<u8>>) -> Result<RedisStore, ClusterError> {
        let client = match ca_pem {
            None => redis::Client::open(url),
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
        }
        .map_err(unavailable)?;
        let con = client.get_connection_manager().await.map_err(unavailable)?;
        Ok(RedisStore {
            client,
            con,
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        })
    }

    fn lease_ms() -> u64 {
        LEASE.as_millis() as u64
    }

    pub async fn register(&self, me: &NodeInfo) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        let json = serde_json::to_string(me).unwrap_or_default();
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(node_key(&me.id))
            .arg(json)
            .arg("PX")
            .arg(Self::lease_ms())
            .ignore()
            .sadd(NODES, &me.id)
            .ignore()
            .query_async(&mut con)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn unregister(&self, id: &str) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        let _: () = redis::pipe()
            .del(node_key(id))
            .ignore()
            .srem(NODES, id)
            .ignore()
            .query_async(&mut con)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn node(&self, id: &str) -> Result<Option<NodeInfo>, ClusterError> {
        let mut con = self.con.clone();
        let json: Option<String> = con.get(node_key(id)).await.map_err(unavailable)?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// The node, if it refreshed its entry within the last two heartbeats (its key's
    /// remaining life says so, whatever the clocks of the machines): a node killed a
    /// moment ago still has an entry, but clients must not be sent to it.
    pub async fn fresh_node(&self, id: &str) -> Result<Option<NodeInfo>, ClusterError> {
        let mut con = self.con.clone();
        let (json, ttl_ms): (Option<String>, i64) = redis::pipe()
            .get(node_key(id))
            .pttl(node_key(id))
            .query_async(&mut con)
            .await
            .map_err(unavailable)?;
        let fresh = ttl_ms > (LEASE - 2 * HEARTBEAT).as_millis() as i64;
        Ok(json
            .filter(|_| fresh)
            .and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Every node whose entry is live, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let mut con = self.con.clone();
        let ids: Vec<String> = con.smembers(NODES).await.map_err(unavailable)?;
        let mut out = Vec::new();
        for id in ids {
            match self.node(&id).await? {
                Some(n) => out.push(n),
                None => {
                    let _: Result<i64, _> = con.srem(NODES, &id).await;
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The room's holder and fence, if anyone holds it.
    pub async fn lease_of(&self, room: &str) -> Result<Option<(String, u64)>, ClusterError> {
        let mut con = self.con.clone();
        let v: Option<String> = con.get(room_key(room)).await.map_err(unavailable)?;
        Ok(v.and_then(|v| {
            let (node, fence) = v.rsplit_once('|')?;
            Some((node.to_string(), fence.parse().ok()?))
        }))
    }

    /// Takes the room's lease if nobody holds it: its fence.
    pub async fn acquire(&self, room: &str, node: &str) -> Result<Option<u64>, ClusterError> {
        let mut con = self.con.clone();
        let fence: u64 = con.incr(FENCE, 1).await.map_err(unavailable)?;
        let set: Option<String> = redis::cmd("SET")
            .arg(room_key(room))
            .arg(format!("{node}|{fence}"))
            .arg("NX")
            .arg("PX")
            .arg(Self::lease_ms())
            .query_async(&mut con)
            .await
            .map_err(unavailable)?;
        Ok(set.map(|_| fence))
    }

    /// False when the lease is someone else's now.
    pub async fn renew(&self, room: &str, node: &str, fence: u64) -> Result<bool, ClusterError> {
        let mut con = self.con.clone();
        let n: i64 = self
            .renew
            .key(room_key(room))
            .arg(format!("{node}|{fence}"))
            .arg(Self::lease_ms())
            .invoke_async(&mut con)
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    pub async fn release(&self, room: &str, node: &str, fence: u64) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        let _: i64 = self
            .release
            .key(room_key(room))
            .arg(format!("{node}|{fence}"))
            .invoke_async(&mut con)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Sends `payload` on `channel`: how many subscribers got it.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<i64, ClusterError> {
        let mut con = self.con.clone();
        con.publish(channel, payload).await.map_err(unavailable)
    }

    /// A connection of its own listening on `channel` (a subscribed connection can do
    /// nothing else).
    pub async fn subscribe(&self, channel: &str) -> Result<redis::aio::PubSub, ClusterError> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub.subscribe(channel).await.map_err(unavailable)?;
        Ok(pubsub)
    }
}
