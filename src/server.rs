//! Wiring: configuration -> shared state -> the axum server, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::KeySet;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::signal::{router, AppState};

pub struct Server {
    listener: TcpListener,
    app: Arc<AppState>,
}

impl Server {
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let metrics = Arc::new(Metrics::default());
        // Signed with the first API key's secret (unsigned in dev mode).
        let webhooks = crate::webhook::start(
            config.webhooks.clone(),
            config.api_keys.first().cloned(),
            metrics.clone(),
        );
        let engine = Engine::start(&config.media, config.max_participants, metrics, webhooks)?;
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
        });
        Ok(Server { listener, app })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, router(self.app))
            .with_graceful_shutdown(shutdown)
            .await
    }
}
