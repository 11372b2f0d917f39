//! The send-only transceivers that carry a participant's subscriptions: opening one for
//! a track, reading what its answer negotiated, and retiring it when the track goes.
//!
//! A retired transceiver is not thrown away: it becomes a spare, made inactive, and the
//! next track of the same kind and codec takes it over (as LiveKit and mediasoup's
//! clients reuse transceivers). Without this every departed publisher left its
//! m-sections in each subscriber's SDP for good, and after a few dozen joins and leaves
//! a long-lived page's answer outgrew the signaling frame limit. With it, the SDP holds
//! the m-sections of the most tracks ever received at once, not of every track ever.
//!
//! A spare keeps its SSRC: rtc binds a sender's SSRC to its interceptors (NACK
//! responder, reports) once, when the sender first starts, so a new track on the same
//! sender goes out under the same SSRC (as pion's `ReplaceTrack`, which LiveKit relies
//! on). The browser sees the m-section go inactive and then come back with a new
//! `msid`: it starts a fresh receive stream and fires `ontrack` for the new track.

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId, RTCRtpTransceiverInit,
};
use tracing::{debug, warn};

use super::negotiate::internal;
use super::peer::{Peer, SubscribedLeg, TrackDesc};
use super::{EngineError, Ids};
use crate::id::{LegId, MediaKind, TrackId};
use crate::room::{ExtMap, LegParams, LegStart};

/// A leg the subscriber's answer just made real: the room may start forwarding on it.
pub struct LegReady {
    pub leg: LegId,
    pub track: TrackId,
    pub params: LegParams,
    /// Where its sequence numbers and timestamps start, when it continues a reused SSRC.
    pub base: Option<LegStart>,
}

/// A send-only transceiver whose track is gone, kept for the next track like it.
pub struct SpareSender {
    pub sender: RTCRtpSenderId,
    pub ssrc: u32,
    pub kind: MediaKind,
    pub codec: RTCRtpCodec,
    /// Its inactive direction has been through an offer and answer, so the browser has
    /// let go of the old track: only then is it handed to a new one.
    pub negotiated: bool,
    /// The leg it last carried, and where the next one continues numbering (known once
    /// the room has closed that leg).
    pub last_leg: LegId,
    pub resume: Option<LegStart>,
}

impl SpareSender {
    fn fits(&self, desc: &TrackDesc) -> bool {
        self.negotiated
            && self.kind == desc.info.kind
            && self
                .codec
                .mime_type
                .eq_ignore_ascii_case(&desc.codec.mime_type)
            && self.codec.sdp_fmtp_line == desc.codec.sdp_fmtp_line
    }
}

fn rtc_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

/// The track a sender carries for `desc`: the publisher's id as the stream (so the
/// browser's `ontrack` says whose it is) and the room's track id as the track.
fn local_track(track: TrackId, desc: &TrackDesc, ssrc: u32) -> MediaStreamTrack {
    let stream_id = desc.info.participant_id.to_string();
    MediaStreamTrack::new(
        stream_id,
        track.to_string(),
        track.to_string(),
        rtc_kind(desc.info.kind),
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: desc.codec.clone(),
            ..Default::default()
        }],
    )
}

impl Peer {
    /// Opens a send-only m-section for `track`, on a spare one when there is one.
    pub(super) fn add_leg(&mut self, track: TrackId, ids: &Ids) -> Result<(), EngineError> {
        let Some(desc) = self.wanted.get(&track).cloned() else {
            return Ok(());
        };
        let (sender, ssrc, base) = match self.spares.iter().position(|s| s.fits(&desc)) {
            Some(i) => {
                let spare = self.spares.swap_remove(i);
                if let Err(e) = self.reuse(&spare, track, &desc) {
                    self.spares.push(spare);
                    return Err(e);
                }
                (spare.sender, spare.ssrc, spare.resume)
            }
            None => {
                let (sender, ssrc) = self.open_transceiver(track, &desc)?;
                (sender, ssrc, None)
            }
        };
        self.legs.insert(
            track,
            SubscribedLeg {
                leg: ids.leg(),
                ssrc,
                sender,
                desc,
                base,
                resume: None,
            },
        );
        Ok(())
    }

