//! Configuration: embedded defaults, then a TOML file, then environment variables and
//! flags (clap reads both; flags win). Defaults serve one machine on loopback only, the
//! way `livekit-server --dev` does, so nothing is exposed until an operator says so.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

#[derive(Parser, Debug, Default)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard: a selective forwarding unit for meetings"
)]
pub struct Cli {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "SWITCHYARD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// HTTP/WebSocket listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "SWITCHYARD_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// The IP the media UDP socket binds (one address) [default: 127.0.0.1].
    #[arg(long, env = "SWITCHYARD_MEDIA_IPS", value_delimiter = ',')]
    pub media_ips: Option<Vec<IpAddr>>,
    /// The IP advertised in ICE candidates instead of the bound one (1:1 NAT).
    #[arg(long, env = "SWITCHYARD_ADVERTISE_IPS", value_delimiter = ',')]
    pub advertise_ips: Option<Vec<IpAddr>>,
    /// The one UDP port all participants' media uses (shard N uses port + N); 0 = any
    /// [default: 7882].
    #[arg(long, env = "SWITCHYARD_UDP_PORT")]
    pub udp_port: Option<u16>,
    /// ICE-TCP: also listen for TCP on each shard's media port number, for browsers
    /// whose network drops UDP [default: false].
    ///
    /// Off by default: Chromium, offered both, was seen to settle on the TCP pair now
    /// and then although UDP worked (head-of-line blocking for no reason).
    #[arg(long, env = "SWITCHYARD_ICE_TCP")]
    pub ice_tcp: Option<bool>,
    /// Media shards (threads, each with its own UDP socket) [default: 1].
    #[arg(long, env = "SWITCHYARD_SHARDS")]
    pub shards: Option<usize>,
    /// SRTP profiles: "gcm" (AES-GCM only, the fast one every current browser has) or
    /// "compatible" (also AES_CM_128_HMAC_SHA1_80, which libwebrtc then picks) [default: gcm].
    #[arg(long, env = "SWITCHYARD_SRTP")]
    pub srtp: Option<SrtpPolicy>,
    /// Downlink bandwidth estimation (transport-cc on every packet sent, layers chosen
    /// to fit): "true", or "false" for a LAN where every subscriber can take
    /// everything [default: true].
    #[arg(long, env = "SWITCHYARD_BWE")]
    pub bwe: Option<bool>,
    /// ICE server URLs handed to clients (stun:... or turn:...), comma separated.
    #[arg(long, env = "SWITCHYARD_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Option<Vec<String>>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`): each
    /// participant gets its own expiring TURN username and password derived from it.
    #[arg(long, env = "SWITCHYARD_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<Secret>,
    /// How long a participant's TURN credentials are valid [default: 6h].
    #[arg(long, env = "SWITCHYARD_TURN_CREDENTIAL_TTL", value_parser = parse_ttl)]
    pub turn_credential_ttl: Option<std::time::Duration>,
    /// Embedded TURN server over UDP on this port (3478 is the standard one; 0 = any);
    /// off unless set. Participants get their own expiring credentials for it.
    #[arg(long, env = "SWITCHYARD_TURN_UDP_PORT")]
    pub turn_udp_port: Option<u16>,
    /// Embedded TURN server over TCP on this port; off unless set.
    #[arg(long, env = "SWITCHYARD_TURN_TCP_PORT")]
    pub turn_tcp_port: Option<u16>,
    /// Embedded TURN server over TLS on this port (443 gets through most firewalls);
    /// needs --turn-tls-cert and --turn-tls-key. Off unless set.
    #[arg(long, env = "SWITCHYARD_TURN_TLS_PORT")]
    pub turn_tls_port: Option<u16>,
    /// PEM certificate chain for TURN over TLS.
    #[arg(long, env = "SWITCHYARD_TURN_TLS_CERT")]
    pub turn_tls_cert: Option<PathBuf>,
    /// PEM private key for TURN over TLS.
    #[arg(long, env = "SWITCHYARD_TURN_TLS_KEY")]
    pub turn_tls_key: Option<PathBuf>,
    /// The host name put in the embedded TURN server's URLs (the certificate's name
    /// for TLS) [default: the advertised, else the bound media address].
    #[arg(long, env = "SWITCHYARD_TURN_HOST")]
    pub turn_host: Option<String>,
    /// Most TURN allocations held at once, all participants together [default: 1000].
    #[arg(long, env = "SWITCHYARD_TURN_MAX_ALLOCATIONS")]
    pub turn_max_allocations: Option<usize>,
    /// IP addresses the embedded TURN server may relay to besides this server's own
    /// media sockets, comma separated [default: none].
    #[arg(long, env = "SWITCHYARD_TURN_ALLOWED_PEERS", value_delimiter = ',')]
    pub turn_allowed_peers: Option<Vec<IpAddr>>,
    /// Redis that coordinates several nodes as one service (redis://[:password@]host:port,
    /// rediss:// for TLS); none: this node alone.
    #[arg(long, env = "SWITCHYARD_REDIS", hide_env_values = true)]
    pub redis: Option<Secret>,
    /// The CA (PEM) a rediss:// Redis's certificate is checked against, instead of the
    /// system's trust store.
    #[arg(long, env = "SWITCHYARD_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// This node's name in the cluster [default: node- and random characters].
    #[arg(long, env = "SWITCHYARD_NODE_ID")]
    pub node_id: Option<String>,
    /// The WebSocket URL clients reach this node's signaling at, handed to clients a
    /// room is moved to [default: ws://LISTEN/ws].
    #[arg(long, env = "SWITCHYARD_NODE_URL")]
    pub node_url: Option<String>,
    /// Most participants on this node, all rooms together; a cluster places no new room
    /// on a node at its limit, and a join beyond it is refused (`server_full`); 0 = no
    /// limit [default: 0].
    #[arg(long, env = "SWITCHYARD_NODE_MAX_PARTICIPANTS")]
    pub node_max_participants: Option<u64>,
    /// On SIGTERM, how long a cluster node waits for its rooms' participants to move to
    /// other nodes before it stops, e.g. "10s" [default: 10s].
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", value_parser = parse_ttl)]
    pub drain_timeout: Option<std::time::Duration>,
    /// Most participants in one room.
    #[arg(long, env = "SWITCHYARD_MAX_PARTICIPANTS")]
    pub max_participants: Option<usize>,
    /// API keys that sign access tokens, as KEY:SECRET pairs, comma separated (secrets
    /// of at least 32 bytes). With none, the server runs in dev mode: open rooms.
    #[arg(
        long,
        env = "SWITCHYARD_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true,
        global = true
    )]
    pub api_keys: Option<Vec<Secret>>,
    /// A bearer token that may read /metrics and nothing else (for Prometheus; at
    /// least 16 bytes). Without it /metrics takes the admin credentials.
    #[arg(long, env = "SWITCHYARD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,
    /// Webhook receivers (https://host/path, or http:// to a loopback receiver), comma
    /// separated.
    #[arg(long, env = "SWITCHYARD_WEBHOOKS", value_delimiter = ',')]
    pub webhooks: Option<Vec<String>>,
    /// The key webhook bodies are signed with (HMAC-SHA256, at least 32 bytes); never
    /// an API secret. In dev mode one is generated and logged when none is given.
    #[arg(long, env = "SWITCHYARD_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,
    /// Extra trust anchors (PEM) for https webhook receivers, besides the usual public
    /// roots: a private CA.
    #[arg(long, env = "SWITCHYARD_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Allow dev mode (open rooms, no tokens) on a listen address beyond loopback.
    #[arg(long, env = "SWITCHYARD_DEV")]
    pub dev: bool,
    /// How long a new WebSocket may take to send `join` before it is closed (code
    /// 4008), e.g. "5s" [default: 5s].
    #[arg(long, env = "SWITCHYARD_JOIN_TIMEOUT", value_parser = parse_ttl)]
    pub join_timeout: Option<std::time::Duration>,
    /// How long one WebSocket write may wait for a client that stopped reading before
    /// the session is cut off [default: 5s].
    #[arg(long, env = "SWITCHYARD_WS_WRITE_TIMEOUT", value_parser = parse_ttl)]
    pub ws_write_timeout: Option<std::time::Duration>,
    /// How long after joining a participant's media connection may take to connect
    /// before the participant is removed [default: 20s].
    #[arg(long, env = "SWITCHYARD_ICE_CONNECT_TIMEOUT", value_parser = parse_ttl)]
    pub ice_connect_timeout: Option<std::time::Duration>,
    /// How long a client may take to send an HTTP request's headers (a connection
    /// that stalls mid-request, or sends nothing, is closed) [default: 10s].
    #[arg(long, env = "SWITCHYARD_HTTP_HEADER_TIMEOUT", value_parser = parse_ttl)]
    pub http_header_timeout: Option<std::time::Duration>,
    /// Most HTTP/WebSocket connections open at once from one IP address; 0 = no cap
    /// [default: 256].
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// A joined WebSocket that answers no ping and sends nothing for this long is
    /// closed (code 4009) and its participant removed [default: 10s].
    #[arg(long, env = "SWITCHYARD_LIVENESS_TIMEOUT", value_parser = parse_ttl)]
    pub liveness_timeout: Option<std::time::Duration>,
    #[command(subcommand)]
    pub command: Option<CliCommand>,
}

