//! Offer/answer on one participant's connection, driven by the pure [`Negotiator`]:
//! answering the browser's (publishing) offers, making the server's offers for what the
//! room says it should receive (one at a time), and queueing early ICE candidates.
//!
//! [`Negotiator`]: crate::room::Negotiator

use std::collections::HashMap;
use std::time::Instant;

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use tracing::{debug, warn};

use super::legs::LegReady;
use super::peer::Peer;
use super::{EngineError, Ids};
use crate::auth::Source;
use crate::id::LegId;
use crate::room::NegotiationError;

/// Candidates held while no remote description is set; more means a misbehaving client.
const MAX_QUEUED_CANDIDATES: usize = 64;
/// Candidates a client may add for one description of its own. A browser gathers a
/// dozen or two (host, srflx and relay, per interface and protocol); each one is a pair
/// rtc checks and keeps.
const MAX_REMOTE_CANDIDATES: usize = 64;
/// Tracks one offer may send: the web client sends a camera, a microphone and a screen
/// share (with its audio); each sent track becomes a leg for every other participant.
pub const MAX_SENT_TRACKS: usize = 8;

pub(super) fn internal(e: impl std::fmt::Display) -> EngineError {
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
        let sending = sent_sections(&sdp);
        if sending > MAX_SENT_TRACKS {
            return Err(EngineError::BadSdp(format!(
                "an offer may send at most {MAX_SENT_TRACKS} tracks ({sending} here)"
            )));
        }
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
        if let Err(e) = self.apply_remote(RTCSessionDescription::answer(sdp), now) {
            self.answer_failed(now);
            return Err(e);
        }
        let plan = self.negotiator.answer_received()?;
        self.spares_negotiated();
        let mut ready = Vec::with_capacity(plan.add.len());
        for track in plan.add {
            match self.leg_ready(track) {
                Some(leg) => ready.push(leg),
                // Refused by the subscriber (its codec, say): the m-section goes back to
                // the spares, and the track is tried again with the next offer.
                None => {
                    self.retire_leg(track);
                    self.negotiator.not_carried(track);
                }
            }
        }
        Ok(ready)
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
        if self.remote_candidates >= MAX_REMOTE_CANDIDATES {
            return Err(EngineError::BadCandidate(format!(
                "at most {MAX_REMOTE_CANDIDATES} candidates per description"
            )));
        }
        self.remote_candidates += 1;
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
        self.remote_candidates = 0;
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
        let closed: Vec<LegId> = plan
            .remove
            .iter()
            .filter_map(|track| self.retire_leg(*track))
            .collect();
        for track in &plan.add {
            // A track this connection cannot carry (say, a codec the subscriber's browser
            // did not offer) is left out and tried again with the next offer.
            if let Err(e) = self.add_leg(*track, ids) {
                warn!(track = %track, "cannot forward this track to this participant: {e}");
                self.negotiator.not_carried(*track);
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
                // The legs it prepared go back to the spares; the next attempt plans afresh.
                for track in &plan.add {
                    self.retire_leg(*track);
                }
                self.negotiator.offer_failed();
                Err(e)
            }
        }
    }

    /// The client's answer could not be applied: roll the offer back, so the connection
    /// is stable and both sides may offer again. What the offer added is retired (its
    /// legs never started); what it removed stays removed and is planned again. A
    /// connection that cannot even roll back is beyond repair: the participant is
    /// removed, and the client, told why, joins afresh.
    fn answer_failed(&mut self, now: Instant) {
        let rolled_back = RTCSessionDescription::rollback(None)
            .and_then(|rollback| self.pc.set_local_description(now, rollback));
        if let Err(e) = rolled_back {
            warn!(participant = %self.id, "cannot roll back a failed offer: {e}");
            self.doomed.get_or_insert("negotiation failed");
        }
        if let Some(plan) = self.negotiator.answer_failed() {
            for track in plan.add {
                self.retire_leg(track);
            }
        }
    }
}

/// How many media sections of a client's SDP send (sendrecv or sendonly; a section
/// without a direction attribute is sendrecv). Read before rtc parses anything, so a
/// flood of sections is refused for the cost of a line scan.
pub fn sent_sections(sdp: &str) -> usize {
    let mut sending = 0;
    for section in sdp.split("\nm=").skip(1) {
        if section.starts_with("application") {
            continue;
        }
        let direction = section.lines().map(str::trim).find(|l| {
            matches!(
                *l,
                "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
            )
        });
        if matches!(direction, None | Some("a=sendrecv") | Some("a=sendonly")) {
            sending += 1;
        }
    }
    sending
}

#[cfg(test)]
mod sent_sections_tests {
    use super::sent_sections;

    #[test]
    fn counts_the_sections_that_send() {
        let sdp = "v=0\r\ns=-\r\nm=audio 9 UDP\r\na=sendrecv\r\nm=video 9 UDP\r\na=recvonly\r\n\
                   m=video 9 UDP\r\na=sendonly\r\nm=application 9 UDP\r\nm=video 9 UDP\r\na=mid:4\r\n\
                   m=audio 9 UDP\r\na=inactive\r\n";
        assert_eq!(
            sent_sections(sdp),
            3,
            "sendrecv, sendonly and one without a direction"
        );
        assert_eq!(sent_sections("garbage"), 0);
    }
}
