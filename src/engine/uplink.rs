//! What the server's transport-cc feedback tells a publisher about its uplink.
//!
//! The publisher's browser estimates its own uplink from the feedback rtc's transport-cc
//! receiver writes for what arrives here; the server estimates nothing upstream. This
//! interceptor sits below that receiver on the way out and counts, per connection, the
//! packets each feedback reports received and lost, so `/api/stats` shows what the
//! browser is told (a publisher whose own estimate falls under random loss can be told
//! apart from one told of loss that did not happen).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Packets reported received and lost by the feedback sent on one connection so far.
#[derive(Clone, Debug, Default)]
pub struct UplinkFeedback(Arc<[AtomicU64; 2]>);

impl UplinkFeedback {
    /// (received, lost) as reported so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.0[0].load(Relaxed), self.0[1].load(Relaxed))
    }

    fn add(&self, fb: &TransportLayerCc) {
        let received = fb.recv_deltas.len() as u64;
        let covered = u64::from(fb.packet_status_count);
        self.0[0].fetch_add(received, Relaxed);
        self.0[1].fetch_add(covered.saturating_sub(received), Relaxed);
    }
}

pub struct UplinkFeedbackMeter {
    counts: UplinkFeedback,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl UplinkFeedbackMeter {
    pub fn new(counts: UplinkFeedback) -> UplinkFeedbackMeter {
        UplinkFeedbackMeter {
            counts,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for UplinkFeedbackMeter {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                if let Some(fb) = p.as_any().downcast_ref::<TransportLayerCc>() {
                    self.counts.add(fb);
                }
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for UplinkFeedbackMeter {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
