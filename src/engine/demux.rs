//! Which peer connection a datagram on the shared UDP port belongs to. Pure: no sockets.
//!
//! Every participant of a shard shares one port, so the 5-tuple alone cannot name the
//! connection before ICE has run. A STUN binding request names it: its USERNAME is
//! "<our ufrag>:<their ufrag>", and our ufrag is unique per connection. Every other
//! datagram (STUN responses, DTLS, SRTP, SRTCP) is routed by its source address.
//!
//! An address is learned only when the connection itself sends to it ([`Demux::learn`],
//! called by the shard for every outgoing run of datagrams): the ICE agent answers only
//! requests whose MESSAGE-INTEGRITY it verified, so a rogue that knows a ufrag (it is in
//! the SDP) but not the password cannot make the shard route its datagrams to that
//! connection. A new address (ICE nominating another pair, a NAT rebinding, an ICE
//! restart) is learned the same way, from the answer to its first check.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

/// STUN's magic cookie (RFC 5389), bytes 4..8 of every STUN message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_HEADER: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;
/// Addresses remembered per connection; a flood of checks from new ports evicts the oldest.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// What kind of packet a datagram is (RFC 7983 demultiplexing on the first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    Rtp,
    Unknown,
}

pub fn classify(b: &[u8]) -> Kind {
    match b.first() {
        Some(0..=3) if is_stun(b) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) if b.len() >= 12 => Kind::Rtp,
        _ => Kind::Unknown,
    }
}

fn is_stun(b: &[u8]) -> bool {
    b.len() >= STUN_HEADER && b[0] <= 3 && b[4..8] == MAGIC_COOKIE
}

/// The local (our) ufrag of a STUN message's USERNAME, if it has one.
/// Never reads past the datagram or the STUN length, whatever the attribute lengths say.
pub fn stun_local_ufrag(b: &[u8]) -> Option<&[u8]> {
    if !is_stun(b) {
        return None;
    }
    let end = (STUN_HEADER + u16::from_be_bytes([b[2], b[3]]) as usize).min(b.len());
    let mut i = STUN_HEADER;
    while i + 4 <= end {
        let typ = u16::from_be_bytes([b[i], b[i + 1]]);
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        let value = b.get(i + 4..i + 4 + len)?;
        if typ == ATTR_USERNAME {
            let colon = value.iter().position(|&c| c == b':')?;
            return Some(&value[..colon]);
        }
        i += 4 + ((len + 3) & !3);
    }
    None
}

/// Why a datagram reached no connection (each is a counter, never a log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// A STUN request naming a ufrag we never issued.
    UnknownUfrag,
    /// Not a STUN request, from an address no connection has used.
    UnknownAddress,
    /// Not STUN, DTLS or RTP/RTCP at all.
    Garbage,
}

/// The demultiplexing table of one shard. `K` is the connection's key.
#[derive(Debug)]
pub struct Demux<K> {
    by_ufrag: HashMap<Box<[u8]>, K>,
    by_addr: HashMap<SocketAddr, K>,
    addrs_of: HashMap<K, Vec<SocketAddr>>,
}

