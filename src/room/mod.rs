//! The pure core of the SFU: rooms, producers, consumers, header rewriting and
//! negotiation state. Nothing here does I/O, reads a clock or names a webrtc-rs type,
//! so all of it is unit-tested on simulated time.

pub mod allocator;
pub mod chat;
pub mod codec;
pub mod consumer;
mod downlink;
pub mod dynacast;
pub mod negotiation;
pub mod participant;
pub mod picture_numbering;
pub mod producer;
pub mod rewrite;
#[allow(clippy::module_inception)]
pub mod room;
pub mod speaker;

pub use allocator::View;
pub use codec::Codec;
pub use consumer::{LegCounts, LegParams, LegStart};
pub use negotiation::{NegotiationError, Negotiator, OfferPlan};
pub use participant::{valid_display_name, valid_room_name, ParticipantInfo};
pub use rewrite::{ExtMap, RewrittenHeader};
pub use room::{
    Forward, JoinSnapshot, Output, Room, RoomError, RoomEvent, RoomRtpCounts, RtpIn, TrackInfo,
};
