//! One published track: what it carries and its keyframe-request throttle.

use std::time::{Duration, Instant};

use super::codec::Codec;
use super::dynacast::Dynacast;
use crate::bitrate::BitrateMeter;
use crate::id::{MediaKind, ParticipantId, TrackId};

/// At most one keyframe request per producer per this interval; requests inside the window
/// are coalesced into one sent when it ends (mediasoup and LiveKit use the same order).
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// A request no keyframe answered is repeated after this long: on a path that loses
/// 15 % each way, one request in seven (or its keyframe's start) is lost, and waiting
/// the full interval froze a switching subscriber for 1.25 s. Above a round trip and
/// an encoder's reaction on the paths meetings run on.
pub const KEYFRAME_RETRY_INTERVAL: Duration = Duration::from_millis(400);

/// Simulcast layers a producer can carry, lowest first (rids q, h, f in the web client).
pub const MAX_LAYERS: usize = 3;

/// A layer that sent nothing for this long is paused at the publisher (by dynacast,
/// or by the publisher's own bandwidth estimate) and is not chosen until it returns.
pub const LAYER_IDLE: Duration = Duration::from_millis(1200);

/// A layer silent this long while another layer of the same track went on flowing
/// was stopped by the publisher's encoder (its own estimate fell): the legs on it move
/// at once rather than after [`LAYER_IDLE`]. Chromium stops its top layer whenever its
/// uplink estimate dips, and each time the subscribers of that layer froze for 1.2 s
/// and more (tests/scenarios.rs, `layer_switches_under_uplink_loss_keep_the_leg_flowing`).
/// Longer than a frame interval at the lowest frame rates cameras send (5 fps).
pub const LAYER_STOPPED: Duration = Duration::from_millis(450);

/// A layer the publisher stopped on its own (its encoder, on its own bandwidth
/// estimate) and started again is chosen for an upgrade only after flowing this long.
/// Under heavy uplink loss Chromium brings its top layer back for a few hundred
/// milliseconds and stops it again every few seconds; each time, its subscribers
/// switched up and down again, two keyframes on the publisher's starved uplink and a
/// stall on theirs (tests/e2e/loss.test.mjs at 15 %). LiveKit's stream tracker waits
/// for a layer to prove itself the same way.
pub const LAYER_SETTLE: Duration = Duration::from_millis(2000);

/// A layer whose media paused this long says so in the debug log when it resumes.
const LAYER_GAP_LOGGED: Duration = Duration::from_millis(300);

/// What the allocator assumes a layer costs before it has been measured (or while the
/// publisher has it paused): the web client's caps for q, h and f.
pub const DEFAULT_LAYER_BITRATES: [u64; MAX_LAYERS] = [150_000, 500_000, 1_500_000];
/// Opus as browsers send it, with headers.
pub const AUDIO_BITRATE: u64 = 50_000;

#[derive(Debug)]
pub struct Producer {
    pub id: TrackId,
    pub owner: ParticipantId,
    pub kind: MediaKind,
    pub source: crate::auth::Source,
    pub codec: Codec,
    /// How many layers the publisher sends (1 without simulcast).
    pub layer_count: usize,
    pub layers: [Layer; MAX_LAYERS],
    pub dynacast: Dynacast,
    pub packets_in: u64,
    pub keyframes_in: u64,
    /// Muted by an administrator: counted, not forwarded.
    pub silenced: bool,
}

/// One simulcast layer (or the only stream) of a producer.
#[derive(Debug, Default)]
pub struct Layer {
    pub bitrate: BitrateMeter,
    /// The highest rate measured while it was flowing: what resuming it will cost.
    pub peak_bitrate: u64,
    /// When the layer last advanced: a media packet newer than any before. Padding
    /// (bandwidth probes) and resends do not count: Chromium goes on padding a layer
    /// whose encoder it stopped, and its resends of that layer's last packets come
    /// for a second more; both kept a stopped layer "flowing", and its subscribers
    /// froze on it (13 s at 15 % loss, tests/e2e/loss.test.mjs).
    pub last_packet: Option<Instant>,
    /// The highest sequence number of media seen on the layer.
    highest_seq: Option<u16>,
    /// When it came back after the publisher had stopped it (see [`LAYER_SETTLE`]).
    restarted_at: Option<Instant>,
    /// Picture size from its last keyframe, where the codec tells it.
    pub size: Option<(u16, u16)>,
    /// The RTP timestamp of its last keyframe: the packets of that picture are left
    /// out of `bitrate` (see [`Producer::packet_in`]).
    keyframe_timestamp: Option<u32>,
    pub keyframe_throttle: KeyframeThrottle,
}