impl<K> Default for Demux<K> {
    fn default() -> Self {
        Demux {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            addrs_of: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Demux<K> {
    pub fn add(&mut self, key: K, ufrag: &str) {
        self.by_ufrag.insert(ufrag.as_bytes().into(), key);
        self.addrs_of.entry(key).or_default();
    }

    /// The connection's ufrag is now `ufrag` (an ICE restart): STUN naming the old one
    /// no longer reaches it. The addresses it uses stay its own.
    pub fn follow(&mut self, key: K, ufrag: &str) {
        self.by_ufrag.retain(|_, k| *k != key);
        self.add(key, ufrag);
    }

    /// Forgets a connection: its ufrag and every address it used.
    pub fn remove(&mut self, key: K) {
        self.by_ufrag.retain(|_, k| *k != key);
        for addr in self.addrs_of.remove(&key).unwrap_or_default() {
            if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// The connection a STUN request names by its ufrag (how a new ICE-TCP connection
    /// finds its participant); `None` for anything else.
    pub fn stun_owner(&self, frame: &[u8]) -> Option<K> {
        match classify(frame) {
            Kind::Stun => self.by_ufrag.get(stun_local_ufrag(frame)?).copied(),
            _ => None,
        }
    }

    /// The connection a datagram from `from` belongs to.
    pub fn route(&mut self, datagram: &[u8], from: SocketAddr) -> Result<K, Miss> {
        match classify(datagram) {
            Kind::Stun => match stun_local_ufrag(datagram) {
                Some(ufrag) => self.by_ufrag.get(ufrag).copied().ok_or(Miss::UnknownUfrag),
                // Responses (to our triggered checks and keepalives) carry no USERNAME:
                // they come from an address the connection already answered.
                None => self.by_addr.get(&from).copied().ok_or(Miss::UnknownAddress),
            },
            Kind::Dtls | Kind::Rtp => self.by_addr.get(&from).copied().ok_or(Miss::UnknownAddress),
            Kind::Unknown => Err(Miss::Garbage),
        }
    }

    /// The connection `key` sends to `from`: datagrams from there are its from now on.
    pub fn learn(&mut self, key: K, from: SocketAddr) {
        if self.by_addr.get(&from) == Some(&key) {
            return;
        }
        if let Some(previous) = self.by_addr.insert(from, key) {
            // The address moved to another connection (a client reused its port).
            if let Some(addrs) = self.addrs_of.get_mut(&previous) {
                addrs.retain(|a| *a != from);
            }
        }
        let addrs = self.addrs_of.entry(key).or_default();
        addrs.push(from);
        if addrs.len() > MAX_ADDRS_PER_PEER {
            let oldest = addrs.remove(0);
            if self.by_addr.get(&oldest) == Some(&key) {
                self.by_addr.remove(&oldest);
            }
        }
    }

    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request with USERNAME "<local>:<remote>" (no integrity: the demux does
    /// not check it, the connection does).
    pub fn binding_request(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7u8; 12]);
        m.extend_from_slice(&attr);
        m
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn stun_routes_by_ufrag_then_the_address_is_learned() {
        let mut d = Demux::default();
        d.add(1u32, "aaaa");
        d.add(2u32, "bbbb");
        let rtp = [0x80u8, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(d.route(&rtp, addr(5000)), Err(Miss::UnknownAddress));
        assert_eq!(d.route(&binding_request("bbbb:xyz"), addr(5000)), Ok(2));
        assert_eq!(
            d.route(&rtp, addr(5000)),
            Err(Miss::UnknownAddress),
            "a request alone teaches nothing: its integrity is not checked yet"
        );
        d.learn(2, addr(5000)); // the connection answered it
        assert_eq!(d.route(&rtp, addr(5000)), Ok(2));
        assert_eq!(d.route(&[22, 254, 253], addr(5000)), Ok(2), "DTLS too");
        assert_eq!(
            d.route(&binding_request("cccc:xyz"), addr(5001)),
            Err(Miss::UnknownUfrag)
        );
        assert_eq!(d.route(&[0xffu8; 40], addr(5000)), Err(Miss::Garbage));
        let mut response = binding_request("x:y")[..20].to_vec();
        response[0..4].copy_from_slice(&[0x01, 0x01, 0, 0]); // success, no attributes
        assert_eq!(
            d.route(&response, addr(5000)),
            Ok(2),
            "a response goes by address"
        );
        assert_eq!(d.route(&response, addr(5009)), Err(Miss::UnknownAddress));
        d.remove(2);
        assert_eq!(d.route(&rtp, addr(5000)), Err(Miss::UnknownAddress));
        assert_eq!(d.addresses(), 0);
    }

    #[test]
    fn addresses_per_connection_are_bounded() {
        let mut d = Demux::default();
        d.add(1u32, "u");
        for port in 0..100 {
            d.learn(1, addr(10_000 + port));
        }
        assert_eq!(d.addresses(), MAX_ADDRS_PER_PEER);
    }

    #[test]
    fn an_address_taken_over_by_another_connection_moves() {
        let mut d = Demux::default();
        d.add(1u32, "a");
        d.add(2u32, "b");
        d.learn(1, addr(7));
        d.learn(2, addr(7));
        d.remove(1);
        assert_eq!(d.route(&[0x80u8; 12], addr(7)), Ok(2));
    }

    #[test]
    fn truncated_and_lying_stun_never_reads_out_of_bounds() {
        let good = binding_request("abc:def");
        for cut in 0..good.len() {
            let _ = stun_local_ufrag(&good[..cut]);
        }
        let mut lying = good.clone();
        lying[22] = 0xff; // USERNAME length far beyond the datagram
        lying[23] = 0xff;
        assert_eq!(stun_local_ufrag(&lying), None);
        assert_eq!(stun_local_ufrag(&good), Some(&b"abc"[..]));
    }
}
