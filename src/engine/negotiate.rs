//! Offer/answer on one participant's connection, driven by the pure [`Negotiator`]:
//! answering the browser's (publishing) offers, making the server's offers for what the
//! room says it should receive (one at a time), and queueing early ICE candidates.
//!
//! [`Negotiator`]: crate::room::Negotiator

use std::collections::HashMap;
use std::time::Instant;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tracing::{debug, warn};

use super::peer::{Peer, SubscribedLeg};
use super::{EngineError, Ids};
use crate::auth::Source;
use crate::id::{LegId, MediaKind, TrackId};
use crate::room::{ExtMap, LegParams, NegotiationError};

/// Candidates held while no remote description is set; more means a misbehaving client.
const MAX_QUEUED_CANDIDATES: usize = 64;

/// A leg the subscriber's answer just made real: the room may start forwarding on it.
pub struct LegReady {
    pub leg: LegId,
    pub track: TrackId,
    pub params: LegParams,
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

fn bad_sdp(e: impl std::fmt::Display) -> EngineError {
    EngineError::BadSdp(e.to_string())
}

impl Peer {
    /// The client's (publishing) offer. `Ok(None)` when it collided with the server's
    /// outstanding offer and was ignored: the polite browser rolls back and answers ours.
    pub fn client_offer(
        &mut self,
        sdp: String,
        sources: HashMap<String, Source>,
        now: Instant,
    ) -> Result<Option<String>, EngineError> {
        if let Err(NegotiationError::Glare) = self.negotiator.client_offer_received() {
            debug!("client offer ignored: server offer outstanding");
            return Ok(None);
        }
        // Read when its tracks open, which setting this offer may do.
        self.sources = sources;
        let result = self.answer_client_offer(sdp, now);
        self.negotiator.client_offer_done(result.is_ok());
        result.map(Some)
    }

    fn answer_client_offer(&mut self, sdp: String, now: Instant) -> Result<String, EngineError> {
        self.apply_remote(RTCSessionDescription::offer(sdp), now)?;
        let answer = self.pc.create_answer(None).map_err(internal)?;
        self.pc
            .set_local_description(now, answer.clone())
            .map_err(internal)?;
        self.local_description_changed = true; // an ICE restart changes our ufrag
        Ok(answer.sdp)
    }

    /// Published tracks (by rtc's track id) whose m-section the client's last offer
    /// stopped receiving on: `removeTrack` made it inactive, or it was stopped. rtc
    /// reports no track closing for these, so the shard unpublishes them.
    pub fn stopped_publications(&mut self) -> Vec<String> {
        let receiving = self.read_transceivers(|t| {
            let on = matches!(
                t.current_direction(),
                RTCRtpTransceiverDirection::Recvonly | RTCRtpTransceiverDirection::Sendrecv
            );
            on.then(|| t.mid().clone()).flatten()
        });
        self.published
            .iter()
            .filter(|(_, p)| !receiving.contains(&p.mid))
            .map(|(track, _)| track.clone())
            .collect()
    }

    /// The client's answer to the server's outstanding offer: returns the legs to start.
    pub fn client_answer(
        &mut self,
        sdp: String,
        now: Instant,
    ) -> Result<Vec<LegReady>, EngineError> {
        if !self.negotiator.offer_outstanding() {
            return Err(NegotiationError::NoOfferPending.into());
        }
        self.apply_remote(RTCSessionDescription::answer(sdp), now)?;
        let plan = self.negotiator.answer_received()?;
        Ok(plan
            .add
            .iter()
            .filter_map(|track| self.leg_ready(*track))
            .collect())
    }

