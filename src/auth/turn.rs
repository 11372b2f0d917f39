//! TURN credentials per participant, in the scheme TURN servers call the "REST API"
//! (draft-uberti-behave-turn-rest; coturn's `use-auth-secret`, and what LiveKit and
//! Jitsi hand out): the username is `EXPIRY:PARTICIPANT` (Unix seconds), the password
//! the base64 HMAC-SHA1 of that username under a secret the TURN server shares. The
//! TURN server checks both without asking us, refuses them after the expiry, and a
//! leaked pair names whose it was. Every joiner used to get the same static pair.

use std::time::Duration;

use base64::Engine;
use ring::hmac;

use crate::config::IceServer;
use crate::id::ParticipantId;
use crate::secret::Secret;

/// A username and password for `participant`, valid until `now_unix + ttl`.
pub fn credentials(
    secret: &Secret,
    participant: ParticipantId,
    now_unix: u64,
    ttl: Duration,
) -> (String, Secret) {
    let username = format!("{}:{participant}", now_unix + ttl.as_secs());
    // SHA-1 because that is what the scheme (and every TURN server implementing it)
    // specifies; as an HMAC it is not affected by SHA-1's collision attacks.
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        secret.expose().as_bytes(),
    );
    let tag = hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, Secret::from(password))
}

/// The ICE servers `participant` is handed in `joined`: every TURN server configured
/// without a username gets this participant's own credentials when a TURN secret is
/// set; STUN servers and servers with configured credentials go out as they are.
pub fn ice_servers_for(
    configured: &[IceServer],
    secret: Option<&Secret>,
    ttl: Duration,
    participant: ParticipantId,
    now_unix: u64,
) -> Vec<IceServer> {
    configured
        .iter()
        .map(|server| {
            let is_turn = server
                .urls
                .iter()
                .any(|u| u.starts_with("turn:") || u.starts_with("turns:"));
            match secret {
                Some(secret) if is_turn && server.username.is_none() => {
                    let (username, credential) = credentials(secret, participant, now_unix, ttl);
                    IceServer {
                        urls: server.urls.clone(),
                        username: Some(username),
                        credential: Some(credential),
                    }
                }
                _ => server.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_the_base64_hmac_sha1_of_the_username() {
        // Checked against `printf %s "1795903600:p7" | openssl dgst -sha1 -hmac
        // "north-sea-secret" -binary | base64`.
        let (user, pass) = credentials(
            &Secret::from("north-sea-secret"),
            ParticipantId(7),
            1_795_900_000,
            Duration::from_secs(3600),
        );
        assert_eq!(user, "1795903600:p7");
        assert_eq!(pass.expose(), "5YiirCtoFeGNIAJl+Or/X3y8llc=");
    }

    #[test]
    fn only_turn_servers_without_a_username_get_derived_credentials() {
        let configured = vec![
            IceServer {
                urls: vec!["stun:127.0.0.1:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turns:turn.example.org:443".into()],
                username: Some("static".into()),
                credential: Some("kept".into()),
            },
        ];
        let secret = Secret::from("north-sea-secret");
        let ttl = Duration::from_secs(60);
        let ada = ice_servers_for(&configured, Some(&secret), ttl, ParticipantId(1), 100);
        let bob = ice_servers_for(&configured, Some(&secret), ttl, ParticipantId(2), 100);
        assert_eq!(ada[0], configured[0]);
        assert_eq!(ada[1].username.as_deref(), Some("160:p1"));
        assert_ne!(
            ada[1].credential, bob[1].credential,
            "each participant its own"
        );
        assert_eq!(ada[2], configured[2]);
        assert_eq!(
            ice_servers_for(&configured, None, ttl, ParticipantId(1), 100),
            configured
        );
    }
}