/// A media packet this far behind the layer's highest sequence number is not a resend
/// (NACK windows hold a few hundred packets) but a stream that started over.
const SEQUENCE_RESTART: i16 = 3000;

impl Layer {
    /// Whether a media packet numbered `seq` is the newest of the layer so far (and
    /// records it).
    fn advances(&mut self, seq: u16) -> bool {
        let newest = self.highest_seq.is_none_or(|h| {
            // Behind by 0..=SEQUENCE_RESTART: a resend, a reordered or repeated packet.
            let ahead = seq.wrapping_sub(h) as i16;
            !(-SEQUENCE_RESTART..=0).contains(&ahead)
        });
        if newest {
            self.highest_seq = Some(seq);
        }
        newest
    }

    /// The highest sequence number of media seen on the layer.
    pub fn highest_seq(&self) -> Option<u16> {
        self.highest_seq
    }

    pub fn is_live(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }
}

impl Producer {
    /// Whether layer `l` flows: it sent within [`LAYER_IDLE`], and it was not left
    /// behind by another layer for [`LAYER_STOPPED`].
    pub fn layer_flows(&self, l: usize, now: Instant) -> bool {
        let Some(last) = self.layers.get(l).and_then(|layer| layer.last_packet) else {
            return false;
        };
        if now.saturating_duration_since(last) >= LAYER_IDLE {
            return false;
        }
        let overtaken = self.layers.iter().enumerate().any(|(i, other)| {
            i != l
                && other
                    .last_packet
                    .is_some_and(|t| t.saturating_duration_since(last) >= LAYER_STOPPED)
        });
        !overtaken
    }

    /// Whether layer `l` flowed and fell silent while the publisher was asked to send
    /// it: its own encoder stopped it (its uplink estimate fell), not dynacast.
    pub fn stopped_by_publisher(&self, l: usize, now: Instant) -> bool {
        // Not flowing implies silent for LAYER_STOPPED at least: the packet path's
        // common case is answered by one comparison.
        let Some(last) = self.layers.get(l).and_then(|layer| layer.last_packet) else {
            return false;
        };
        now.saturating_duration_since(last) >= LAYER_STOPPED
            && !self.layer_flows(l, now)
            && self.dynacast.on_since(l, last)
    }

    /// Whether layer `l` flows and is worth switching up to: not just come back from a
    /// stop of the publisher's own (see [`LAYER_SETTLE`]).
    pub fn layer_settled(&self, l: usize, now: Instant) -> bool {
        self.layer_flows(l, now)
            && self.layers[l]
                .restarted_at
                .is_none_or(|t| now.saturating_duration_since(t) >= LAYER_SETTLE)
    }

    pub fn new(
        id: TrackId,
        owner: ParticipantId,
        kind: MediaKind,
        codec: Codec,
        layer_count: usize,
        now: Instant,
    ) -> Self {
        let layer_count = layer_count.clamp(1, MAX_LAYERS);
        Producer {
            id,
            owner,
            kind,
            source: crate::auth::Source::of(kind),
            codec,
            layer_count,
            layers: Default::default(),
            dynacast: Dynacast::new(layer_count, now),
            packets_in: 0,
            keyframes_in: 0,
            silenced: false,
        }
    }

