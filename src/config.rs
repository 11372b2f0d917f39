//! Configuration: embedded defaults, then a TOML file, then environment variables and
//! flags (clap reads both; flags win). Defaults serve one machine on loopback only, the
//! way `livekit-server --dev` does, so nothing is exposed until an operator says so.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug, Default)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard: a selective forwarding unit for meetings"
)]
pub struct Cli {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP/WebSocket listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "SWITCHYARD_LISTEN")]
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
    /// Most participants in one room.
    #[arg(long, env = "SWITCHYARD_MAX_PARTICIPANTS")]
    pub max_participants: Option<usize>,
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
    pub credential: Option<String>,
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
    pub srtp: Option<SrtpPolicy>,
    pub bwe: Option<bool>,
    pub ice_servers: Option<Vec<IceServer>>,
    pub max_participants: Option<usize>,
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
    pub max_participants: usize,
    /// Largest signaling frame accepted (SDP offers are a few KiB).
    pub max_message_bytes: usize,
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
            },
            ice_servers: vec![],
            max_participants: 50,
            max_message_bytes: 64 * 1024,
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
        if let Some(v) = f.srtp {
            self.media.srtp = v;
        }
        if let Some(v) = f.bwe {
            self.media.bwe = v;
        }
        if let Some(v) = f.ice_servers {
            self.ice_servers = v;
        }
        if let Some(v) = f.max_participants {
            self.max_participants = v;
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
        if let Some(v) = cli.max_participants {
            self.max_participants = v;
        }
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
}
