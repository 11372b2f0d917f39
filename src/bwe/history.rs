//! What was sent on a connection, by transport-wide sequence number, so feedback can be
//! matched to departure times and sizes. A fixed ring: recording is O(1) and nothing
//! has to be pruned.

use std::time::Instant;

/// Packets remembered: at 2,000 packets/s (a large meeting's downlink) one second,
/// longer than feedback ever takes to come back (browsers send it every 50-100 ms).
const SLOTS: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    pub seq: u16,
    pub departure: Instant,
    pub size: u16,
    /// The probe cluster it belongs to (padding sent to measure), if any.
    pub probe: Option<u32>,
}

#[derive(Debug)]
pub struct SendHistory {
    slots: Box<[Option<Sent>]>,
    next_seq: u16,
}

impl Default for SendHistory {
    fn default() -> Self {
        SendHistory {
            slots: vec![None; SLOTS].into_boxed_slice(),
            next_seq: 0,
        }
    }
}

impl SendHistory {
    /// Takes the next transport-wide sequence number for a packet leaving now.
    pub fn record(&mut self, size: usize, probe: Option<u32>, now: Instant) -> u16 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.slots[seq as usize % SLOTS] = Some(Sent {
            seq,
            departure: now,
            size: size.min(u16::MAX as usize) as u16,
            probe,
        });
        seq
    }

    /// The packet sent with `seq`, if it is still remembered.
    pub fn get(&self, seq: u16) -> Option<Sent> {
        self.slots[seq as usize % SLOTS].filter(|s| s.seq == seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_slots_and_forgets_older_ones() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        for i in 0..(SLOTS + 10) {
            assert_eq!(h.record(100, None, t0), i as u16);
        }
        assert_eq!(h.get(5), None, "overwritten");
        assert_eq!(h.get(SLOTS as u16 + 5).map(|s| s.size), Some(100));
        assert_eq!(h.get(SLOTS as u16 + 20), None, "never sent");
    }
}