    /// Counts a packet of `layer`; returns whether it starts a keyframe. A padding-only
    /// packet (empty `payload`) is neither media nor a sign of the layer flowing.
    pub fn packet_in(
        &mut self,
        layer: usize,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
        bytes: usize,
        now: Instant,
    ) -> bool {
        self.packets_in += 1;
        let keyframe = self.codec.is_video() && self.codec.is_keyframe_start(payload);
        let codec = self.codec;
        if layer >= MAX_LAYERS || payload.is_empty() {
            return false;
        }
        let stopped_by_publisher = self.stopped_by_publisher(layer, now);
        let id = self.id;
        let l = &mut self.layers[layer];
        if l.advances(seq) {
            if stopped_by_publisher {
                l.restarted_at = Some(now);
            }
            // Once per gap, not per packet: a stall that no switch or keyframe request
            // explains is told apart from a publisher that paused (docs/RTCP.md).
            if let Some(gap) = l.last_packet.map(|t| now.saturating_duration_since(t)) {
                if gap >= LAYER_GAP_LOGGED {
                    tracing::debug!(track = %id, layer, gap_ms = gap.as_millis() as u64, "layer's media resumed after a gap");
                }
            }
            l.last_packet = Some(now);
        }
        if keyframe {
            l.keyframe_timestamp = Some(timestamp);
        }
        // What a layer costs is what it sends between keyframes. A keyframe is several
        // times a frame's size, and most are asked for by a switch: counted, the layer a
        // leg had just moved up to looked too dear on the next tick and the leg went
        // back down, then up again after `UPGRADE_HOLD`, a keyframe on the publisher's
        // uplink every 3.3 s (tests/e2e/loss.test.mjs at 15 %, with a steady budget).
        // The budget's 10 % reserve carries the odd keyframe.
        if l.keyframe_timestamp != Some(timestamp) {
            l.bitrate.add(bytes, now);
        }
        if keyframe {
            self.keyframes_in += 1;
            l.keyframe_throttle.keyframe_received();
            if let Some(size) = codec.keyframe_size(payload) {
                l.size = Some(size);
            }
        }
        keyframe
    }

    /// What a layer is expected to cost: measured while it flows, else its last peak,
    /// else the default for its place.
    pub fn layer_bitrate(&self, layer: usize, now: Instant) -> u64 {
        let Some(l) = self.layers.get(layer) else {
            return 0;
        };
        let measured = l.bitrate.bits_per_second(now);
        if l.is_live(now) && measured > 0 {
            measured
        } else if l.peak_bitrate > 0 {
            l.peak_bitrate
        } else if !self.codec.is_video() {
            AUDIO_BITRATE
        } else {
            let top = self.layer_count - 1;
            DEFAULT_LAYER_BITRATES[MAX_LAYERS - 1 - (top - layer.min(top))]
        }
    }

    /// Remembers each flowing layer's rate (called on the allocation tick).
    pub fn update_peaks(&mut self, now: Instant) {
        for l in &mut self.layers {
            if l.is_live(now) {
                let rate = l.bitrate.bits_per_second(now);
                // Decays slowly, so one burst does not price a layer forever.
                l.peak_bitrate = rate.max(l.peak_bitrate * 9 / 10);
            }
        }
    }

    /// A picture size for `layer`: its own keyframe's, else derived from a known
    /// layer by the web client's factor of 2 between layers.
    pub fn layer_size(&self, layer: usize) -> Option<(u16, u16)> {
        if let Some(size) = self.layers.get(layer).and_then(|l| l.size) {
            return Some(size);
        }
        (0..self.layer_count).find_map(|known| {
            let (w, h) = self.layers[known].size?;
            let scale = |v: u16| {
                if known >= layer {
                    v >> (known - layer)
                } else {
                    v.saturating_mul(1 << (layer - known))
                }
            };
            Some((scale(w), scale(h)))
        })
    }
}

/// Coalesces keyframe requests (PLI/FIR from subscribers, new subscribers) so a publisher
/// sees at most one per [`KEYFRAME_REQUEST_INTERVAL`]. Time is an input.
#[derive(Debug, Default)]
pub struct KeyframeThrottle {
    last_sent: Option<Instant>,
    pending: bool,
    /// A keyframe arrived since the last request went out.
    answered: bool,
    /// Requests absorbed by the throttle (counted, not logged).
    pub coalesced: u64,
    pub sent: u64,
}

