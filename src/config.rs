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
    /// IPs the media UDP sockets bind, comma separated [default: 127.0.0.1].
    #[arg(long, env = "SWITCHYARD_MEDIA_IPS", value_delimiter = ',')]
    pub media_ips: Option<Vec<IpAddr>>,
    /// IPs advertised in ICE candidates instead of the bound ones (1:1 NAT), comma separated.
    #[arg(long, env = "SWITCHYARD_ADVERTISE_IPS", value_delimiter = ',')]
    pub advertise_ips: Option<Vec<IpAddr>>,
    /// Media UDP port range "MIN-MAX" (one port per participant); "0-0" for any port.
    #[arg(long, env = "SWITCHYARD_PORT_RANGE")]
    pub port_range: Option<PortRange>,
    /// ICE server URLs handed to clients (stun:... or turn:...), comma separated.
    #[arg(long, env = "SWITCHYARD_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Option<Vec<String>>,
    /// Most participants in one room.
    #[arg(long, env = "SWITCHYARD_MAX_PARTICIPANTS")]
    pub max_participants: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("expected MIN-MAX, got {s:?}"))?;
        let min: u16 = a.trim().parse().map_err(|_| format!("bad port {a:?}"))?;
        let max: u16 = b.trim().parse().map_err(|_| format!("bad port {b:?}"))?;
        if min > max || (min == 0) != (max == 0) {
            return Err(format!("bad port range {s:?}"));
        }
        Ok(PortRange { min, max })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        format!("{}-{}", r.min, r.max)
    }
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
    pub port_range: Option<PortRange>,
    pub ice_servers: Option<Vec<IceServer>>,
    pub max_participants: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct MediaConfig {
    pub bind_ips: Vec<IpAddr>,
    pub advertise_ips: Vec<IpAddr>,
    pub ports: PortRange,
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
                ports: PortRange {
                    min: 50_000,
                    max: 59_999,
                },
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
        if let Some(v) = f.port_range {
            self.media.ports = v;
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
        if let Some(v) = cli.port_range {
            self.media.ports = v;
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
        if self.media.bind_ips.is_empty() {
            return Err(ConfigError::Invalid(
                "media_ips must name at least one address".into(),
            ));
        }
        if self.media.bind_ips.iter().any(IpAddr::is_unspecified) {
            // webrtc-rs expands a wildcard to every non-loopback interface and would
            // advertise them all; name the interface instead.
            return Err(ConfigError::Invalid(
                "media_ips must be concrete addresses, not 0.0.0.0 or ::".into(),
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
            port_range = "40000-40100"
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
        assert_eq!(
            c.media.ports,
            PortRange {
                min: 40_000,
                max: 40_100
            }
        );
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
        assert!("5-1".parse::<PortRange>().is_err());
        assert!("0-10".parse::<PortRange>().is_err());
        assert!(toml::from_str::<FileConfig>("nonsense = 1").is_err());
        let cli = Cli {
            media_ips: Some(vec!["0.0.0.0".parse().unwrap()]),
            ..Cli::default()
        };
        assert!(Config::load(&cli).is_err());
    }
}
