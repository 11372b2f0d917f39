//! What a synthetic subscriber saw of one (publisher, kind) stream.

use std::collections::HashSet;

use super::media::{decode, now_micros};

#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub packets: u64,
    pub ssrcs: HashSet<u32>,
    pub payload_types: HashSet<u8>,
    pub last_seq: Option<u16>,
    /// Packets whose sequence number did not follow the previous one.
    pub seq_discontinuities: u64,
    /// The largest step forward between two packets in arrival order (1 when nothing
    /// was lost; padding the receiver does not surface and restarted numbering jump).
    pub max_seq_jump: u16,
    pub last_timestamp: Option<u32>,
    /// The largest step (either way) of the RTP timestamp between two packets in arrival
    /// order: a few frames' worth on a continuous stream, far more where a forwarded
    /// stream switched sources without carrying its timeline over.
    pub max_timestamp_jump: u32,
    /// Synthetic counters seen (duplicates and retransmissions counted once).
    pub counters: HashSet<u64>,
    /// Publisher-to-subscriber latency of each synthetic packet, in microseconds.
    pub latencies_us: Vec<u32>,
    /// When the first packet arrived (µs since the epoch).
    pub first_packet_micros: Option<u64>,
    /// Sequence numbers skipped and not (yet) filled by a late packet: holes the
    /// subscriber's NACKs did not get repaired. Bounded by [`MAX_MISSING`]; padding the
    /// receiver does not surface shows up here too.
    pub missing: HashSet<u16>,
}

/// Holes remembered at most (a stream that lost more is broken anyway).
const MAX_MISSING: usize = 4096;
/// A forward step of this many numbers or more is a restart, not loss.
const MAX_HOLE_RUN: u16 = 512;

impl StreamStats {
    pub fn record(
        &mut self,
        ssrc: u32,
        payload_type: u8,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
    ) {
        let now = now_micros();
        self.packets += 1;
        self.ssrcs.insert(ssrc);
        self.payload_types.insert(payload_type);
        if let Some(last) = self.last_seq {
            if seq != last.wrapping_add(1) {
                self.seq_discontinuities += 1;
            }
            let step = seq.wrapping_sub(last);
            if step < 0x8000 {
                self.max_seq_jump = self.max_seq_jump.max(step);
            }
            if (2..MAX_HOLE_RUN).contains(&step) {
                for skipped in 1..step {
                    if self.missing.len() < MAX_MISSING {
                        self.missing.insert(last.wrapping_add(skipped));
                    }
                }
            }
        }
        self.missing.remove(&seq);
        if self
            .last_seq
            .is_none_or(|last| seq.wrapping_sub(last) < 0x8000)
        {
            self.last_seq = Some(seq);
        }
        if let Some(last) = self.last_timestamp {
            // Either way: a late (resent) packet steps back a little, a timeline that
            // was not carried over steps anywhere.
            let step = timestamp.wrapping_sub(last);
            self.max_timestamp_jump = self.max_timestamp_jump.max(step.min(step.wrapping_neg()));
        }
        self.last_timestamp = Some(timestamp);
        self.first_packet_micros.get_or_insert(now);
        if let Some((counter, sent)) = decode(payload) {
            if self.counters.insert(counter) {
                self.latencies_us
                    .push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
            }
        }
    }

    /// Unique synthetic counters seen in `[from, to)`.
    pub fn unique_in(&self, from: u64, to: u64) -> u64 {
        self.counters
            .iter()
            .filter(|c| (from..to).contains(*c))
            .count() as u64
    }
}

/// The `p`-th percentile (0-100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::encode;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 1.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn duplicates_count_once_and_gaps_are_seen() {
        let mut s = StreamStats::default();
        let p = |c| encode([0, 0], c, now_micros(), 40);
        s.record(1, 96, 10, 0, &p(0));
        s.record(1, 96, 11, 0, &p(1));
        s.record(1, 96, 11, 0, &p(1));
        s.record(1, 96, 13, 0, &p(3));
        assert_eq!(s.packets, 4);
        assert_eq!(s.unique_in(0, 4), 3);
        assert_eq!(s.unique_in(1, 3), 1);
        assert_eq!(s.seq_discontinuities, 2);
        assert_eq!(s.max_seq_jump, 2, "11 -> 13; a repeat is no step");
        assert_eq!(s.latencies_us.len(), 3);
        assert_eq!(s.missing.len(), 1, "12 is missing");
        s.record(1, 96, 12, 0, &p(2));
        assert!(s.missing.is_empty(), "a late packet fills its hole");
    }
}
