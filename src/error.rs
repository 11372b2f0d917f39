//! Control-plane errors and the code each one has on the wire (docs/signaling.md).

use crate::auth::AuthError;
use crate::engine::EngineError;
use crate::room::{NegotiationError, RoomError};

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("message is not valid: {0}")]
    BadJson(String),
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("too many messages; slow down (the next is accepted in {0:?})")]
    RateLimited(std::time::Duration),
    #[error("send a join message first")]
    NotJoined,
    #[error("this connection has already joined a room")]
    AlreadyJoined,
    #[error("{0}")]
    InvalidName(&'static str),
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The cluster's store (Redis) cannot say where the room is: try again.
    #[error("{0}")]
    Cluster(String),
    /// This node (and, in a cluster, every node) is at its participant limit.
    #[error("the server is full; try again later")]
    ServerFull,
}

impl SignalError {
    pub fn code(&self) -> &'static str {
        match self {
            SignalError::BadJson(_) => "bad_json",
            SignalError::TooLarge { .. } => "too_large",
            SignalError::RateLimited(_) => "rate_limited",
            SignalError::NotJoined => "not_joined",
            SignalError::AlreadyJoined => "already_joined",
            SignalError::InvalidName(_) => "invalid_name",
            SignalError::Unauthorized(_) => "unauthorized",
            SignalError::Room(RoomError::NameTaken(_)) => "name_taken",
            SignalError::Room(RoomError::RoomFull(_)) => "room_full",
            SignalError::Room(RoomError::UnknownParticipant(_)) => "internal",
            SignalError::Engine(EngineError::BadSdp(_)) => "bad_sdp",
            SignalError::Engine(EngineError::Negotiation(NegotiationError::NoOfferPending)) => {
                "no_offer_pending"
            }
            SignalError::Engine(EngineError::Negotiation(NegotiationError::Glare)) => "glare",
            SignalError::Engine(EngineError::BadCandidate(_)) => "bad_candidate",
            SignalError::Engine(EngineError::Forbidden(_)) => "forbidden",
            SignalError::Engine(EngineError::Chat(_)) => "chat_refused",
            SignalError::Engine(EngineError::Internal(_)) => "internal",
            SignalError::Cluster(_) => "cluster_unavailable",
            SignalError::ServerFull => "server_full",
        }
    }
}
