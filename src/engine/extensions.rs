//! The RTP header extensions the engine itself reads or writes, by URI: one leaf module,
//! so the modules that need them (build, downlink, legs, retransmit, routing) do not
//! import each other for a constant.

/// The publisher's audio level per packet (RFC 6464): active speakers.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The transport-wide sequence number the downlink estimator stamps on what it sends.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
