//! `switchyard token`: an access token for one participant, and the link that joins with
//! it through the bundled web client.

use std::net::{IpAddr, Ipv4Addr};

use super::{claims_for, Grants, KeySet};
use crate::config::{Config, TokenArgs};
use crate::room::{valid_display_name, valid_room_name};

/// The text the command prints: the token on one line, the join link on the next.
pub fn token_command(config: &Config, args: &TokenArgs) -> Result<String, String> {
    let keys = KeySet::new(&config.api_keys);
    let key = match (&args.key, keys.first_key()) {
        (Some(k), _) => k.clone(),
        (None, Some(first)) => first.to_string(),
        (None, None) => {
            return Err(
                "no API keys configured: set SWITCHYARD_API_KEYS=KEY:SECRET (or [keys] \
                        in the configuration file), the same keys the server uses"
                    .into(),
            )
        }
    };
    if !valid_room_name(&args.room) {
        return Err("--room: 1-64 characters of A-Z a-z 0-9 _ -".into());
    }
    let name = args.name.as_deref().unwrap_or(&args.identity);
    if !valid_display_name(&args.identity) || !valid_display_name(name) {
        return Err(
            "--identity and --name: 1-64 characters, not blank, no control characters".into(),
        );
    }
    let grants = Grants {
        room: Some(args.room.clone()),
        can_publish: !args.no_publish,
        can_publish_sources: args.can_publish.clone().unwrap_or_default(),
        can_subscribe: !args.no_subscribe,
        room_admin: args.admin,
    };
    let claims = claims_for(&key, &args.identity, args.name.as_deref(), args.ttl, grants);
    let token = keys
        .issue(&key, &claims)
        .map_err(|e| format!("--key {key}: {e}"))?;
    let mut host = config.listen;
    if host.ip().is_unspecified() {
        host.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Ok(format!("{token}\nhttp://{host}/?token={token}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Source;
    use clap::Parser;

    fn config() -> Config {
        Config {
            api_keys: vec![("APIdev".into(), "s".repeat(32).into())],
            ..Config::default()
        }
    }

    fn args(extra: &[&str]) -> TokenArgs {
        let mut argv = vec![
            "switchyard",
            "token",
            "--room",
            "standup",
            "--identity",
            "ada",
        ];
        argv.extend_from_slice(extra);
        match crate::config::Cli::parse_from(argv).command {
            Some(crate::config::CliCommand::Token(a)) => a,
            None => unreachable!(),
        }
    }

    #[test]
    fn prints_a_token_the_server_accepts_and_a_join_link() {
        let c = config();
        let out = token_command(
            &c,
            &args(&["--name", "Ada L", "--can-publish", "microphone"]),
        )
        .unwrap();
        let mut lines = out.lines();
        let token = lines.next().unwrap();
        assert_eq!(
            lines.next().unwrap(),
            format!("http://127.0.0.1:8080/?token={token}")
        );
        let claims = KeySet::new(&c.api_keys).verify(token).unwrap();
        assert_eq!(claims.display_name(), "Ada L");
        assert_eq!(claims.grants.room.as_deref(), Some("standup"));
        assert_eq!(claims.grants.can_publish_sources, vec![Source::Microphone]);
        assert!(claims.grants.can_subscribe && !claims.grants.room_admin);
    }

    #[test]
    fn refuses_without_keys_and_with_bad_names() {
        assert!(token_command(&Config::default(), &args(&[])).is_err());
        let mut a = args(&[]);
        a.room = "no spaces".into();
        assert!(token_command(&config(), &a).is_err());
        assert!(token_command(&config(), &args(&["--key", "APInope"])).is_err());
    }
}
