//! Requests about a room hosted on another node, carried to that node over Redis
//! pub/sub (LiveKit's psrpc carries its RPCs the same way): the admin API and the room
//! lists answer the same on every node, and nodes never need to reach each other's
//! HTTP ports, only the Redis they already share.
//!
//! A request is the HTTP request itself (method, path, Authorization, body): the
//! hosting node runs it through its own router and checks the credentials again, so
//! forwarding grants nothing the caller did not have. Each request waits for one
//! answer on a channel of its own, at most `TIMEOUT`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterError, HEARTBEAT};

/// How long a forwarded request may take, the hosting node's work included.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// Forwarded requests a node works on at once; more are answered 503 at once.
const MAX_IN_FLIGHT: usize = 64;
const REPLY_PREFIX: &str = "switchyard:reply:";

/// An HTTP request for another node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ForwardedRequest {
    /// Filled in by `Cluster::forward`.
    #[serde(default)]
    pub reply_to: String,
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ForwardedResponse {
    pub status: u16,
    pub body: String,
}

impl ForwardedResponse {
    pub fn busy() -> ForwardedResponse {
        ForwardedResponse {
            status: 503,
            body: r#"{"code":"unavailable","message":"this node is busy with forwarded requests"}"#
                .into(),
        }
    }
}

fn requests_channel(node: &str) -> String {
    format!("switchyard:rpc:{node}")
}

impl Cluster {
    /// Runs `req` on `node` and returns its answer.
    pub async fn forward(
        &self,
        node: &str,
        mut req: ForwardedRequest,
    ) -> Result<ForwardedResponse, ClusterError> {
        let Some(store) = &self.store else {
            return Err(ClusterError::Unavailable("no cluster is configured".into()));
        };
        req.reply_to = format!(
            "{REPLY_PREFIX}{}:{:016x}",
            self.node_id,
            rand::random::<u64>()
        );
        // Listen before asking, so the answer cannot come first.
        let mut replies = store.subscribe(&req.reply_to).await?.into_on_message();
        let json = serde_json::to_string(&req).unwrap_or_default();
        if store.publish(&requests_channel(node), &json).await? == 0 {
            // Nobody subscribed: the node is gone, or between two Redis connections.
            return Err(ClusterError::NoAnswer(node.to_string()));
        }
        match tokio::time::timeout(TIMEOUT, replies.next()).await {
            Ok(Some(msg)) => msg
                .get_payload::<String>()
                .ok()
                .and_then(|p| serde_json::from_str(&p).ok())
                .ok_or_else(|| ClusterError::NoAnswer(node.to_string())),
            _ => Err(ClusterError::NoAnswer(node.to_string())),
        }
    }

    /// Answers the requests forwarded to this node with `handle` for as long as the
    /// process lives, subscribing again (each heartbeat) whenever Redis was lost.
    pub async fn serve_forwarded<F, Fut>(self: Arc<Self>, handle: F)
    where
        F: Fn(ForwardedRequest) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ForwardedResponse> + Send,
    {
        let Some(store) = &self.store else { return };
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        loop {
            if let Ok(pubsub) = store.subscribe(&requests_channel(&self.node_id)).await {
                let mut requests = pubsub.into_on_message();
                while let Some(msg) = requests.next().await {
                    let Some(req) = msg
                        .get_payload::<String>()
                        .ok()
                        .and_then(|p| serde_json::from_str::<ForwardedRequest>(&p).ok())
                        .filter(|r| r.reply_to.starts_with(REPLY_PREFIX))
                    else {
                        continue;
                    };
                    let permit = in_flight.clone().try_acquire_owned().ok();
                    let (handle, me) = (handle.clone(), self.clone());
                    tokio::spawn(async move {
                        let reply_to = req.reply_to.clone();
                        let resp = match permit {
                            Some(_permit) => handle(req).await,
                            None => ForwardedResponse::busy(),
                        };
                        if let (Some(store), Ok(json)) = (&me.store, serde_json::to_string(&resp)) {
                            let _ = store.publish(&reply_to, &json).await;
                        }
                    });
                }
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    }
}