#[derive(clap::Subcommand, Debug)]
pub enum CliCommand {
    /// Print an access token and a join link for one participant of one room.
    Token(TokenArgs),
}

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The room it joins.
    #[arg(long)]
    pub room: String,
    /// The participant's identity.
    #[arg(long)]
    pub identity: String,
    /// The display name [default: the identity].
    #[arg(long)]
    pub name: Option<String>,
    /// How long it is valid: a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: std::time::Duration,
    /// What it may publish: camera, microphone, screen (comma separated) [default: all].
    #[arg(long, value_delimiter = ',', conflicts_with = "no_publish")]
    pub can_publish: Option<Vec<crate::auth::Source>>,
    /// Subscribe only: publish nothing.
    #[arg(long)]
    pub no_publish: bool,
    /// Publish only: receive nothing.
    #[arg(long)]
    pub no_subscribe: bool,
    /// May use the room admin API on this room.
    #[arg(long)]
    pub admin: bool,
    /// The API key to sign with [default: the first configured].
    #[arg(long)]
    pub key: Option<String>,
}

/// "90s", "30m", "1h", "7d".
pub fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let unit = text.chars().last().unwrap_or('s');
    let digits = &text[..text.len() - unit.len_utf8().min(text.len())];
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: a number followed by s, m, h or d"))?;
    let secs = match unit {
        's' => n,
        'm' => n.saturating_mul(60),
        'h' => n.saturating_mul(3600),
        'd' => n.saturating_mul(86_400),
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    if secs == 0 || secs > 366 * 86_400 {
        return Err(format!("{text:?}: between 1 s and a year"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Which SRTP protection profiles the server accepts (see engine/build.rs for why the
/// list, not an order, decides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    #[default]
    Gcm,
    Compatible,
}

/// An ICE server as the browser's `RTCPeerConnection` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Secret>,
}

/// The configuration file. Every field is optional; see docs/configuration.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub media_ips: Option<Vec<IpAddr>>,
    pub advertise_ips: Option<Vec<IpAddr>>,
    pub udp_port: Option<u16>,
    pub shards: Option<usize>,
    pub ice_tcp: Option<bool>,
    pub srtp: Option<SrtpPolicy>,
    pub bwe: Option<bool>,
    pub ice_servers: Option<Vec<IceServer>>,
    pub turn_secret: Option<Secret>,
    /// Seconds.
    pub turn_credential_ttl_secs: Option<u64>,
    pub turn_udp_port: Option<u16>,
    pub turn_tcp_port: Option<u16>,
    pub turn_tls_port: Option<u16>,
    pub turn_tls_cert: Option<PathBuf>,
    pub turn_tls_key: Option<PathBuf>,
    pub turn_host: Option<String>,
    pub turn_max_allocations: Option<usize>,
    pub turn_allowed_peers: Option<Vec<IpAddr>>,
    pub redis: Option<Secret>,
    pub redis_ca_file: Option<PathBuf>,
    pub node_id: Option<String>,
    pub node_url: Option<String>,
    pub node_max_participants: Option<u64>,
    /// Seconds.
    pub drain_timeout_secs: Option<u64>,
    pub max_participants: Option<usize>,
    /// API key -> secret.
    pub keys: Option<BTreeMap<String, Secret>>,
    pub metrics_token: Option<Secret>,
    pub webhooks: Option<Vec<String>>,
    pub webhook_secret: Option<Secret>,
    pub webhook_ca_file: Option<PathBuf>,
    pub dev: Option<bool>,
    /// Seconds.
    pub join_timeout_secs: Option<u64>,
    /// Seconds.
    pub ws_write_timeout_secs: Option<u64>,
    /// Seconds.
    pub ice_connect_timeout_secs: Option<u64>,
    /// Seconds.
    pub http_header_timeout_secs: Option<u64>,
    pub max_connections_per_ip: Option<usize>,
    /// Seconds.
    pub liveness_timeout_secs: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct MediaConfig {
    pub bind_ips: Vec<IpAddr>,
    pub advertise_ips: Vec<IpAddr>,
    /// Shard N binds `udp_port + N`; 0 lets the system pick (tests).
    pub udp_port: u16,
    pub shards: usize,
    pub srtp: SrtpPolicy,
    pub bwe: bool,
    /// A participant whose media connection has not connected this long after joining
    /// is removed (it would hold its slot for as long as its socket lives).
    pub ice_connect_timeout: std::time::Duration,
    /// A passive TCP candidate on each shard's port number (RFC 6544).
    pub ice_tcp: bool,
}

impl MediaConfig {
    /// The one address the media sockets bind (validated to exist).
    pub fn bind_ip(&self) -> IpAddr {
        self.bind_ips
            .first()
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    pub fn advertise_ip(&self) -> Option<IpAddr> {
        self.advertise_ips.first().copied()
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub media: MediaConfig,
    pub ice_servers: Vec<IceServer>,
    /// Derives each participant's TURN credentials (auth/turn.rs).
    pub turn_secret: Option<Secret>,
    pub turn_credential_ttl: std::time::Duration,
    /// The embedded TURN server (turn/); off unless a port is set.
    pub turn: crate::turn::TurnConfig,
    /// The cluster's Redis (its URL may hold a password); none: a single node.
    pub redis: Option<Secret>,
    /// Trust anchors for a rediss:// Redis; none: the system's.
    pub redis_ca_file: Option<PathBuf>,
    pub node_id: Option<String>,
    pub node_url: Option<String>,
    /// Participants this node takes, all rooms together; 0: no limit.
    pub node_max_participants: u64,
    /// SIGTERM: how long a cluster node gives its rooms to move before it stops.
    pub drain_timeout: std::time::Duration,
    pub max_participants: usize,
    /// (API key, secret) pairs that sign access tokens; none: dev mode.
    pub api_keys: Vec<(String, Secret)>,
    /// Reads /metrics, nothing else.
    pub metrics_token: Option<Secret>,
    /// Dev mode allowed beyond loopback.
    pub dev: bool,
    /// Where webhooks go (https:// URLs, http:// for loopback receivers).
    pub webhooks: Vec<String>,
    /// Signs webhook bodies; `None`: unsigned.
    pub webhook_secret: Option<Secret>,
    /// PEM trust anchors for https receivers besides the public roots.
    pub webhook_ca_file: Option<PathBuf>,
    /// A WebSocket that has not sent `join` after this long is closed.
    pub join_timeout: std::time::Duration,
    /// A WebSocket write that has not completed after this long ends the session.
    pub ws_write_timeout: std::time::Duration,
    /// A connection that has not sent a request's headers after this long is closed.
    pub http_header_timeout: std::time::Duration,
    /// HTTP connections (WebSockets included) one IP may hold open; 0 = no cap.
    pub max_connections_per_ip: usize,
    /// A WebSocket silent this long (no message, no pong) is closed.
    pub liveness_timeout: std::time::Duration,
}

/// The shortest metrics token accepted: it is compared in constant time, but a short one
/// could be guessed.
const MIN_METRICS_TOKEN_BYTES: usize = 16;

/// What a signaling frame may hold besides the m-sections of a full room: the session
/// part of an SDP, the client's own three sections, JSON around it.
const FRAME_BASE_BYTES: usize = 64 * 1024;
/// Tracks one participant may publish that a full room's SDP is sized for (camera,
/// microphone, screen).
const TRACKS_PER_PARTICIPANT: usize = 3;
/// One received m-section in a browser's SDP: ~650 bytes from Chromium (codecs,
/// extensions, msid, ssrc lines), with room to spare for Firefox's longer ones.
const MSECTION_BYTES: usize = 1024;

impl Config {
    /// The largest signaling frame accepted. An answer carries an m-section per track
    /// the participant receives (spares included; see engine/legs.rs), so the limit
    /// grows with the room size: 64 KiB + 3 KiB per participant, 214 KiB for 50.
    pub fn max_message_bytes(&self) -> usize {
        FRAME_BASE_BYTES + self.max_participants * TRACKS_PER_PARTICIPANT * MSECTION_BYTES
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            media: MediaConfig {
                bind_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                advertise_ips: vec![],
                udp_port: 7882,
                shards: 1,
                srtp: SrtpPolicy::Gcm,
                bwe: true,
                ice_connect_timeout: std::time::Duration::from_secs(20),
                ice_tcp: false,
            },
            ice_servers: vec![],
            turn_secret: None,
            turn_credential_ttl: std::time::Duration::from_secs(6 * 3600),
            turn: crate::turn::TurnConfig {
                max_allocations: 1000,
                ..Default::default()
            },
            redis: None,
            redis_ca_file: None,
            node_id: None,
            node_url: None,
            node_max_participants: 0,
            drain_timeout: std::time::Duration::from_secs(10),
            max_participants: 50,
            api_keys: vec![],
            metrics_token: None,
            dev: false,
            webhooks: vec![],
            webhook_secret: None,
            webhook_ca_file: None,
            join_timeout: std::time::Duration::from_secs(5),
            ws_write_timeout: std::time::Duration::from_secs(5),
            http_header_timeout: std::time::Duration::from_secs(10),
            max_connections_per_ip: 256,
            liveness_timeout: std::time::Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Defaults <- file <- environment and flags.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let mut c = Config::default();
        c.apply_file(file);
        c.apply_cli(cli);
        c.validate()?;
        Ok(c)
    }

    fn apply_file(&mut self, f: FileConfig) {
        if let Some(v) = f.listen {
            self.listen = v;
        }
        if let Some(v) = f.media_ips {
            self.media.bind_ips = v;
        }
        if let Some(v) = f.advertise_ips {
            self.media.advertise_ips = v;
        }
        if let Some(v) = f.udp_port {
            self.media.udp_port = v;
        }
        if let Some(v) = f.shards {
            self.media.shards = v;
        }
        if let Some(v) = f.ice_tcp {
            self.media.ice_tcp = v;
        }
        if let Some(v) = f.srtp {
            self.media.srtp = v;
        }
        if let Some(v) = f.bwe {
            self.media.bwe = v;
        }
        if let Some(v) = f.ice_servers {
            self.ice_servers = v;
        }
        if let Some(v) = f.turn_secret {
            self.turn_secret = Some(v);
        }
        if let Some(v) = f.turn_credential_ttl_secs {
            self.turn_credential_ttl = std::time::Duration::from_secs(v);
        }
        let t = &mut self.turn;
        t.udp_port = f.turn_udp_port.or(t.udp_port);
        t.tcp_port = f.turn_tcp_port.or(t.tcp_port);
        t.tls_port = f.turn_tls_port.or(t.tls_port);
        t.tls_cert = f.turn_tls_cert.or(t.tls_cert.take());
        t.tls_key = f.turn_tls_key.or(t.tls_key.take());
        t.host = f.turn_host.or(t.host.take());
        t.max_allocations = f.turn_max_allocations.unwrap_or(t.max_allocations);
        t.allowed_peers = f
            .turn_allowed_peers
            .unwrap_or(std::mem::take(&mut t.allowed_peers));
        self.redis = f.redis.or(self.redis.take());
        self.redis_ca_file = f.redis_ca_file.or(self.redis_ca_file.take());
        self.node_id = f.node_id.or(self.node_id.take());
        self.node_url = f.node_url.or(self.node_url.take());
        if let Some(v) = f.node_max_participants {
            self.node_max_participants = v;
        }
        if let Some(v) = f.drain_timeout_secs {
            self.drain_timeout = std::time::Duration::from_secs(v);
        }
        if let Some(v) = f.max_participants {
            self.max_participants = v;
        }
        if let Some(keys) = f.keys {
            self.api_keys = keys.into_iter().collect();
        }
        if let Some(v) = f.dev {
            self.dev = v;
        }
        if let Some(v) = f.webhooks {
            self.webhooks = v;
        }
        if let Some(v) = f.metrics_token {
            self.metrics_token = Some(v);
        }
        if let Some(v) = f.webhook_secret {
            self.webhook_secret = Some(v);
        }
        if let Some(v) = f.webhook_ca_file {
            self.webhook_ca_file = Some(v);
        }
        if let Some(v) = f.http_header_timeout_secs {
            self.http_header_timeout = std::time::Duration::from_secs(v);
        }
        if let Some(v) = f.max_connections_per_ip {
            self.max_connections_per_ip = v;
        }
        if let Some(v) = f.liveness_timeout_secs {
            self.liveness_timeout = std::time::Duration::from_secs(v);
        }
        if let Some(v) = f.join_timeout_secs {
            self.join_timeout = std::time::Duration::from_secs(v);
        }
        if let Some(v) = f.ws_write_timeout_secs {
            self.ws_write_timeout = std::time::Duration::from_secs(v);
        }
        if let Some(v) = f.ice_connect_timeout_secs {
            self.media.ice_connect_timeout = std::time::Duration::from_secs(v);
        }
    }

    fn apply_cli(&mut self, cli: &Cli) {
        if let Some(v) = cli.listen {
            self.listen = v;
        }
        if let Some(v) = &cli.media_ips {
            self.media.bind_ips = v.clone();
        }
        if let Some(v) = &cli.advertise_ips {
            self.media.advertise_ips = v.clone();
        }
        if let Some(v) = cli.udp_port {
            self.media.udp_port = v;
        }
        if let Some(v) = cli.shards {
            self.media.shards = v;
        }
        if let Some(v) = cli.ice_tcp {
            self.media.ice_tcp = v;
        }
        if let Some(v) = cli.srtp {
            self.media.srtp = v;
        }
        if let Some(v) = cli.bwe {
            self.media.bwe = v;
        }
        if let Some(v) = &cli.ice_servers {
            self.ice_servers = v
                .iter()
                .filter(|u| !u.is_empty())
                .map(|u| IceServer {
                    urls: vec![u.clone()],
                    username: None,
                    credential: None,
                })
                .collect();
        }
        if let Some(v) = &cli.turn_secret {
            self.turn_secret = Some(v.clone());
        }
        if let Some(v) = cli.turn_credential_ttl {
            self.turn_credential_ttl = v;
        }
        let t = &mut self.turn;
        t.udp_port = cli.turn_udp_port.or(t.udp_port);
        t.tcp_port = cli.turn_tcp_port.or(t.tcp_port);
        t.tls_port = cli.turn_tls_port.or(t.tls_port);
        t.tls_cert = cli.turn_tls_cert.clone().or(t.tls_cert.take());
        t.tls_key = cli.turn_tls_key.clone().or(t.tls_key.take());
        t.host = cli.turn_host.clone().or(t.host.take());
        t.max_allocations = cli.turn_max_allocations.unwrap_or(t.max_allocations);
        if let Some(v) = &cli.turn_allowed_peers {
            t.allowed_peers = v.clone();
        }
        self.redis = cli.redis.clone().or(self.redis.take());
        self.redis_ca_file = cli.redis_ca_file.clone().or(self.redis_ca_file.take());
        self.node_id = cli.node_id.clone().or(self.node_id.take());
        self.node_url = cli.node_url.clone().or(self.node_url.take());
        if let Some(v) = cli.node_max_participants {
            self.node_max_participants = v;
        }
        if let Some(v) = cli.drain_timeout {
            self.drain_timeout = v;
        }
        if let Some(v) = cli.max_participants {
            self.max_participants = v;
        }
        if let Some(pairs) = &cli.api_keys {
            self.api_keys = pairs
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| match p.expose().split_once(':') {
                    Some((k, s)) => (k.to_string(), Secret::from(s)),
                    None => (p.expose().to_string(), Secret::default()),
                })
                .collect();
        }
        if cli.dev {
            self.dev = true;
        }
        if let Some(v) = &cli.webhooks {
            self.webhooks = v.iter().filter(|u| !u.is_empty()).cloned().collect();
        }
        if let Some(v) = &cli.metrics_token {
            self.metrics_token = Some(v.clone());
        }
        if let Some(v) = &cli.webhook_secret {
            self.webhook_secret = Some(v.clone());
        }
        if let Some(v) = &cli.webhook_ca_file {
            self.webhook_ca_file = Some(v.clone());
        }
        if let Some(v) = cli.http_header_timeout {
            self.http_header_timeout = v;
        }
        if let Some(v) = cli.max_connections_per_ip {
            self.max_connections_per_ip = v;
        }
        if let Some(v) = cli.liveness_timeout {
            self.liveness_timeout = v;
        }
        if let Some(v) = cli.join_timeout {
            self.join_timeout = v;
        }
        if let Some(v) = cli.ws_write_timeout {
            self.ws_write_timeout = v;
        }
        if let Some(v) = cli.ice_connect_timeout {
            self.media.ice_connect_timeout = v;
        }
    }

    /// Whether the server runs without tokens (open rooms).
    pub fn dev_mode(&self) -> bool {
        self.api_keys.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.media.bind_ips.len() != 1 {
            // One socket per shard: every participant of a shard meets on one address.
            return Err(ConfigError::Invalid(
                "media_ips must name exactly one address (use advertise_ips for 1:1 NAT)".into(),
            ));
        }
        if self.media.advertise_ips.len() > 1 {
            return Err(ConfigError::Invalid(
                "advertise_ips takes at most one address".into(),
            ));
        }
        if self.media.bind_ip().is_unspecified() && self.media.advertise_ip().is_none() {
            // A wildcard is not an address a browser can reach: say which one it is.
            return Err(ConfigError::Invalid(
                "media_ips 0.0.0.0 or :: needs advertise_ips (the address clients reach)".into(),
            ));
        }
        let last_port = self.media.udp_port as usize + self.media.shards.saturating_sub(1);
        if self.media.shards == 0 || self.media.shards > 256 || last_port > u16::MAX as usize {
            return Err(ConfigError::Invalid(
                "shards must be 1-256 and udp_port + shards - 1 a valid port".into(),
            ));
        }
        for (key, secret) in &self.api_keys {
            if key.is_empty() || key.contains(':') || key.contains(',') {
                return Err(ConfigError::Invalid(format!(
                    "API key {key:?}: key names are non-empty, without ':' or ','"
                )));
            }
            if secret.len() < crate::auth::MIN_SECRET_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "API key {key:?}: its secret must be at least {} bytes (KEY:SECRET)",
                    crate::auth::MIN_SECRET_BYTES
                )));
            }
        }
        if let Some(bad) = self.webhooks.iter().find(|u| !crate::webhook::valid_url(u)) {
            return Err(ConfigError::Invalid(format!(
                "webhook URL {bad:?}: https://host[:port]/path, or http:// to a loopback receiver only \
                 (an http body and its signature cross the network in the clear)"
            )));
        }
        if let Some(t) = &self.metrics_token {
            if t.len() < MIN_METRICS_TOKEN_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "metrics_token must be at least {MIN_METRICS_TOKEN_BYTES} bytes"
                )));
            }
        }
        if let Some(s) = &self.webhook_secret {
            if s.len() < crate::auth::MIN_SECRET_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "webhook_secret must be at least {} bytes",
                    crate::auth::MIN_SECRET_BYTES
                )));
            }
            if self.api_keys.iter().any(|(_, k)| k == s) {
                // The point of a separate secret: a receiver holding it cannot mint tokens.
                return Err(ConfigError::Invalid(
                    "webhook_secret must not be an API secret (a webhook receiver could sign tokens)".into(),
                ));
            }
        }
        if let Some(t) = &self.turn_secret {
            if t.len() < MIN_METRICS_TOKEN_BYTES || self.api_keys.iter().any(|(_, k)| k == t) {
                return Err(ConfigError::Invalid(format!(
                    "turn_secret must be at least {MIN_METRICS_TOKEN_BYTES} bytes and not an API secret"
                )));
            }
        }
        if let Some(t) = &self.metrics_token {
            if self.api_keys.iter().any(|(_, k)| k == t) {
                return Err(ConfigError::Invalid(
                    "metrics_token must not be an API secret (a Prometheus config could sign tokens)".into(),
                ));
            }
        }
        if self.http_header_timeout.is_zero() || self.liveness_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "http_header_timeout and liveness_timeout must be above zero".into(),
            ));
        }
        if self.dev_mode() && !self.listen.ip().is_loopback() && !self.dev {
            return Err(ConfigError::Invalid(format!(
                "listening on {} without API keys would let anyone who reaches it join any \
                 room: configure keys (SWITCHYARD_API_KEYS=KEY:SECRET or [keys] in the file, \
                 see docs/configuration.md) or pass --dev",
                self.listen
            )));
        }
        if self.turn.tls_port.is_some()
            && (self.turn.tls_cert.is_none() || self.turn.tls_key.is_none())
        {
            return Err(ConfigError::Invalid(
                "turn_tls_port needs turn_tls_cert and turn_tls_key (PEM files)".into(),
            ));
        }
        if self.turn.enabled() && self.turn.max_allocations == 0 {
            return Err(ConfigError::Invalid(
                "turn_max_allocations must be at least 1".into(),
            ));
        }
        if self.max_participants == 0 {
            return Err(ConfigError::Invalid(
                "max_participants must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_only() {
        let c = Config::load(&Cli::default()).unwrap();
        assert!(c.listen.ip().is_loopback());
        assert!(c.media.bind_ips.iter().all(IpAddr::is_loopback));
        assert!(c.ice_servers.is_empty());
    }

    #[test]
    fn file_then_flags() {
        let file: FileConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            udp_port = 40000
            srtp = "compatible"
            max_participants = 8
            [[ice_servers]]
            urls = ["turn:turn.example.org:3478"]
            username = "u"
            credential = "p"
            "#,
        )
        .unwrap();
        let mut c = Config::default();
        c.apply_file(file);
        assert_eq!(c.media.udp_port, 40_000);
        assert_eq!(c.media.srtp, SrtpPolicy::Compatible);
        assert_eq!(c.ice_servers[0].username.as_deref(), Some("u"));
        let cli = Cli {
            max_participants: Some(3),
            ..Cli::default()
        };
        c.apply_cli(&cli);
        assert_eq!(c.max_participants, 3);
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(toml::from_str::<FileConfig>("nonsense = 1").is_err());
        assert!(toml::from_str::<FileConfig>("srtp = \"none\"").is_err());
        let two = Cli {
            media_ips: Some(vec![
                "127.0.0.1".parse().unwrap(),
                "127.0.0.2".parse().unwrap(),
            ]),
            ..Cli::default()
        };
        assert!(Config::load(&two).is_err());
        let cli = Cli {
            media_ips: Some(vec!["0.0.0.0".parse().unwrap()]),
            ..Cli::default()
        };
        assert!(Config::load(&cli).is_err());
    }

    #[test]
    fn beyond_loopback_needs_keys_or_dev() {
        let open = Cli {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..Cli::default()
        };
        let err = Config::load(&open).unwrap_err().to_string();
        assert!(err.contains("--dev"), "{err}");
        let dev = Cli { dev: true, ..open };
        assert!(Config::load(&dev).unwrap().dev_mode());
        let keyed = Cli {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            api_keys: Some(vec![format!("APIkey:{}", "s".repeat(32)).into()]),
            ..Cli::default()
        };
        let c = Config::load(&keyed).unwrap();
        assert!(!c.dev_mode());
        assert_eq!(c.api_keys[0].0, "APIkey");
        let short = Cli {
            api_keys: Some(vec!["APIkey:short".into()]),
            ..Cli::default()
        };
        assert!(Config::load(&short).is_err());
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_ttl("2h").unwrap().as_secs(), 7200);
        for bad in ["", "h", "5y", "0m", "1é", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
