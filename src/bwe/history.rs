//! What was sent on a connection, by transport-wide sequence number, so feedback can be
//! matched to departure times and sizes. A fixed ring: recording is O(1) and nothing
//! has to be pruned.

use std::time::{Duration, Instant};

use crate::bitrate::BitrateMeter;

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
    /// Feedback has covered it already.
    pub reported: bool,
}

#[derive(Debug)]
pub struct SendHistory {
    slots: Box<[Option<Sent>]>,
    next_seq: u16,
    /// What is being sent now (the last 250-500 ms).
    sent: BitrateMeter,
}

impl Default for SendHistory {
    fn default() -> Self {
        SendHistory {
            slots: vec![None; SLOTS].into_boxed_slice(),
            next_seq: 0,
            sent: BitrateMeter::with_bucket(Duration::from_millis(250)),
        }
    }
}

impl SendHistory {
    /// Takes the next transport-wide sequence number for a packet leaving now.
    pub fn record(&mut self, size: usize, probe: Option<u32>, now: Instant) -> u16 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.sent.add(size, now);
        self.slots[seq as usize % SLOTS] = Some(Sent {
            seq,
            departure: now,
            size: size.min(u16::MAX as usize) as u16,
            probe,
            reported: false,
        });
        seq
    }

    /// What has been sent over the last 250-500 ms, in bits per second.
    pub fn sent_bitrate(&self, now: Instant) -> u64 {
        self.sent.bits_per_second(now)
    }

    /// The packet sent with `seq`, if it is still remembered.
    pub fn get(&self, seq: u16) -> Option<Sent> {
        self.slots[seq as usize % SLOTS].filter(|s| s.seq == seq)
    }

    /// The packet sent with `seq` the first time feedback covers it; `None` after that.
    ///
    /// Browsers report packets again: libwebrtc's feedback generator rewinds to any
    /// packet that arrives with an older transport-wide number than it has reported,
    /// and a NACK retransmission (rtc resends the packet as it was, number included) is
    /// one. Under loss it then re-reports up to half a second of packets in every
    /// feedback, and counting those again read a 600 kbit/s link as 7 Mbit/s.
    pub fn report(&mut self, seq: u16) -> Option<Sent> {
        let slot = self.slots[seq as usize % SLOTS].as_mut()?;
        if slot.seq != seq || slot.reported {
            return None;
        }
        slot.reported = true;
        Some(*slot)
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

    #[test]
    fn each_packet_is_reported_once() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        let seq = h.record(100, None, t0);
        assert_eq!(h.report(seq).map(|s| s.size), Some(100));
        assert_eq!(h.report(seq), None, "a repeated report");
        assert_eq!(h.report(seq.wrapping_add(1)), None, "never sent");
    }
}
