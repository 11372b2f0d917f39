//! The only code that names webrtc-rs types: building PeerConnections, pumping tracks
//! in and out, and the per-room actor that owns the pure [`crate::room::Room`].

pub mod actor;
pub mod feedback;
pub mod participant;
pub mod peer;
pub mod registry;
pub mod track_in;
pub mod track_out;

pub use actor::{RoomCommand, RoomHandle, SessionEvent};
pub use participant::{Ids, ParticipantPeer, PeerContext, PeerError, PeerEvent};
pub use peer::PortAllocator;
pub use registry::Rooms;
