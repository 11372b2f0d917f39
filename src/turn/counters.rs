//! What the embedded TURN server counts: `/api/stats` shows them under `turn`, and
//! `/metrics` as the `switchyard_turn_*` series.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::gate::Refusal;

#[derive(Debug, Default)]
pub struct TurnCounters {
    /// Allocations made, and those held now.
    pub allocations: AtomicU64,
    pub allocations_now: AtomicU64,
    /// Requests refused (dropped) before the TURN library saw them, by cause.
    pub refused_credential: AtomicU64,
    pub refused_participant_quota: AtomicU64,
    pub refused_total_quota: AtomicU64,
    pub refused_forbidden_peer: AtomicU64,
    pub refused_tcp_relay: AtomicU64,
    /// Error responses the TURN library sent: bad, unknown or revoked credentials (a
    /// departed participant's), the first unauthenticated request of every client,
    /// stale nonces, malformed requests.
    pub error_responses: AtomicU64,
    /// Bytes relayed from clients to peers and from peers to clients.
    pub relayed_bytes_to_peers: AtomicU64,
    pub relayed_bytes_to_clients: AtomicU64,
    /// Datagrams and frames dropped: a full queue towards a client or into the service,
    /// or a send the kernel refused.
    pub dropped: AtomicU64,
    /// TCP and TLS client connections accepted; refused (over the cap, a failed or slow
    /// TLS handshake); closed by a deadline (no first frame, idle, a write not taken);
    /// closed for a frame that was no TURN frame or too large.
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_timed_out: AtomicU64,
    pub frames_refused: AtomicU64,
}

impl TurnCounters {
    pub fn refused(&self, why: Refusal) {
        let c = match why {
            Refusal::Credential => &self.refused_credential,
            Refusal::ParticipantQuota => &self.refused_participant_quota,
            Refusal::TotalQuota => &self.refused_total_quota,
            Refusal::ForbiddenPeer => &self.refused_forbidden_peer,
            Refusal::TcpRelay => &self.refused_tcp_relay,
        };
        c.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> TurnSnapshot {
        let l = |c: &AtomicU64| c.load(Relaxed);
        TurnSnapshot {
            allocations: l(&self.allocations),
            allocations_now: l(&self.allocations_now),
            refused_credential: l(&self.refused_credential),
            refused_participant_quota: l(&self.refused_participant_quota),
            refused_total_quota: l(&self.refused_total_quota),
            refused_forbidden_peer: l(&self.refused_forbidden_peer),
            refused_tcp_relay: l(&self.refused_tcp_relay),
            error_responses: l(&self.error_responses),
            relayed_bytes_to_peers: l(&self.relayed_bytes_to_peers),
            relayed_bytes_to_clients: l(&self.relayed_bytes_to_clients),
            dropped: l(&self.dropped),
            connections_accepted: l(&self.connections_accepted),
            connections_refused: l(&self.connections_refused),
            connections_timed_out: l(&self.connections_timed_out),
            frames_refused: l(&self.frames_refused),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TurnSnapshot {
    pub allocations: u64,
    pub allocations_now: u64,
    pub refused_credential: u64,
    pub refused_participant_quota: u64,
    pub refused_total_quota: u64,
    pub refused_forbidden_peer: u64,
    pub refused_tcp_relay: u64,
    pub error_responses: u64,
    pub relayed_bytes_to_peers: u64,
    pub relayed_bytes_to_clients: u64,
    pub dropped: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub connections_timed_out: u64,
    pub frames_refused: u64,
}