impl KeyframeThrottle {
    /// How long after a request the next one may go: [`KEYFRAME_REQUEST_INTERVAL`]
    /// once it was answered, [`KEYFRAME_RETRY_INTERVAL`] while no keyframe came (the
    /// request or the keyframe's start was lost on a lossy uplink).
    fn interval(&self) -> Duration {
        if self.answered {
            KEYFRAME_REQUEST_INTERVAL
        } else {
            KEYFRAME_RETRY_INTERVAL
        }
    }

    /// Records a request. Returns true when it should be sent to the publisher now.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last) if now.saturating_duration_since(last) < self.interval() => {
                if self.pending {
                    self.coalesced += 1;
                }
                self.pending = true;
                false
            }
            _ => {
                self.mark_sent(now);
                true
            }
        }
    }

    /// When a deferred request is due, if one is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(last)) => Some(last + self.interval()),
            _ => None,
        }
    }

    /// Returns true when a deferred request is due at `now` (and marks it sent).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(due) if now >= due => {
                self.mark_sent(now);
                true
            }
            _ => false,
        }
    }

    /// A keyframe arrived: requests waiting for one are answered already.
    pub fn keyframe_received(&mut self) {
        self.pending = false;
        self.answered = true;
    }

    fn mark_sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.pending = false;
        self.answered = false;
        self.sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 camera with three simulcast layers.
    fn simulcast_camera(t0: Instant) -> Producer {
        Producer::new(
            TrackId(1),
            ParticipantId(1),
            MediaKind::Video,
            Codec::Vp8,
            3,
            t0,
        )
    }

    #[test]
    fn a_layer_left_behind_by_the_others_stops_flowing_at_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = simulcast_camera(t0);
        // 5 frames/s: each frame's packets of `layers` a few ms apart.
        let frame_on = |p: &mut Producer, frame: u64, layers: usize| {
            for layer in 0..layers {
                let at = ms(frame * 200 + layer as u64);
                p.packet_in(
                    layer,
                    frame as u16,
                    frame as u32 * 4500,
                    &[0x10, 0x01],
                    1000,
                    at,
                );
            }
        };
        for frame in 0..5 {
            frame_on(&mut p, frame, 3);
        }
        assert!(p.layer_flows(2, ms(800)), "a slow frame rate is not a stop");
        assert!(p.layer_flows(2, ms(1000)), "nor is a frame just late");
        // The encoder stops the top layer; the others go on.
        let frame_at = |p: &mut Producer, frame: u64| frame_on(p, frame, 2);
        frame_at(&mut p, 5);
        frame_at(&mut p, 6);
        assert!(
            p.layer_flows(2, ms(1201)),
            "400 ms behind: maybe a late frame"
        );
        frame_at(&mut p, 7);
        assert!(!p.layer_flows(2, ms(1401)), "left behind by 600 ms");
        assert!(p.layer_flows(1, ms(1401)) && p.layers[2].is_live(ms(1401)));
        p.packet_in(2, 5, 7650 * 10, &[0x10, 0x01], 1000, ms(1700));
        assert!(p.layer_flows(2, ms(1700)), "back with its first packet");
    }

    #[test]
    fn padding_and_resends_of_a_stopped_layer_do_not_keep_it_flowing() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = simulcast_camera(t0);
        // 20 frames/s on every layer for a second, sequence numbers 0..20 per layer.
        for frame in 0..20u64 {
            for layer in 0..3 {
                p.packet_in(
                    layer,
                    frame as u16,
                    frame as u32 * 4500,
                    &[0x10, 0x01],
                    1000,
                    ms(frame * 50),
                );
            }
        }
        // The encoder stops the top layer; the browser pads it (probes) and resends
        // its last packets on NACK, numbered as before.
        for frame in 20..40u64 {
            for layer in 0..2 {
                p.packet_in(
                    layer,
                    frame as u16,
                    frame as u32 * 4500,
                    &[0x10, 0x01],
                    1000,
                    ms(frame * 50),
                );
            }
            assert!(
                !p.packet_in(
                    2,
                    frame as u16,
                    frame as u32 * 4500,
                    &[],
                    250,
                    ms(frame * 50 + 5)
                ),
                "padding"
            );
            p.packet_in(
                2,
                19 - (frame % 5) as u16,
                (19 - (frame % 5)) as u32 * 4500,
                &[0x10, 0x01],
                1000,
                ms(frame * 50 + 10),
            );
        }
        assert!(
            !p.layer_flows(2, ms(1990)),
            "stopped 1 s ago, padded and resent since"
        );
        assert!(p.layer_flows(1, ms(1990)));
        // Padding did not price the layer either: its measured rate is its media.
        let padded_rate = p.layers[2].bitrate.bits_per_second(ms(1990));
        assert!(padded_rate < 200_000, "{padded_rate}");
        // Its media comes back, numbered after the padding: it flows again.
        p.packet_in(2, 40, 40 * 4500, &[0x10, 0x01], 1000, ms(2000));
        assert!(p.layer_flows(2, ms(2000)));
        // A stream that starts over far below its old numbers is new media, not a resend.
        p.packet_in(1, 60_000, 41 * 4500, &[0x10, 0x01], 1000, ms(2010));
        assert_eq!(p.layers[1].last_packet, Some(ms(2010)));
    }

    #[test]
    fn layer_sizes_come_from_keyframes_or_a_known_neighbour() {
        let t0 = Instant::now();
        let mut p = simulcast_camera(t0);
        assert_eq!(p.layer_size(0), None);
        let kf = [
            0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
        ];
        assert!(p.packet_in(2, 0, 0, &kf, 1000, t0));
        assert_eq!(p.layer_size(2), Some((640, 480)));
        assert_eq!(p.layer_size(0), Some((160, 120)));
        assert!(p.layers[2].is_live(t0) && !p.layers[0].is_live(t0));
        assert_eq!(p.layer_bitrate(0, t0), DEFAULT_LAYER_BITRATES[0]);
    }

    #[test]
    fn first_request_goes_out_at_once() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        assert_eq!(k.poll_timeout(), None);
    }

    #[test]
    fn requests_inside_the_window_coalesce_into_one_at_its_end() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        k.keyframe_received();
        for ms in [10, 200, 500, 900] {
            assert!(!k.request(t0 + Duration::from_millis(ms)));
        }
        assert_eq!(k.coalesced, 3);
        let due = k.poll_timeout().expect("a deferred request");
        assert_eq!(due, t0 + KEYFRAME_REQUEST_INTERVAL);
        assert!(!k.handle_timeout(due - Duration::from_millis(1)));
        assert!(k.handle_timeout(due));
        assert!(
            !k.handle_timeout(due + Duration::from_millis(1)),
            "only once"
        );
        assert_eq!(k.sent, 2);
    }

    #[test]
    fn a_keyframe_answers_waiting_requests() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        k.request(t0);
        k.request(t0 + Duration::from_millis(100));
        k.keyframe_received();
        assert_eq!(k.poll_timeout(), None);
    }

    #[test]
    fn ten_seconds_of_constant_requests_send_about_one_per_second() {
        // Each request answered by a keyframe 50 ms later.
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        let (mut sent, mut keyframe_at) = (0, None);
        for step in 0..1000u64 {
            let now = t0 + Duration::from_millis(step * 10);
            if keyframe_at.is_some_and(|t| now >= t) {
                k.keyframe_received();
                keyframe_at = None;
            }
            if k.handle_timeout(now) || k.request(now) {
                sent += 1;
                keyframe_at = Some(now + Duration::from_millis(50));
            }
        }
        assert!((10..=11).contains(&sent), "sent {sent} in 10 s");
    }

    #[test]
    fn an_unanswered_request_is_repeated_sooner() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(100)));
        assert_eq!(k.poll_timeout(), Some(t0 + KEYFRAME_RETRY_INTERVAL));
        assert!(k.handle_timeout(t0 + KEYFRAME_RETRY_INTERVAL));
        k.keyframe_received();
        assert!(!k.request(t0 + KEYFRAME_RETRY_INTERVAL + Duration::from_millis(500)));
        assert_eq!(
            k.poll_timeout(),
            Some(t0 + KEYFRAME_RETRY_INTERVAL + KEYFRAME_REQUEST_INTERVAL),
            "answered: the full interval"
        );
    }
}
