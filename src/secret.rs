//! A secret in the configuration (an API secret, the metrics token, the webhook signing
//! secret, a TURN password): its `Debug` never prints it, so a `{:?}` of the
//! configuration in a log, a panic message or a test failure leaks nothing. The value
//! is read only through [`Secret::expose`], which makes every use easy to find.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A fresh random secret of 32 bytes, base64url: what dev mode uses where the
    /// operator gave none.
    pub fn generate() -> Secret {
        use base64::Engine;
        let bytes: [u8; 32] = rand::random();
        Secret(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Whether `candidate` is this secret, compared in constant time.
    pub fn matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Serialized as itself: the one place a secret leaves on purpose is the TURN
/// credential handed to a participant in `joined`.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from("hunter2-hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert!(s.matches("hunter2-hunter2-hunter2"));
        assert!(!s.matches("hunter2"));
    }

    #[test]
    fn generated_secrets_differ() {
        let (a, b) = (Secret::generate(), Secret::generate());
        assert_ne!(a, b);
        assert!(a.len() >= 32);
    }
}
