//! The embedded TURN server (RFC 8656): for participants whose network lets no UDP
//! through to the media port, and not even TCP to it (ICE-TCP). Clients reach it over
//! UDP, TCP or TLS; it relays over UDP to this server's own media sockets only.
//!
//! The protocol (message parsing, authentication, nonces, allocations, permissions,
//! channels, lifetimes) is `turn-server-proto`, sans-I/O; this module is its I/O and its
//! policy: sockets and connections (service.rs, stream.rs), credentials that expire,
//! quotas and the peer allow-list (gate.rs), and counters (counters.rs).
//!
//! Credentials are the TURN REST pair every participant gets in `joined.ice_servers`
//! (auth/turn.rs): the session hands each pair to the service as it is issued, so only
//! credentials this server gave out authenticate.

mod counters;
mod gate;
mod service;
mod stream;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use turn_server_proto::server::TurnServer;
use turn_server_proto::types::TransportType;

pub use counters::{TurnCounters, TurnSnapshot};
use service::Credential;
pub use stream::{FIRST_FRAME_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS};

/// Allocations one participant may hold at once: a browser makes one per TURN URL
/// (three here) and more across an ICE restart while the old ones expire.
pub const ALLOCATIONS_PER_PARTICIPANT: usize = 8;
/// Issued credentials queued for the service; a full queue drops one (counted) and
/// that participant's relay fails, nothing else.
const USER_QUEUE: usize = 1024;
/// The realm in every TURN challenge.
const REALM: &str = "switchyard";

/// The operator's settings (config.rs fills them from flags, environment and file).
#[derive(Clone, Debug, Default)]
pub struct TurnConfig {
    /// Ports for TURN over UDP, TCP and TLS; none: that listener is off. 0: any (tests).
    pub udp_port: Option<u16>,
    pub tcp_port: Option<u16>,
    pub tls_port: Option<u16>,
    /// PEM certificate chain and private key for TURN over TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The host name clients are given in `turns:` URLs (it must match the
    /// certificate); the advertised or bound address when unset.
    pub host: Option<String>,
    /// Allocations the server holds at once, all participants together.
    pub max_allocations: usize,
    /// Peer addresses relaying may reach besides this server's own media sockets.
    pub allowed_peers: Vec<IpAddr>,
}

impl TurnConfig {
    pub fn enabled(&self) -> bool {
        self.udp_port.is_some() || self.tcp_port.is_some() || self.tls_port.is_some()
    }
}

/// How the rest of the server reaches the running TURN service.
pub struct TurnHandle {
    users: mpsc::Sender<Credential>,
    /// The URLs participants are given (turn:...?transport=udp, ...=tcp, turns:...).
    pub urls: Vec<String>,
    pub counters: Arc<TurnCounters>,
}

impl TurnHandle {
    /// Lets a credential the server just issued authenticate.
    pub fn authorize(&self, username: String, password: String) {
        self.tell(Credential::Issued { username, password });
    }

    /// The participant left: its credential authenticates nothing more (its
    /// allocations then expire at their next refresh).
    pub fn forget(&self, username: String) {
        self.tell(Credential::Revoked { username });
    }

    fn tell(&self, c: Credential) {
        if self.users.try_send(c).is_err() {
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// Binds the configured listeners and starts the service. `media` are this server's
/// media sockets as clients reach them: the only peers relaying may reach by default.
pub async fn start(
    config: &TurnConfig,
    bind_ip: IpAddr,
    advertise_ip: Option<IpAddr>,
    media: Vec<SocketAddr>,
) -> std::io::Result<TurnHandle> {
    let counters = Arc::new(TurnCounters::default());
    let (streams_tx, streams_rx) = mpsc::channel(4096);
    let open = Arc::new(AtomicUsize::new(0));
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    let host = config
        .host
        .clone()
        .unwrap_or_else(|| url_host(advertise_ip.unwrap_or(bind_ip)));

    let mut udp = None;
    if let Some(port) = config.udp_port {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(bind_ip, port))?;
        socket.set_nonblocking(true)?;
        service::widen_buffers(&socket);
        let socket = UdpSocket::from_std(socket)?;
        let addr = socket.local_addr()?;
        servers.push(TurnServer::new(TransportType::Udp, addr, REALM.into()));
        urls.push(format!("turn:{host}:{}?transport=udp", addr.port()));
        udp = Some(Arc::new(socket));
    }
    // TURN over TCP and over TLS: the same stream listener, TLS terminated or not.
    let tls = match config.tls_port {
        Some(port) => Some((port, tls_acceptor(config)?)),
        None => None,
    };
    let streams = [
        config.tcp_port.map(|port| (port, None, "turn")),
        tls.map(|(port, acceptor)| (port, Some(acceptor), "turns")),
    ];
    for (port, acceptor, scheme) in streams.into_iter().flatten() {
        let listener = TcpListener::bind(SocketAddr::new(bind_ip, port)).await?;
        let addr = stream::spawn_listener(
            listener,
            acceptor,
            streams_tx.clone(),
            open.clone(),
            counters.clone(),
        )?;
        servers.push(TurnServer::new(TransportType::Tcp, addr, REALM.into()));
        urls.push(format!("{scheme}:{host}:{}?transport=tcp", addr.port()));
    }
    drop(streams_tx);

    let mut peers = media.clone();
    if let Some(ip) = advertise_ip {
        peers.extend(media.iter().map(|m| SocketAddr::new(ip, m.port())));
    }
    let (users_tx, users_rx) = mpsc::channel(USER_QUEUE);
    let (relay_tx, relay_rx) = mpsc::channel(service::RELAY_QUEUE);
    let service = service::Service::new(
        servers,
        udp,
        bind_ip,
        relay_tx,
        gate::Ledger::new(ALLOCATIONS_PER_PARTICIPANT, config.max_allocations),
        gate::PeerPolicy::new(peers, config.allowed_peers.clone()),
        counters.clone(),
    );
    tokio::spawn(service.run(service::Inputs {
        users: users_rx,
        streams: streams_rx,
        relayed: relay_rx,
    }));
    tracing::info!(?urls, "embedded TURN server started");
    Ok(TurnHandle {
        users: users_tx,
        urls,
        counters,
    })
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn tls_acceptor(config: &TurnConfig) -> std::io::Result<TlsAcceptor> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Err(invalid(
            "TURN over TLS needs turn_tls_cert and turn_tls_key (PEM files)".into(),
        ));
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
