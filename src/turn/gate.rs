//! What the embedded TURN server lets through, decided before and after the TURN
//! protocol library sees a message: expired credentials, allocations over quota, and
//! relaying to peers other than this server's own media addresses. Pure: the service
//! (service.rs) asks, this answers and keeps the ledger.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Why a request or a relayed datagram was refused; each is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A username whose expiry (`EXPIRY:PARTICIPANT`) has passed, or not of that form.
    /// (Unknown, forged and revoked credentials meet the library's 401.)
    Credential,
    /// The participant already holds its share of allocations.
    ParticipantQuota,
    /// The server holds as many allocations as it allows.
    TotalQuota,
    /// A permission, channel or datagram for a peer that is not one of ours.
    ForbiddenPeer,
    /// A TCP relay (RFC 6062): media never needs one.
    TcpRelay,
}

/// The participant a TURN username names, if it is ours and not expired.
/// `EXPIRY:PARTICIPANT` as auth/turn.rs makes them.
pub fn check_username(username: &str, now_unix: u64) -> Result<&str, Refusal> {
    let (expiry, who) = username.split_once(':').ok_or(Refusal::Credential)?;
    let expiry: u64 = expiry.parse().map_err(|_| Refusal::Credential)?;
    if expiry < now_unix || who.is_empty() {
        return Err(Refusal::Credential);
    }
    Ok(who)
}

/// The peers allocations may relay to: by default this server's media addresses only
/// (a TURN server that relays anywhere is an open proxy), plus what the operator adds.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    /// Exact media sockets (every shard's port on every address it is reached at).
    media: Vec<SocketAddr>,
    /// Operator-allowed IP addresses (any port).
    extra: Vec<IpAddr>,
}

impl PeerPolicy {
    pub fn new(media: Vec<SocketAddr>, extra: Vec<IpAddr>) -> Self {
        Self { media, extra }
    }

    /// May a permission (which RFC 8656 makes per IP address) be installed for `ip`?
    pub fn permits_ip(&self, ip: IpAddr) -> bool {
        self.extra.contains(&ip) || self.media.iter().any(|m| m.ip() == ip)
    }

    /// May a datagram be relayed to `peer`? Exact media sockets, or an allowed IP.
    pub fn permits(&self, peer: SocketAddr) -> bool {
        self.extra.contains(&peer.ip()) || self.media.contains(&peer)
    }
}

/// The allocations held, by relayed address, and who holds them.
#[derive(Debug, Default)]
pub struct Ledger {
    per_participant: usize,
    total: usize,
    /// Relayed address -> the participant holding it.
    held: HashMap<SocketAddr, String>,
    by_participant: HashMap<String, usize>,
}

impl Ledger {
    pub fn new(per_participant: usize, total: usize) -> Self {
        Self {
            per_participant,
            total,
            ..Self::default()
        }
    }

    /// May `participant` take one more allocation?
    pub fn admit(&self, participant: &str) -> Result<(), Refusal> {
        if self.held.len() >= self.total {
            return Err(Refusal::TotalQuota);
        }
        if self.by_participant.get(participant).copied().unwrap_or(0) >= self.per_participant {
            return Err(Refusal::ParticipantQuota);
        }
        Ok(())
    }

    pub fn hold(&mut self, relayed: SocketAddr, participant: &str) {
        if self.held.insert(relayed, participant.to_string()).is_none() {
            *self
                .by_participant
                .entry(participant.to_string())
                .or_default() += 1;
        }
    }

    pub fn release(&mut self, relayed: SocketAddr) {
        if let Some(who) = self.held.remove(&relayed) {
            if let Some(n) = self.by_participant.get_mut(&who) {
                *n -= 1;
                if *n == 0 {
                    self.by_participant.remove(&who);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_expire_and_name_their_participant() {
        assert_eq!(check_username("200:p7", 100), Ok("p7"));
        assert_eq!(check_username("200:p7", 200), Ok("p7"));
        assert_eq!(check_username("99:p7", 100), Err(Refusal::Credential));
        assert_eq!(check_username("p7", 100), Err(Refusal::Credential));
        assert_eq!(check_username("soon:p7", 100), Err(Refusal::Credential));
        assert_eq!(check_username("200:", 100), Err(Refusal::Credential));
        assert_eq!(check_username("", 100), Err(Refusal::Credential));
    }

    #[test]
    fn only_our_media_sockets_are_peers_unless_the_operator_adds_some() {
        let media: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let policy = PeerPolicy::new(vec![media], vec!["10.1.2.3".parse().unwrap()]);
        assert!(policy.permits(media));
        assert!(!policy.permits("127.0.0.1:5001".parse().unwrap()));
        assert!(policy.permits_ip("127.0.0.1".parse().unwrap()));
        assert!(!policy.permits_ip("127.0.0.2".parse().unwrap()));
        assert!(policy.permits("10.1.2.3:9".parse().unwrap()));
        assert!(!PeerPolicy::default().permits(media));
    }

    #[test]
    fn quotas_hold_per_participant_and_in_total_and_free_on_release() {
        let mut ledger = Ledger::new(2, 3);
        let a1: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a2: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let b1: SocketAddr = "127.0.0.1:3".parse().unwrap();
        ledger.hold(a1, "p1");
        ledger.hold(a2, "p1");
        assert_eq!(ledger.admit("p1"), Err(Refusal::ParticipantQuota));
        assert_eq!(ledger.admit("p2"), Ok(()));
        ledger.hold(b1, "p2");
        assert_eq!(ledger.admit("p3"), Err(Refusal::TotalQuota));
        ledger.release(a1);
        ledger.release(a1);
        assert_eq!(ledger.len(), 2);
        assert_eq!(ledger.admit("p1"), Ok(()));
        ledger.release(a2);
        ledger.release(b1);
        assert_eq!(ledger.len(), 0);
        assert!(ledger.by_participant.is_empty());
    }
}