    pub fn add_candidate(&mut self, candidate: RTCIceCandidateInit) -> Result<(), EngineError> {
        if candidate.candidate.is_empty() {
            return Ok(()); // end-of-candidates
        }
        if !self.remote_description_set {
            if self.queued_candidates.len() >= MAX_QUEUED_CANDIDATES {
                return Err(EngineError::BadCandidate(
                    "too many candidates before any offer".into(),
                ));
            }
            self.queued_candidates.push(candidate);
            return Ok(());
        }
        self.pc
            .add_remote_candidate(candidate)
            .map_err(|e| EngineError::BadCandidate(e.to_string()))
    }

    /// Applies the client's SDP, then the candidates that waited for it. Both a parse
    /// and an apply failure are the client's bad SDP.
    fn apply_remote(
        &mut self,
        desc: rtc::shared::error::Result<RTCSessionDescription>,
        now: Instant,
    ) -> Result<(), EngineError> {
        let desc = desc.map_err(bad_sdp)?;
        self.pc.set_remote_description(now, desc).map_err(bad_sdp)?;
        self.remote_description_set = true;
        for c in std::mem::take(&mut self.queued_candidates) {
            if let Err(e) = self.pc.add_remote_candidate(c) {
                debug!("queued candidate rejected: {e}");
            }
        }
        Ok(())
    }

    /// Makes the next server offer if one is due. Returns its SDP and the legs it closed.
    pub fn next_offer(
        &mut self,
        ids: &Ids,
        now: Instant,
    ) -> Result<Option<(String, Vec<LegId>)>, EngineError> {
        let Some(plan) = self.negotiator.next_offer() else {
            return Ok(None);
        };
        let mut closed = Vec::new();
        for track in &plan.remove {
            if let Some(leg) = self.legs.remove(track) {
                closed.push(leg.leg);
                if let Err(e) = self.pc.remove_track(leg.sender) {
                    debug!("remove_track: {e}");
                }
            }
        }
        for track in &plan.add {
            // A track this connection cannot carry (say, a codec the subscriber's browser
            // did not offer) is left out; the rest of the offer goes ahead.
            if let Err(e) = self.add_leg(*track, ids) {
                warn!(track = %track, "cannot forward this track to this participant: {e}");
            }
        }
        let offer = self
            .pc
            .create_offer(None)
            .and_then(|offer| {
                self.pc.set_local_description(now, offer.clone())?;
                self.local_description_changed = true;
                Ok(offer)
            })
            .map_err(internal);
        match offer {
            Ok(offer) => Ok(Some((offer.sdp, closed))),
            Err(e) => {
                self.negotiator.offer_failed();
                Err(e)
            }
        }
    }

    fn add_leg(&mut self, track: TrackId, ids: &Ids) -> Result<(), EngineError> {
        let Some(desc) = self.wanted.get(&track).cloned() else {
            return Ok(());
        };
        let ssrc = rand::random::<u32>();
        let stream_id = desc.info.participant_id.to_string();
        let kind = match desc.info.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let local = MediaStreamTrack::new(
            stream_id.clone(),
            track.to_string(),
            track.to_string(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: desc.codec.clone(),
                ..Default::default()
            }],
        );
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![stream_id],
            send_encodings: vec![],
        };
        let transceiver = self
            .pc
            .add_transceiver_from_track(local, Some(init))
            .map_err(internal)?;
        let sender = self
            .pc
            .rtp_transceiver(transceiver)
            .and_then(|t| t.sender())
            .ok_or_else(|| internal("transceiver without a sender"))?;
        self.legs.insert(
            track,
            SubscribedLeg {
                leg: ids.leg(),
                ssrc,
                sender,
                desc,
            },
        );
        Ok(())
    }

    /// The answer is in: read what the leg negotiated.
    fn leg_ready(&mut self, track: TrackId) -> Option<LegReady> {
        let leg = self.legs.get(&track)?;
        let (leg_id, ssrc, desc, sender) = (leg.leg, leg.ssrc, leg.desc.clone(), leg.sender);
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
            .find(|(_, uri)| *uri == super::downlink::TRANSPORT_CC_URI)
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
        })
    }
}
