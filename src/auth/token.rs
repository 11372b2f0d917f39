//! Access tokens: JWTs signed with HS256 by one of the configured API key/secret pairs
//! (the key named in the header's `kid`, or in `iss`). jsonwebtoken does the checking:
//! only HS256 is accepted (so `alg: none` and key-confusion tricks are refused), the
//! signature is compared in constant time (ring's HMAC verify), and `exp`/`nbf` are
//! checked with a few seconds of leeway for clock skew.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::grants::Claims;
use super::AuthError;

/// Tolerated clock skew between whoever issued a token and this server.
const LEEWAY_SECS: u64 = 5;
/// Tokens longer than this are refused unread (a join message is far smaller anyway).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Secrets shorter than this are refused at start (HS256 wants 256 bits of key).
pub const MIN_SECRET_BYTES: usize = 32;

struct Key {
    decoding: DecodingKey,
    encoding: EncodingKey,
    secret: Vec<u8>,
}

/// The API keys tokens may be signed with.
pub struct KeySet {
    keys: HashMap<String, Key>,
    /// The first key configured: what `switchyard token` signs with by default.
    first: Option<String>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("KeySet")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl KeySet {
    pub fn new(pairs: &[(String, crate::secret::Secret)]) -> KeySet {
        let keys = pairs
            .iter()
            .map(|(id, secret)| {
                let secret = secret.expose();
                let key = Key {
                    decoding: DecodingKey::from_secret(secret.as_bytes()),
                    encoding: EncodingKey::from_secret(secret.as_bytes()),
                    secret: secret.as_bytes().to_vec(),
                };
                (id.clone(), key)
            })
            .collect();
        KeySet {
            keys,
            first: pairs.first().map(|(id, _)| id.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn first_key(&self) -> Option<&str> {
        self.first.as_deref()
    }

    /// Whether `secret` is the secret of `key_id` (the admin API takes the key pair
    /// itself too), compared in constant time.
    pub fn check_secret(&self, key_id: &str, secret: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.keys
            .get(key_id)
            .is_some_and(|k| bool::from(k.secret.as_slice().ct_eq(secret.as_bytes())))
    }

    /// Signs `claims` with the key `key_id` (its `kid` header and `iss` claim name it).
    pub fn issue(&self, key_id: &str, claims: &Claims) -> Result<String, AuthError> {
        let key = self.keys.get(key_id).ok_or(AuthError::UnknownKey)?;
        let header = Header {
            kid: Some(key_id.to_string()),
            ..Header::new(Algorithm::HS256)
        };
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|_| AuthError::Malformed)
    }

    /// A token's claims, if one of our keys signed it and it is valid now.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::BadAlgorithm);
        }
        // The key named in the header; a token without `kid` names its key in `iss`,
        // read (unverified) only to pick the key the signature is then checked with.
        let key_id = match header.kid {
            Some(kid) => kid,
            None => unverified_issuer(token).ok_or(AuthError::UnknownKey)?,
        };
        let key = self.keys.get(&key_id).ok_or(AuthError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss"]);
        validation.set_issuer(&[key_id.as_str()]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::BadAlgorithm,
                ErrorKind::InvalidIssuer => AuthError::UnknownKey,
                _ => AuthError::Malformed,
            },
        )?;
        Ok(data.claims)
    }
}

/// The `iss` claim of a token, read without checking anything.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_string)
}

