//! A room's chat: what a participant sends on its "chat" data channel is checked
//! (text, size, rate), stamped with who and when, relayed to everyone in the room and
//! kept in a short history for those who join later. Pure: time is an argument.
//!
//! On the wire (docs/signaling.md, "Chat"): the client sends the bare text as a string
//! message; the server sends JSON objects, `{"type":"chat", ...}` per message.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde::Serialize;

use crate::id::ParticipantId;
use crate::rate_limit::RateLimit;

/// Messages kept for participants who join later.
pub const HISTORY_LEN: usize = 100;
/// The longest message, in characters (as people count them, not UTF-16 units).
pub const MAX_TEXT_CHARS: usize = 2_000;
/// Bytes read at most: more than any allowed text can take in UTF-8 (4 bytes a char).
pub const MAX_MESSAGE_BYTES: usize = MAX_TEXT_CHARS * 4;
/// A burst of messages, then this many per second.
const BURST: u32 = 10;
const PER_SECOND: u32 = 2;

/// One chat message as every client receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// Always "chat": the data channel may carry other kinds later.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub from: ParticipantId,
    pub name: String,
    pub text: String,
    /// When the server relayed it, milliseconds since the Unix epoch.
    pub at: u64,
    /// True when it is replayed from the history to someone who just joined.
    pub history: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("chat messages are text; binary messages are refused")]
    NotText,
    #[error("a chat message is at most {MAX_TEXT_CHARS} characters")]
    TooLong,
    #[error("a chat message must be valid UTF-8")]
    InvalidUtf8,
    #[error("an empty chat message")]
    Empty,
    #[error("too many chat messages; wait a moment")]
    TooFast,
}

#[derive(Default)]
pub struct Chat {
    history: VecDeque<ChatMessage>,
    limits: HashMap<ParticipantId, RateLimit>,
}

impl Chat {
    /// Checks one message from `from` and, when it passes, records it: the returned
    /// message goes to everyone in the room (the sender too, as its confirmation).
    pub fn post(
        &mut self,
        from: ParticipantId,
        name: &str,
        payload: &[u8],
        is_text: bool,
        now: Instant,
        unix_ms: u64,
    ) -> Result<ChatMessage, ChatError> {
        if !is_text {
            return Err(ChatError::NotText);
        }
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(ChatError::TooLong);
        }
        let text = std::str::from_utf8(payload).map_err(|_| ChatError::InvalidUtf8)?;
        let text = text.trim();
        if text.is_empty() {
            return Err(ChatError::Empty);
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(ChatError::TooLong);
        }
        let limit = self
            .limits
            .entry(from)
            .or_insert_with(|| RateLimit::new(BURST, PER_SECOND, now));
        if !limit.allow(now) {
            return Err(ChatError::TooFast);
        }
        let message = ChatMessage {
            kind: "chat",
            from,
            name: name.to_string(),
            text: text.to_string(),
            at: unix_ms,
            history: false,
        };
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(message.clone());
        Ok(message)
    }

    /// The recent messages, oldest first, marked as history.
    pub fn history(&self) -> impl Iterator<Item = ChatMessage> + '_ {
        self.history.iter().map(|m| ChatMessage {
            history: true,
            ..m.clone()
        })
    }

    /// A participant left: its rate limit goes (its messages stay in the history).
    pub fn forget(&mut self, id: ParticipantId) {
        self.limits.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn post(
        chat: &mut Chat,
        from: u64,
        text: &str,
        now: Instant,
    ) -> Result<ChatMessage, ChatError> {
        chat.post(ParticipantId(from), "Ada", text.as_bytes(), true, now, 1)
    }

    #[test]
    fn a_message_is_stamped_and_kept() {
        let t0 = Instant::now();
        let mut chat = Chat::default();
        let m = post(&mut chat, 1, "  <b>hi</b> ", t0).unwrap();
        assert_eq!(
            (m.from, m.text.as_str(), m.history),
            (ParticipantId(1), "<b>hi</b>", false)
        );
        let h: Vec<_> = chat.history().collect();
        assert_eq!(h.len(), 1);
        assert!(h[0].history);
        let json = serde_json::to_value(&h[0]).unwrap();
        assert_eq!(json["type"], "chat");
        assert_eq!(json["from"], "p1");
    }

    #[test]
    fn bad_messages_are_refused_and_not_kept() {
        let t0 = Instant::now();
        let mut chat = Chat::default();
        let id = ParticipantId(1);
        assert_eq!(
            chat.post(id, "A", b"hi", false, t0, 0),
            Err(ChatError::NotText)
        );
        assert_eq!(
            chat.post(id, "A", b"\xff\xfe", true, t0, 0),
            Err(ChatError::InvalidUtf8)
        );
        assert_eq!(post(&mut chat, 1, " \n ", t0), Err(ChatError::Empty));
        let long = "é".repeat(MAX_TEXT_CHARS + 1);
        assert_eq!(post(&mut chat, 1, &long, t0), Err(ChatError::TooLong));
        let huge = vec![b'a'; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            chat.post(id, "A", &huge, true, t0, 0),
            Err(ChatError::TooLong)
        );
        // Exactly the limit in characters passes, though it is twice as many bytes.
        assert!(post(&mut chat, 1, &"é".repeat(MAX_TEXT_CHARS), t0).is_ok());
        assert_eq!(chat.history().count(), 1);
    }

    #[test]
    fn a_flood_is_cut_to_the_rate_per_sender() {
        let t0 = Instant::now();
        let mut chat = Chat::default();
        let sent = (0..50)
            .filter(|_| post(&mut chat, 1, "x", t0).is_ok())
            .count();
        assert_eq!(sent, BURST as usize);
        assert_eq!(post(&mut chat, 1, "x", t0), Err(ChatError::TooFast));
        assert!(post(&mut chat, 2, "someone else", t0).is_ok());
        let later = t0 + Duration::from_secs(1);
        let sent = (0..50)
            .filter(|_| post(&mut chat, 1, "x", later).is_ok())
            .count();
        assert_eq!(sent, PER_SECOND as usize);
    }

    #[test]
    fn the_history_keeps_the_latest_messages_in_order() {
        let t0 = Instant::now();
        let mut chat = Chat::default();
        for i in 0..HISTORY_LEN + 20 {
            let sender = i as u64; // many senders: the rate limit is per sender
            post(&mut chat, sender, &format!("m{i}"), t0).unwrap();
        }
        let texts: Vec<String> = chat.history().map(|m| m.text).collect();
        assert_eq!(texts.len(), HISTORY_LEN);
        assert_eq!(texts[0], "m20");
        assert_eq!(texts[HISTORY_LEN - 1], format!("m{}", HISTORY_LEN + 19));
        chat.forget(ParticipantId(3));
        assert_eq!(chat.history().count(), HISTORY_LEN);
    }

    #[test]
    fn random_payloads_never_panic_and_what_passes_is_clean_text() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(11);
        let t0 = Instant::now();
        let mut chat = Chat::default();
        for i in 0..20_000u64 {
            let len = rng.random_range(0..64);
            let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let now = t0 + Duration::from_secs(i); // the rate limit never decides here
            if let Ok(m) = chat.post(ParticipantId(1), "A", &payload, rng.random(), now, 0) {
                assert!(!m.text.is_empty() && m.text.trim() == m.text);
                assert!(m.text.chars().count() <= MAX_TEXT_CHARS);
            }
        }
        assert!(chat.history().count() <= HISTORY_LEN);
    }
}
