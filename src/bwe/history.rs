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
    /// The highest sequence number feedback has covered.
    highest_reported: Option<u16>,
    /// Packets feedback skipped over without covering them since the last
    /// [`SendHistory::take_skipped`]: the feedback that covered them was lost.
    skipped: u32,
}

impl Default for SendHistory {
    fn default() -> Self {
        SendHistory {
            slots: vec![None; SLOTS].into_boxed_slice(),
            next_seq: 0,
            sent: BitrateMeter::with_bucket(Duration::from_millis(250)),
            highest_reported: None,
            skipped: 0,
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
    ///
    /// Feedback that jumps ahead of the highest number covered so far skipped the
    /// packets in between: a feedback packet was lost on the way back (each one starts
    /// where the one before ended). Those are counted ([`SendHistory::take_skipped`]),
    /// not taken for lost media.
    pub fn report(&mut self, seq: u16) -> Option<Sent> {
        self.note_skipped(seq);
        let slot = self.slots[seq as usize % SLOTS].as_mut()?;
        if slot.seq != seq || slot.reported {
            return None;
        }
        slot.reported = true;
        Some(*slot)
    }

    fn note_skipped(&mut self, seq: u16) {
        let Some(highest) = self.highest_reported else {
            self.highest_reported = Some(seq);
            return;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 || ahead as usize >= SLOTS / 2 {
            return; // the same, or behind: a rewind (a re-report), not a gap
        }
        for between in 1..ahead {
            let s = highest.wrapping_add(between);
            if self.get(s).is_some_and(|sent| !sent.reported) {
                self.skipped += 1;
            }
        }
        self.highest_reported = Some(seq);
    }

    /// Packets skipped by lost feedback since the last call.
    pub fn take_skipped(&mut self) -> u32 {
        std::mem::take(&mut self.skipped)
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

    #[test]
    fn feedback_that_jumps_ahead_counts_what_it_skipped() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        for _ in 0..30 {
            h.record(1000, None, t0);
        }
        for seq in 0..10 {
            h.report(seq).unwrap();
        }
        assert_eq!(h.take_skipped(), 0);
        // The feedback for 10..20 was lost; the next covers 20..30.
        for seq in 20..30 {
            h.report(seq).unwrap();
        }
        assert_eq!(h.take_skipped(), 10);
        // A rewind (re-reporting 5..) skips nothing.
        assert!(h.report(5).is_none());
        assert_eq!(h.take_skipped(), 0);
    }
}
