//! Wiring: configuration -> shared state -> the axum server, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

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
        let engine = Engine::start(&config.media, config.max_participants, metrics)?;
        let app = Arc::new(AppState { config, engine });
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
