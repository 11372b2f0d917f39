//! Wiring: configuration -> shared state -> the axum server, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::KeySet;

use tokio::net::TcpListener;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::signal::listener::{self, HttpLimits};
use crate::signal::{router, AppState};

pub struct Server {
    listener: TcpListener,
    app: Arc<AppState>,
}

impl Server {
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let metrics = Arc::new(Metrics::default());
        let mut config = config;
        if config.webhook_secret.is_none() && !config.webhooks.is_empty() {
            if config.dev_mode() {
                // Dev mode: a receiver being developed can still check signatures.
                let secret = crate::secret::Secret::generate();
                tracing::warn!(
                    webhook_secret = secret.expose(),
                    "dev mode: webhooks are signed with this generated secret (set --webhook-secret to choose one)"
                );
                config.webhook_secret = Some(secret);
            } else {
                tracing::warn!(
                    "webhooks are sent unsigned: set --webhook-secret (never an API secret) to sign them"
                );
            }
        }
        let webhooks = crate::webhook::start(
            config.webhooks.clone(),
            config.webhook_secret.clone(),
            config.webhook_ca_file.clone(),
            metrics.clone(),
        )?;
        let engine = Engine::start(&config.media, config.max_participants, metrics, webhooks)?;
        let turn = if config.turn.enabled() {
            let turn = crate::turn::start(
                &config.turn,
                config.media.bind_ip(),
                config.media.advertise_ip(),
                engine.media_addrs.clone(),
            )
            .await?;
            // Our own TURN server checks the credentials it hands out: with no shared
            // secret configured, one for this process's life will do.
            if config.turn_secret.is_none() {
                config.turn_secret = Some(crate::secret::Secret::generate());
            }
            config.ice_servers.push(crate::config::IceServer {
                urls: turn.urls.clone(),
                username: None,
                credential: None,
            });
            let _ = engine.metrics.turn.set(turn.counters.clone());
            Some(turn)
        } else {
            None
        };
        let node_id = config.node_id.clone().unwrap_or_else(|| {
            format!("node-{}", &crate::secret::Secret::generate().expose()[..8])
        });
        let ws_url = config.node_url.clone().unwrap_or_else(|| {
            format!(
                "ws://{}/ws",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            )
        });
        let me = crate::cluster::NodeSettings {
            node_id,
            ws_url,
            max_participants: config.node_max_participants,
            metrics: engine.metrics.clone(),
        };
        let cluster = match &config.redis {
            None => Cluster::single(me),
            Some(url) => {
                let ca = match &config.redis_ca_file {
                    None => None,
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        std::io::Error::other(format!("--redis-ca-file {}: {e}", path.display()))
                    })?),
                };
                Cluster::with_redis(url.expose(), ca, me)
                    .await
                    .map_err(|e| std::io::Error::other(format!("--redis: {e}")))?
            }
        };
        let keys = KeySet::new(&config.api_keys);
        if keys.is_empty() {
            tracing::warn!(
                listen = %config.listen,
                "dev mode: no API keys configured, every room is open to anyone who reaches this server"
            );
        }
        let app = Arc::new(AppState {
            config,
            engine,
            keys,
            turn,
            cluster,
        });
        if app.cluster.clustered() {
            let _ = app.engine.metrics.node.set(app.cluster.node_id.clone());
            tracing::info!(node = %app.cluster.node_id, url = %app.cluster.ws_url, "joined the cluster");
            spawn_heartbeat(app.clone());
        }
        Ok(Server { listener, app })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let limits = HttpLimits {
            header_read_timeout: self.app.config.http_header_timeout,
            max_connections_per_ip: self.app.config.max_connections_per_ip,
        };
        let metrics = self.app.engine.metrics.clone();
        let app = self.app.clone();
        let router = router(self.app);
        if app.cluster.clustered() {
            crate::signal::forward::serve_forwarded(&app, router.clone());
        }
        // A cluster node that is told to stop drains first: its rooms move to other
        // nodes while it still answers (and redirects) joins.
        let stop = async move {
            shutdown.await;
            if app.cluster.clustered() {
                drain(&app).await;
            }
        };
        listener::serve(self.listener, router, limits, metrics, stop).await
    }
}

/// SIGTERM on a cluster node: no new rooms here (the registry says so at once), every
/// room's lease given back and its participants told to join again on the least
/// loaded node that takes rooms (`moved`), then a wait, at most `drain_timeout`, for
/// them to be gone. With no other node to go to, rooms end with the process and their
/// clients retry as after any outage.
async fn drain(app: &AppState) {
    use std::sync::atomic::Ordering::Relaxed;
    let started = std::time::Instant::now();
    let me = crate::signal::node_info(app).await;
    let rooms = app.engine.rooms().await;
    let target = match app.cluster.drain(&me).await {
        Ok(target) => target,
        Err(e) => {
            tracing::warn!("draining: the cluster store failed ({e}); rooms end here");
            None
        }
    };
    match &target {
        Some(node) => {
            for room in &rooms {
                let op = crate::engine::admin::AdminOp::Move {
                    node: node.id.clone(),
                    url: node.ws_url.clone(),
                };
                if app.engine.admin(&room.name, op).await.is_ok() {
                    app.engine
                        .metrics
                        .cluster_drained
                        .fetch_add(room.participants.len() as u64, Relaxed);
                }
            }
            tracing::info!(rooms = rooms.len(), to = %node.id, "draining: rooms moved");
        }
        None => tracing::warn!(
            rooms = rooms.len(),
            "draining: no other node takes rooms; they end with this process"
        ),
    }
    let deadline = started + app.config.drain_timeout;
    while app.engine.metrics.participants_now.load(Relaxed) > 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The moved sessions write their last message and close.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.cluster.leave().await;
    tracing::info!(took = ?started.elapsed(), "drained");
}

/// Once a second: this node's entry and leases in the cluster store, rooms nobody is in
/// given back, and rooms whose lease another node holds now closed here (their
/// participants reconnect and are moved there).
fn spawn_heartbeat(app: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::cluster::HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let me = crate::signal::node_info(&app).await;
            // Every room open here keeps its lease, an administrator's empty one too.
            let busy: Vec<String> = me.rooms.clone();
            match app.cluster.heartbeat(&me, &busy).await {
                Ok(lost) => {
                    if failing {
                        tracing::info!("the cluster store is back");
                        failing = false;
                    }
                    for room in lost {
                        tracing::warn!(%room, "another node holds this room's lease now: closing it here");
                        crate::metrics::Metrics::inc(&app.engine.metrics.cluster_leases_lost);
                        let _ = app
                            .engine
                            .admin(&room, crate::engine::admin::AdminOp::Close)
                            .await;
                    }
                }
                Err(e) => {
                    crate::metrics::Metrics::inc(&app.engine.metrics.cluster_store_errors);
                    if !failing {
                        tracing::warn!("cluster heartbeat failed (running rooms go on): {e}");
                        failing = true;
                    }
                }
            }
        }
    });
}
