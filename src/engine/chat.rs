//! Chat on the engine's connections: each participant's browser opens a data channel
//! labelled "chat" on its one PeerConnection (SCTP over the same DTLS); what arrives
//! there is checked by the room's [`Chat`] and relayed to everyone in the room over
//! theirs. A channel of any other label is closed and the client told why.
//!
//! [`Chat`]: crate::room::chat::Chat

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rtc::data_channel::{RTCDataChannelId, RTCDataChannelMessage};
use rtc::peer_connection::event::RTCDataChannelEvent;
use tracing::debug;

use super::peer::RoomKey;
use super::shard::{touch, Shard};
use super::{EngineError, PeerOutput};
use crate::id::ParticipantId;
use crate::metrics::Metrics;
use crate::room::chat::ChatMessage;

pub const CHAT_LABEL: &str = "chat";

/// A receiver whose channel holds this much unsent chat misses the next messages
/// (SCTP behind a dead or throttled link): the shard never queues without bound.
const MAX_OUTSTANDING_BYTES: usize = 256 * 1024;

impl Shard {
    pub(super) fn data_channel_event(
        &mut self,
        id: ParticipantId,
        event: RTCDataChannelEvent,
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match event {
            RTCDataChannelEvent::OnOpen(channel) => {
                let Some(mut dc) = peer.pc.data_channel(channel) else {
                    return;
                };
                if dc.label() != CHAT_LABEL || peer.chat_channel.is_some() {
                    let label = dc.label().chars().take(64).collect::<String>();
                    let _ = dc.close();
                    debug!(participant = %id, %label, "data channel refused");
                    peer.tell(PeerOutput::Error(EngineError::Chat(format!(
                        "data channel {label:?} refused: the server opens one \"{CHAT_LABEL}\" channel per participant"
                    ))));
                    touch(&mut self.touched, peer);
                    return;
                }
                peer.chat_channel = Some(channel);
                // Someone who joins late reads what was said before.
                let key = peer.room;
                let history: Vec<ChatMessage> = self
                    .rooms
                    .get(&key)
                    .map(|h| h.chat.history().collect())
                    .unwrap_or_default();
                for m in &history {
                    self.send_chat(id, &to_json(m), now);
                }
                if let Some(peer) = self.peers.get_mut(&id) {
                    touch(&mut self.touched, peer);
                }
            }
            RTCDataChannelEvent::OnClose(channel) if peer.chat_channel == Some(channel) => {
                peer.chat_channel = None;
            }
            _ => {}
        }
    }

    pub(super) fn data_channel_message(
        &mut self,
        id: ParticipantId,
        channel: RTCDataChannelId,
        message: RTCDataChannelMessage,
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.chat_channel != Some(channel) {
            return; // a refused channel's last messages: the client was told at open
        }
        let key = peer.room;
        let Some(host) = self.rooms.get_mut(&key) else {
            return;
        };
        let name = host
            .room
            .participant(id)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        match host
            .chat
            .post(id, &name, &message.data, message.is_string, now, unix_ms)
        {
            Ok(m) => {
                Metrics::inc(&self.metrics.chat_messages);
                self.relay_chat(key, &m, now);
            }
            Err(e) => {
                Metrics::inc(&self.metrics.chat_refused);
                peer.tell(PeerOutput::Error(EngineError::Chat(e.to_string())));
            }
        }
    }

    /// To everyone in the room with an open chat channel, the sender included.
    fn relay_chat(&mut self, key: RoomKey, m: &ChatMessage, now: Instant) {
        let Some(host) = self.rooms.get(&key) else {
            return;
        };
        let members: Vec<ParticipantId> = host.room.participants().map(|p| p.id).collect();
        let json = to_json(m); // once, not per member
        for member in members {
            self.send_chat(member, &json, now);
        }
    }

    fn send_chat(&mut self, to: ParticipantId, json: &str, now: Instant) {
        let Some(peer) = self.peers.get_mut(&to) else {
            return;
        };
        let Some(channel) = peer.chat_channel else {
            return;
        };
        let Some(mut dc) = peer.pc.data_channel(channel) else {
            return;
        };
        if dc.outstanding_bytes() > MAX_OUTSTANDING_BYTES {
            Metrics::inc(&self.metrics.chat_dropped);
            return;
        }
        if dc.send_text(now, json).is_err() {
            Metrics::inc(&self.metrics.chat_dropped);
        }
        touch(&mut self.touched, peer);
    }
}

fn to_json(m: &ChatMessage) -> String {
    serde_json::to_string(m).expect("a chat message serializes")
}
