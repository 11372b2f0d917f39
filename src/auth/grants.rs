//! What a token allows: the claims Switchyard reads from an access token (the shape of
//! LiveKit's, with the grants under `grants`), and the checks made with them.

use serde::{Deserialize, Serialize};

use crate::id::MediaKind;

/// A kind of published track, as grants name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Camera,
    Microphone,
    /// A shared screen, window or tab (the client names it; see `Offer.sources`).
    Screen,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Camera => "camera",
            Source::Microphone => "microphone",
            Source::Screen => "screen",
        }
    }

    /// The source a published track of `kind` comes from when the client does not name
    /// one: its microphone or its camera.
    pub fn of(kind: MediaKind) -> Source {
        match kind {
            MediaKind::Audio => Source::Microphone,
            MediaKind::Video => Source::Camera,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grants {
    /// The one room the token joins; `None`: it joins none (an admin-only token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default = "yes")]
    pub can_publish: bool,
    /// Which sources it may publish; empty: any (when `can_publish`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub can_publish_sources: Vec<Source>,
    #[serde(default = "yes")]
    pub can_subscribe: bool,
    /// May use the room admin API (on its room, or on every room when `room` is none).
    #[serde(default)]
    pub room_admin: bool,
}

impl Default for Grants {
    /// What everyone may do in dev mode: join, publish anything, subscribe.
    fn default() -> Self {
        Grants {
            room: None,
            can_publish: true,
            can_publish_sources: Vec::new(),
            can_subscribe: true,
            room_admin: false,
        }
    }
}

impl Grants {
    pub fn may_publish(&self, source: Source) -> bool {
        self.can_publish
            && (self.can_publish_sources.is_empty() || self.can_publish_sources.contains(&source))
    }

    /// Whether these grants administer `room`.
    pub fn administers(&self, room: &str) -> bool {
        self.room_admin && self.room.as_deref().is_none_or(|r| r == room)
    }
}

/// The token's claims (RFC 7519 names where there is one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key that signed it.
    pub iss: String,
    /// The participant's identity.
    pub sub: String,
    /// The display name; the identity when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Not before / expires, in seconds since the Unix epoch.
    pub nbf: u64,
    pub exp: u64,
    #[serde(default)]
    pub grants: Grants,
}

impl Claims {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_limit_what_may_be_published() {
        let mut g = Grants::default();
        assert!(g.may_publish(Source::Microphone) && g.may_publish(Source::Screen));
        g.can_publish_sources = vec![Source::Microphone, Source::Camera];
        assert!(g.may_publish(Source::of(MediaKind::Audio)));
        assert!(g.may_publish(Source::Camera));
        assert!(!g.may_publish(Source::Screen));
        g.can_publish = false;
        assert!(!g.may_publish(Source::Microphone));
    }

    #[test]
    fn admin_grants_cover_their_room_or_every_room() {
        let mut g = Grants {
            room_admin: true,
            room: Some("a".into()),
            ..Grants::default()
        };
        assert!(g.administers("a") && !g.administers("b"));
        g.room = None;
        assert!(g.administers("b"));
        g.room_admin = false;
        assert!(!g.administers("b"));
    }

    #[test]
    fn missing_grants_read_as_the_defaults() {
        let c: Claims = serde_json::from_str(
            r#"{"iss":"k","sub":"ada","nbf":0,"exp":1,"grants":{"room":"r"}}"#,
        )
        .unwrap();
        assert!(c.grants.can_publish && c.grants.can_subscribe && !c.grants.room_admin);
        assert_eq!(c.display_name(), "ada");
    }
}
