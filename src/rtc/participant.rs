//! One participant's PeerConnection as the server drives it: answers the client's
//! publishing offers, makes offers for what the room says it should receive (one at a
//! time, via the pure [`Negotiator`]), queues early ICE candidates, and opens a
//! subscriber leg per forwarded track once the answer is in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

use super::actor::{RoomCommand, RoomHandle, TrackDesc};
use super::peer::{build_peer, PortAllocator};
use super::{track_in, track_out};
use crate::config::MediaConfig;
use crate::id::{LegId, MediaKind, ParticipantId, TrackId};
use crate::metrics::Metrics;
use crate::room::{ExtMap, LegParams, NegotiationError, Negotiator, TrackInfo};

/// Candidates held while no remote description is set; more means a misbehaving client.
const MAX_QUEUED_CANDIDATES: usize = 64;

/// What the connection reports to the participant's session.
pub enum PeerEvent {
    LocalCandidate(RTCIceCandidateInit),
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid SDP: {0}")]
    BadSdp(String),
    #[error(transparent)]
    Negotiation(#[from] NegotiationError),
    #[error("invalid ICE candidate: {0}")]
    BadCandidate(String),
    #[error("{0}")]
    Internal(String),
}

/// Process-wide id sources, so ids never repeat across rooms.
#[derive(Default)]
pub struct Ids {
    tracks: AtomicU64,
    legs: AtomicU64,
    participants: AtomicU64,
}

impl Ids {
    pub fn participant(&self) -> ParticipantId {
        ParticipantId(self.participants.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn track(&self) -> TrackId {
        TrackId(self.tracks.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn leg(&self) -> LegId {
        LegId(self.legs.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Everything a participant's connection needs from the server.
#[derive(Clone)]
pub struct PeerContext {
    pub media: MediaConfig,
    pub ports: Arc<PortAllocator>,
    pub ids: Arc<Ids>,
    pub metrics: Arc<Metrics>,
}

struct Handler {
    events: mpsc::UnboundedSender<PeerEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.events.send(PeerEvent::LocalCandidate(init));
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PeerEvent::State(state));
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PeerEvent::Track(track));
    }
}

struct Leg {
    id: LegId,
    ssrc: u32,
    sender: Arc<dyn RtpSender>,
    local: Arc<TrackLocalStaticRTP>,
    desc: Arc<TrackDesc>,
}

pub struct ParticipantPeer {
    id: ParticipantId,
    pc: Arc<dyn PeerConnection>,
    room: RoomHandle,
    ctx: PeerContext,
    negotiator: Negotiator,
    wanted: HashMap<TrackId, Arc<TrackDesc>>,
    legs: HashMap<TrackId, Leg>,
    queued_candidates: Vec<RTCIceCandidateInit>,
    remote_description_set: bool,
}

impl ParticipantPeer {
    pub async fn new(
        id: ParticipantId,
        room: RoomHandle,
        ctx: PeerContext,
    ) -> Result<(Self, mpsc::UnboundedReceiver<PeerEvent>), PeerError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler { events: tx });
        let pc = build_peer(&ctx.media, &ctx.ports, handler)
            .await
            .map_err(|e| PeerError::Internal(format!("cannot open a media connection: {e}")))?;
        let peer = ParticipantPeer {
            id,
            pc,
            room,
            ctx,
            negotiator: Negotiator::default(),
            wanted: HashMap::new(),
            legs: HashMap::new(),
            queued_candidates: Vec::new(),
            remote_description_set: false,
        };
        Ok((peer, rx))
    }

    /// The client's (publishing) offer. `Ok(None)` when it collided with the server's
    /// outstanding offer and was ignored: the polite browser rolls back and answers ours.
    pub async fn client_offer(&mut self, sdp: String) -> Result<Option<String>, PeerError> {
        if let Err(NegotiationError::Glare) = self.negotiator.client_offer_received() {
            debug!("client offer ignored: server offer outstanding");
            return Ok(None);
        }
        let result = self.answer_client_offer(sdp).await;
        self.negotiator.client_offer_done(result.is_ok());
        result.map(Some)
    }

    async fn answer_client_offer(&mut self, sdp: String) -> Result<String, PeerError> {
        self.apply_remote(RTCSessionDescription::offer(sdp)).await?;
        let answer = self.pc.create_answer(None).await.map_err(internal)?;
        self.pc
            .set_local_description(answer.clone())
            .await
            .map_err(internal)?;
        debug!("answered a client offer");
        Ok(answer.sdp)
    }

    /// The client's answer to the server's outstanding offer.
    pub async fn client_answer(&mut self, sdp: String) -> Result<(), PeerError> {
        if !self.negotiator.offer_outstanding() {
            return Err(NegotiationError::NoOfferPending.into());
        }
        self.apply_remote(RTCSessionDescription::answer(sdp))
            .await?;
        let plan = self.negotiator.answer_received()?;
        debug!(
            added = plan.add.len(),
            removed = plan.remove.len(),
            "client answered our offer"
        );
        for track in plan.add {
            self.start_leg(track).await;
        }
        Ok(())
    }

    pub async fn add_candidate(&mut self, candidate: RTCIceCandidateInit) -> Result<(), PeerError> {
        if candidate.candidate.is_empty() {
            return Ok(()); // end-of-candidates
        }
        if !self.remote_description_set {
            if self.queued_candidates.len() >= MAX_QUEUED_CANDIDATES {
                return Err(PeerError::BadCandidate(
                    "too many candidates before any offer".into(),
                ));
            }
            self.queued_candidates.push(candidate);
            return Ok(());
        }
        self.pc
            .add_ice_candidate(candidate)
            .await
            .map_err(|e| PeerError::BadCandidate(e.to_string()))
    }

    /// Applies the client's SDP (parsed by the caller), then the candidates that waited
    /// for it. Both a parse and an apply failure are the client's bad SDP.
    async fn apply_remote(
        &mut self,
        desc: webrtc::error::Result<RTCSessionDescription>,
    ) -> Result<(), PeerError> {
        let bad_sdp = |e: webrtc::error::Error| PeerError::BadSdp(e.to_string());
        let desc = desc.map_err(bad_sdp)?;
        self.pc
            .set_remote_description(desc)
            .await
            .map_err(bad_sdp)?;
        self.remote_description_set = true;
        self.flush_candidates().await;
        Ok(())
    }

    async fn flush_candidates(&mut self) {
        for c in std::mem::take(&mut self.queued_candidates) {
            if let Err(e) = self.pc.add_ice_candidate(c).await {
                debug!("queued candidate rejected: {e}");
            }
        }
    }

    /// Gives up waiting for the client's first offer (it publishes nothing).
    pub fn stop_waiting_for_client(&mut self) {
        self.negotiator.stop_waiting_for_client();
    }

    pub fn waiting_for_client(&self) -> bool {
        self.negotiator.waiting_for_client()
    }

    pub fn subscribe(&mut self, desc: Arc<TrackDesc>) {
        let track = desc.info.track_id;
        self.wanted.insert(track, desc);
        self.negotiator.want(track);
    }

    pub fn unsubscribe(&mut self, track: TrackId) {
        self.wanted.remove(&track);
        self.negotiator.unwant(track);
    }

    /// Makes the next server offer if one is due; returns its SDP to send.
    pub async fn next_offer(&mut self) -> Result<Option<String>, PeerError> {
        let Some(plan) = self.negotiator.next_offer() else {
            return Ok(None);
        };
        let result = async {
            for track in &plan.remove {
                self.close_leg(*track).await;
            }
            for track in &plan.add {
                // A track this connection cannot carry (say, a codec the subscriber's
                // browser did not offer) is left out; the rest of the offer goes ahead.
                if let Err(e) = self.add_leg(*track).await {
                    warn!(track = %track, "cannot forward this track to this participant: {e}");
                }
            }
            let offer = self.pc.create_offer(None).await.map_err(internal)?;
            self.pc
                .set_local_description(offer.clone())
                .await
                .map_err(internal)?;
            debug!(add = plan.add.len(), remove = plan.remove.len(), "offering");
            Ok(offer.sdp)
        }
        .await;
        if result.is_err() {
            self.negotiator.offer_failed();
        }
        result.map(Some)
    }

    async fn add_leg(&mut self, track: TrackId) -> Result<(), PeerError> {
        let Some(desc) = self.wanted.get(&track).cloned() else {
            return Ok(());
        };
        let ssrc = rand::random::<u32>();
        let stream_id = desc.info.participant_id.to_string();
        let kind = match desc.info.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
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
        )));
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![stream_id],
            send_encodings: vec![],
        };
        let transceiver = self
            .pc
            .add_transceiver_from_track(local.clone(), Some(init))
            .await
            .map_err(internal)?;
        let sender = transceiver
            .sender()
            .await
            .map_err(internal)?
            .ok_or_else(|| PeerError::Internal("transceiver without a sender".into()))?;
        let id = self.ctx.ids.leg();
        self.legs.insert(
            track,
            Leg {
                id,
                ssrc,
                sender,
                local,
                desc,
            },
        );
        Ok(())
    }

    async fn close_leg(&mut self, track: TrackId) {
        if let Some(leg) = self.legs.remove(&track) {
            self.room.send(RoomCommand::LegClosed { leg: leg.id });
            if let Err(e) = self.pc.remove_track(&leg.sender).await {
                debug!("remove_track: {e}");
            }
        }
    }

    /// The answer is in: read what the leg negotiated and hand it to the room.
    async fn start_leg(&mut self, track: TrackId) {
        let Some(leg) = self.legs.get(&track) else {
            return;
        };
        let params = match leg.sender.get_parameters().await {
            Ok(p) => p.rtp_parameters,
            Err(e) => {
                warn!(track = %track, "leg parameters unavailable: {e}");
                return;
            }
        };
        let want = &leg.desc.codec;
        let codec = params
            .codecs
            .iter()
            .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&want.mime_type))
            .max_by_key(|c| c.rtp_codec.sdp_fmtp_line == want.sdp_fmtp_line);
        let Some(codec) = codec else {
            warn!(track = %track, codec = %want.mime_type, "subscriber did not accept the publisher's codec");
            return;
        };
        let outgoing: Vec<(u8, &str)> = params
            .header_extensions
            .iter()
            .map(|e| (e.id as u8, e.uri.as_str()))
            .collect();
        let ext_map = ExtMap::between(
            leg.desc
                .extensions
                .iter()
                .map(|(id, uri)| (*id, uri.as_str())),
            &outgoing,
        );
        let queue = track_out::open_leg(
            leg.local.clone(),
            track,
            self.room.clone(),
            self.ctx.metrics.clone(),
        );
        self.room.send(RoomCommand::LegReady {
            leg: leg.id,
            subscriber: self.id,
            track,
            params: LegParams {
                ssrc: leg.ssrc,
                payload_type: codec.payload_type,
                ext_map,
            },
            queue,
        });
    }

    /// A track the client publishes arrived: tell the room and start pumping its packets.
    pub async fn publish(&mut self, track: Arc<dyn TrackRemote>) {
        let Some(ssrc) = track.ssrcs().await.first().copied() else {
            return;
        };
        let Some(codec) = track.codec(ssrc).await else {
            return;
        };
        let kind = match track.kind().await {
            RtpCodecKind::Audio => MediaKind::Audio,
            _ => MediaKind::Video,
        };
        let remote_track_id = track.track_id().await;
        let mut extensions = Vec::new();
        for receiver in self.pc.get_receivers().await {
            if receiver.track().track_id().await == remote_track_id {
                if let Ok(p) = receiver.get_parameters().await {
                    extensions = p
                        .rtp_parameters
                        .header_extensions
                        .iter()
                        .map(|e| (e.id as u8, e.uri.clone()))
                        .collect();
                }
                break;
            }
        }
        let id = self.ctx.ids.track();
        debug!(track = %id, %kind, codec = %codec.mime_type, "publishing");
        let desc = Arc::new(TrackDesc {
            info: TrackInfo {
                track_id: id,
                participant_id: self.id,
                kind,
            },
            codec,
            extensions,
        });
        self.room.send(RoomCommand::Publish {
            owner: self.id,
            desc,
            remote: track.clone(),
            ssrc,
        });
        tokio::spawn(track_in::pump(
            track,
            id,
            self.room.clone(),
            self.ctx.metrics.clone(),
        ));
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

fn internal(e: webrtc::error::Error) -> PeerError {
    PeerError::Internal(e.to_string())
}
