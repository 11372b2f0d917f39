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
        let cluster = match &config.redis {
            None => Cluster::single(node_id, ws_url),
            Some(url) => Cluster::with_redis(url.expose(), node_id, ws_url)
                .await
                .map_err(|e| std::io::Error::other(format!("--redis: {e}")))?,
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
        listener::serve(self.listener, router(self.app), limits, metrics, shutdown).await
    }
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
            let busy: Vec<String> = app
                .engine
                .rooms()
                .await
                .into_iter()
                .filter(|r| !r.participants.is_empty())
                .map(|r| r.name)
                .collect();
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
