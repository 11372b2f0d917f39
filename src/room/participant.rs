//! What the room knows about one participant, and the rules for names.

use serde::Serialize;

use crate::id::{MediaKind, ParticipantId};

pub const MAX_NAME_CHARS: usize = 64;

/// A participant as the other participants see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub name: String,
    pub audio_muted: bool,
    pub video_muted: bool,
}

impl ParticipantInfo {
    pub fn new(id: ParticipantId, name: String) -> Self {
        ParticipantInfo {
            id,
            name,
            audio_muted: false,
            video_muted: false,
        }
    }

    pub fn is_muted(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.audio_muted,
            MediaKind::Video => self.video_muted,
        }
    }

    pub fn set_muted(&mut self, kind: MediaKind, muted: bool) {
        match kind {
            MediaKind::Audio => self.audio_muted = muted,
            MediaKind::Video => self.video_muted = muted,
        }
    }
}

/// Room names appear in URLs and logs: 1-64 of `[A-Za-z0-9_-]`.
pub fn valid_room_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Display names are shown to people: 1-64 characters, no control characters, not blank.
pub fn valid_display_name(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars)
        && !name.trim().is_empty()
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(valid_room_name("standup"));
        assert!(valid_room_name("team-a_2"));
        assert!(!valid_room_name(""));
        assert!(!valid_room_name("a b"));
        assert!(!valid_room_name("../etc"));
        assert!(!valid_room_name(&"x".repeat(65)));
    }

    #[test]
    fn display_names() {
        assert!(valid_display_name("Ada Lovelace"));
        assert!(valid_display_name("Zoë 李"));
        assert!(!valid_display_name(""));
        assert!(!valid_display_name("   "));
        assert!(!valid_display_name("bad\nname"));
        assert!(valid_display_name(&"é".repeat(64)));
        assert!(!valid_display_name(&"é".repeat(65)));
    }
}
