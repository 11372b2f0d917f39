//! Wiring: configuration -> shared state -> the axum server, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::rtc::{Ids, PeerContext, PortAllocator, Rooms};
use crate::signal::{router, AppState};

pub struct Server {
    listener: TcpListener,
    app: Arc<AppState>,
}

impl Server {
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let metrics = Arc::new(Metrics::default());
        let ids = Arc::new(Ids::default());
        let peer = PeerContext {
            media: config.media.clone(),
            ports: Arc::new(PortAllocator::new(
                config.media.ports.min,
                config.media.ports.max,
            )),
            ids: ids.clone(),
            metrics: metrics.clone(),
        };
        let rooms = Rooms::new(config.max_participants, metrics);
        let app = Arc::new(AppState {
            config,
            rooms,
            ids,
            peer,
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