    fn open_transceiver(
        &mut self,
        track: TrackId,
        desc: &TrackDesc,
    ) -> Result<(RTCRtpSenderId, u32), EngineError> {
        let ssrc = rand::random::<u32>();
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![desc.info.participant_id.to_string()],
            send_encodings: vec![],
        };
        let transceiver = self
            .pc
            .add_transceiver_from_track(local_track(track, desc, ssrc), Some(init))
            .map_err(internal)?;
        let sender = self
            .pc
            .rtp_transceiver(transceiver)
            .and_then(|t| t.sender())
            .ok_or_else(|| internal("transceiver without a sender"))?;
        Ok((sender, ssrc))
    }

    /// Puts `track` on a spare's sender: active again, the new track and stream.
    fn reuse(
        &mut self,
        spare: &SpareSender,
        track: TrackId,
        desc: &TrackDesc,
    ) -> Result<(), EngineError> {
        let transceiver = RTCRtpTransceiverId::from(spare.sender);
        self.pc
            .rtp_transceiver(transceiver)
            .ok_or_else(|| internal("spare transceiver gone"))?
            .set_direction(RTCRtpTransceiverDirection::Sendonly);
        // rtc lends a sender only while its transceiver sends, so this comes second.
        let mut sender = self
            .pc
            .rtp_sender(spare.sender)
            .ok_or_else(|| internal("spare transceiver without a sender"))?;
        sender
            .replace_track(local_track(track, desc, spare.ssrc))
            .map_err(internal)?;
        sender.set_streams(vec![desc.info.participant_id.to_string()]);
        debug!(participant = %self.id, track = %track, "reusing a spare m-section");
        Ok(())
    }

    /// Takes `track`'s leg off this connection: its transceiver goes inactive and becomes
    /// a spare. Returns the leg, for the room to close.
    pub(super) fn retire_leg(&mut self, track: TrackId) -> Option<LegId> {
        let leg = self.legs.remove(&track)?;
        let transceiver = RTCRtpTransceiverId::from(leg.sender);
        match self.pc.rtp_transceiver(transceiver) {
            Some(mut t) => {
                t.set_direction(RTCRtpTransceiverDirection::Inactive);
                self.spares.push(SpareSender {
                    sender: leg.sender,
                    ssrc: leg.ssrc,
                    kind: leg.desc.info.kind,
                    codec: leg.desc.codec.clone(),
                    negotiated: false,
                    last_leg: leg.leg,
                    // Not closed by the room yet: `leg_closed` fills it in. A leg that
                    // never started passes its own start on.
                    resume: leg.resume.or(leg.base),
                });
            }
            None => warn!(participant = %self.id, "a leg's transceiver is gone"),
        }
        Some(leg.leg)
    }

    /// The room closed `leg`: remember where a later leg on its SSRC continues.
    pub(super) fn leg_closed(&mut self, leg: LegId, resume: LegStart) {
        if let Some(l) = self.legs.values_mut().find(|l| l.leg == leg) {
            l.resume = Some(resume);
        } else if let Some(s) = self.spares.iter_mut().find(|s| s.last_leg == leg) {
            s.resume = Some(resume);
        }
    }

    /// An answer is in: every spare's inactive direction is now the browser's too.
    pub(super) fn spares_negotiated(&mut self) {
        for spare in &mut self.spares {
            spare.negotiated = true;
        }
    }

    /// The answer is in: read what the leg negotiated.
    pub(super) fn leg_ready(&mut self, track: TrackId) -> Option<LegReady> {
        let leg = self.legs.get(&track)?;
        let (leg_id, ssrc, desc, sender, base) =
            (leg.leg, leg.ssrc, leg.desc.clone(), leg.sender, leg.base);
        let mut rtp_sender = self.pc.rtp_sender(sender)?;
        let params = &rtp_sender.get_parameters().rtp_parameters;
        let want = &desc.codec;
        let codec = params
            .codecs
            .iter()
            .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&want.mime_type))
            .max_by_key(|c| c.rtp_codec.sdp_fmtp_line == want.sdp_fmtp_line);
        let Some(codec) = codec else {
            warn!(track = %track, codec = %want.mime_type, "subscriber did not accept the publisher's codec");
            return None;
        };
        let outgoing: Vec<(u8, &str)> = params
            .header_extensions
            .iter()
            .map(|e| (e.id as u8, e.uri.as_str()))
            .collect();
        // The BUNDLE shares one transport-cc id; stamping starts with the first leg.
        let twcc = outgoing
            .iter()
            .find(|(_, uri)| *uri == super::extensions::TRANSPORT_CC_URI)
            .map(|(id, _)| *id);
        let ext_map = ExtMap::between(
            desc.extensions.iter().map(|(id, uri)| (*id, uri.as_str())),
            &outgoing,
        );
        if twcc.is_some() {
            self.downlink.twcc_ext_id = twcc;
        }
        Some(LegReady {
            leg: leg_id,
            track,
            params: LegParams {
                ssrc,
                payload_type: codec.payload_type,
                ext_map,
            },
            base,
        })
    }

    /// How many m-sections this connection sends on, and how many wait as spares.
    pub fn send_sections(&self) -> (usize, usize) {
        (self.legs.len(), self.spares.len())
    }
}
