//! The JSON messages of the signaling WebSocket (docs/signaling.md).

use serde::{Deserialize, Serialize};

use crate::config::IceServer;
use crate::id::{MediaKind, ParticipantId, TrackId};
use crate::room::{ParticipantInfo, RoomEvent, TrackInfo};

pub use ::rtc::peer_connection::transport::RTCIceCandidateInit as IceCandidate;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// In dev mode `room` and `name` say where and who; with API keys configured the
    /// `token` says both (a `room` given as well must match it).
    Join {
        #[serde(default)]
        room: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        token: Option<String>,
    },
    Offer {
        sdp: String,
        /// The source of each m-section (by mid) that is not a camera or microphone:
        /// `{"3": "screen"}` for a screen share.
        #[serde(default)]
        sources: std::collections::HashMap<String, crate::auth::Source>,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: IceCandidate,
    },
    Mute {
        kind: MediaKind,
        muted: bool,
    },
    /// How the client shows one remote video: its rendered size and whether it is seen.
    View {
        track_id: TrackId,
        width: u32,
        height: u32,
        visible: bool,
    },
    Leave {},
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        participant_id: ParticipantId,
        room: String,
        ice_servers: Vec<IceServer>,
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackInfo>,
    },
    /// Notifications were dropped while this client fell behind: the room as it is
    /// now (the others and their tracks), to replace what the client knew.
    Resync {
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackInfo>,
    },
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: IceCandidate,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: ParticipantId,
    },
    TrackPublished {
        track: TrackInfo,
    },
    TrackUnpublished {
        track_id: TrackId,
        participant_id: ParticipantId,
    },
    Mute {
        participant_id: ParticipantId,
        kind: MediaKind,
        muted: bool,
    },
    /// Dynacast: the simulcast layers (by rid) of the client's track in m-section `mid`
    /// that someone watches; the client pauses the others.
    Layers {
        mid: String,
        active: Vec<String>,
    },
    /// Who speaks now, the dominant speaker first (empty: nobody).
    Speakers {
        participant_ids: Vec<ParticipantId>,
    },
    Left {},
    /// An administrator removed the participant or closed the room; the socket closes
    /// next, and the client should not rejoin on its own.
    Removed {
        reason: String,
    },
    Error {
        code: &'static str,
        message: String,
    },
    /// The room is hosted by another node of the cluster: join there (the socket closes).
    Moved {
        node: String,
        url: String,
    },
}

impl From<RoomEvent> for ServerMessage {
    fn from(e: RoomEvent) -> Self {
        match e {
            RoomEvent::ParticipantJoined(participant) => {
                ServerMessage::ParticipantJoined { participant }
            }
            RoomEvent::ParticipantLeft(participant_id) => {
                ServerMessage::ParticipantLeft { participant_id }
            }
            RoomEvent::TrackPublished(track) => ServerMessage::TrackPublished { track },
            RoomEvent::TrackUnpublished {
                track_id,
                participant_id,
            } => ServerMessage::TrackUnpublished {
                track_id,
                participant_id,
            },
            RoomEvent::Mute {
                participant_id,
                kind,
                muted,
            } => ServerMessage::Mute {
                participant_id,
                kind,
                muted,
            },
            RoomEvent::Speakers(participant_ids) => ServerMessage::Speakers { participant_ids },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"join","room":"r","name":"Ada"}"#).unwrap();
        assert!(matches!(m, ClientMessage::Join { .. }));
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        )
        .unwrap();
        assert!(matches!(m, ClientMessage::Candidate { .. }));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"leave"}"#).is_ok());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"dance"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(
            r#"{"type":"mute","kind":"smell","muted":true}"#
        )
        .is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"[1,2]"#).is_err());
    }

    #[test]
    fn server_messages_are_tagged() {
        let json = serde_json::to_value(ServerMessage::Error {
            code: "bad_json",
            message: "x".into(),
        })
        .unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["code"], "bad_json");
        let json = serde_json::to_value(ServerMessage::ParticipantLeft {
            participant_id: ParticipantId(4),
        })
        .unwrap();
        assert_eq!(json["participant_id"], "p4");
    }
}