/// Claims for a token valid from now for `ttl`.
pub fn claims_for(
    key_id: &str,
    identity: &str,
    name: Option<&str>,
    ttl: Duration,
    grants: super::Grants,
) -> Claims {
    let now = unix_now();
    Claims {
        iss: key_id.to_string(),
        sub: identity.to_string(),
        name: name.map(str::to_string),
        nbf: now.saturating_sub(LEEWAY_SECS),
        exp: now + ttl.as_secs(),
        grants,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Grants;
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn keys() -> KeySet {
        KeySet::new(&[
            ("APIkey1".into(), SECRET.into()),
            ("APIkey2".into(), "z".repeat(40).into()),
        ])
    }

    fn grants(room: &str) -> Grants {
        Grants {
            room: Some(room.into()),
            ..Grants::default()
        }
    }

    fn claims(exp_from_now: i64, nbf_from_now: i64) -> Claims {
        let now = unix_now() as i64;
        Claims {
            iss: "APIkey1".into(),
            sub: "ada".into(),
            name: Some("Ada".into()),
            nbf: (now + nbf_from_now) as u64,
            exp: (now + exp_from_now) as u64,
            grants: grants("standup"),
        }
    }

    #[test]
    fn the_key_pair_itself_checks_out() {
        let k = keys();
        assert!(k.check_secret("APIkey1", SECRET));
        assert!(!k.check_secret("APIkey1", "0123456789abcdef0123456789abcdeX"));
        assert!(!k.check_secret("APIkey1", ""));
        assert!(!k.check_secret("APInone", SECRET));
    }

    #[test]
    fn a_token_we_issued_verifies() {
        let k = keys();
        let c = claims(3600, 0);
        let t = k.issue("APIkey1", &c).unwrap();
        assert_eq!(k.verify(&t).unwrap(), c);
    }

    #[test]
    fn expired_not_yet_valid_forged_and_unknown_key_tokens_are_refused() {
        let k = keys();
        let expired = k.issue("APIkey1", &claims(-60, -3600)).unwrap();
        assert_eq!(k.verify(&expired), Err(AuthError::Expired));
        let early = k.issue("APIkey1", &claims(7200, 3600)).unwrap();
        assert_eq!(k.verify(&early), Err(AuthError::NotYetValid));

        // Signed with another secret under our key's name.
        let other = KeySet::new(&[("APIkey1".into(), "x".repeat(32).into())]);
        let forged = other.issue("APIkey1", &claims(3600, 0)).unwrap();
        assert_eq!(k.verify(&forged), Err(AuthError::BadSignature));

        let stranger = KeySet::new(&[("APIother".into(), SECRET.into())]);
        let mut c = claims(3600, 0);
        c.iss = "APIother".into();
        let unknown = stranger.issue("APIother", &c).unwrap();
        assert_eq!(k.verify(&unknown), Err(AuthError::UnknownKey));

        // A valid signature by key 2 that claims to be from key 1.
        let mut c = claims(3600, 0);
        c.iss = "APIkey1".into();
        let confused = k.issue("APIkey2", &c).unwrap();
        assert_eq!(k.verify(&confused), Err(AuthError::UnknownKey));
    }

    #[test]
    fn alg_none_and_a_tampered_payload_are_refused() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let k = keys();
        let payload = serde_json::to_string(&claims(3600, 0)).unwrap();
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT","kid":"APIkey1"}"#),
            b64(&payload)
        );
        assert!(k.verify(&none).is_err());
        let hs512 = format!(
            "{}.{}.AAAA",
            b64(r#"{"alg":"HS512","kid":"APIkey1"}"#),
            b64(&payload)
        );
        assert_eq!(k.verify(&hs512), Err(AuthError::BadAlgorithm));

        let good = k.issue("APIkey1", &claims(3600, 0)).unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut admin = claims(3600, 0);
        admin.grants.room_admin = true;
        let tampered_payload = b64(&serde_json::to_string(&admin).unwrap());
        parts[1] = &tampered_payload;
        assert_eq!(k.verify(&parts.join(".")), Err(AuthError::BadSignature));
    }

    #[test]
    fn garbage_never_panics_and_is_refused() {
        let k = keys();
        let mut rng = rand::rng();
        for _ in 0..2000 {
            let len = rand::Rng::random_range(&mut rng, 0..300);
            let s: String = (0..len)
                .map(|_| {
                    let c: u8 = rand::Rng::random_range(&mut rng, 32..127);
                    c as char
                })
                .collect();
            assert!(k.verify(&s).is_err());
        }
        assert_eq!(
            k.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(AuthError::Malformed)
        );
    }
}
