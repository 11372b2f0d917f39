//! The room's periodic work for every subscriber's downlink: choosing each leg's layer
//! from the subscriber's estimate and views (`allocator`), telling publishers which
//! layers anyone still needs (`dynacast`), and publishing the active speakers.

use std::time::Instant;

use std::collections::HashMap;
use std::time::Duration;

use super::allocator::{allocate_within, Budget, LayerOffer, TrackOffer};
use super::producer::MAX_LAYERS;
use super::room::{Output, Room, RoomEvent};
use crate::id::{LegId, MediaKind, ParticipantId, TrackId};

/// After the estimate falls, no layer is raised for this long.
pub const UPGRADE_HOLD: Duration = Duration::from_secs(3);

/// A layer above the one a leg is on is priced this much dearer (percent): a leg goes
/// up only with room to spare, and a budget that wobbles around a layer's cost (a lossy
/// path's headroom moves with each second's loss) does not move it up and down.
const UPGRADE_MARGIN_PERCENT: u64 = 115;

impl Room {
    /// Every [`super::room::ALLOCATION_INTERVAL`]: layers for everyone, dynacast, speakers.
    pub(super) fn allocation_tick(&mut self, now: Instant) {
        for p in self.producers.values_mut() {
            p.update_peaks(now);
        }
        if let Some(list) = self.speakers.tick(now) {
            self.notify_all(RoomEvent::Speakers(list));
        }
        // One pass over the legs, not one per subscriber: a large room has many of both.
        let mut by_subscriber: HashMap<ParticipantId, Vec<LegId>> = HashMap::new();
        for c in self.consumers.values() {
            by_subscriber.entry(c.subscriber).or_default().push(c.leg);
        }
        for (subscriber, legs) in by_subscriber {
            self.allocate_legs(subscriber, &legs, now);
        }
        self.dynacast(now);
    }

    /// Chooses the layer of every leg `subscriber` receives.
    pub(super) fn allocate_for(&mut self, subscriber: ParticipantId, now: Instant) {
        let legs = self.legs_of(subscriber);
        self.allocate_legs(subscriber, &legs, now);
    }

    fn allocate_legs(&mut self, subscriber: ParticipantId, leg_ids: &[LegId], now: Instant) {
        let Some(downlink) = self.downlinks.get(&subscriber) else {
            return;
        };
        let dominant = self.speakers.current().first().copied();
        let mut legs: Vec<(TrackId, LegId)> = Vec::new();
        let mut offers: Vec<TrackOffer> = Vec::new();
        for c in leg_ids.iter().filter_map(|l| self.consumers.get(l)) {
            let Some(p) = self.producers.get(&c.producer) else {
                continue;
            };
            let layers: [LayerOffer; MAX_LAYERS] = std::array::from_fn(|l| LayerOffer {
                bitrate: match p.layer_bitrate(l, now) {
                    cost if Some(l) > c.target_layer() => cost * UPGRADE_MARGIN_PERCENT / 100,
                    cost => cost,
                },
                size: p.layer_size(l),
                // A layer the leg is on or above stays selectable while it flows; one
                // above it must also have settled (a publisher's flapping layer).
                selectable: l < p.layer_count
                    && (p.kind == MediaKind::Audio
                        || (p.layer_flows(l, now)
                            && (c.target_layer() >= Some(l) || p.layer_settled(l, now)))
                        || !p.dynacast.is_active(l)),
            });
            legs.push((p.id, c.leg));
            offers.push(TrackOffer {
                track: p.id,
                kind: p.kind,
                speaking: Some(p.owner) == dominant,
                view: downlink.views.get(&p.id).copied(),
                layers,
                layer_count: p.layer_count,
                current: c.target_layer(),
            });
        }
        // Media gets 90 % of the estimate: the rest is for retransmissions, RTCP and
        // probes, and it keeps a layer that just fits from tipping the link over.
        let budget = downlink.estimate.map(|e| Budget {
            spend: e.spend / 10 * 9,
            lowest: e.lowest / 10 * 9,
        });
        let allocation = allocate_within(budget, &offers);
        let limited = downlink.estimate.is_some();
        let holding = downlink
            .last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < UPGRADE_HOLD);
        if let Some(d) = self.downlinks.get_mut(&subscriber) {
            d.wanted_bps = allocation.wanted_bps;
            d.allocated_bps = allocation.allocated_bps;
        }
        // Under an estimate, layers go up one step per tick and not within
        // UPGRADE_HOLD of the estimate falling: a probe can overrate a link with a burst
        // bucket, and each wrong step up costs the subscriber loss and a keyframe.
        for (track, layer) in allocation.layers {
            let Some((_, leg)) = legs.iter().find(|(t, _)| *t == track) else {
                continue;
            };
            let Some(c) = self.consumers.get_mut(leg) else {
                continue;
            };
            let current = c.target_layer();
            // A leg moved down is not moved up again within UPGRADE_HOLD either: the
            // measured costs of the other legs swing with keyframes and the speaker,
            // and a leg that went down and up every tick cost a keyframe each time.
            let leg_holding = c
                .lowered_at()
                .is_some_and(|t| now.saturating_duration_since(t) < UPGRADE_HOLD);
            let layer = match (layer, current) {
                (Some(new), Some(cur)) if limited && new > cur => {
                    Some(if holding || leg_holding { cur } else { cur + 1 })
                }
                (Some(_), None) if limited && holding => None,
                _ => layer,
            };
            if current == layer {
                continue;
            }
            tracing::debug!(%subscriber, track = %track, ?current, ?layer, ?budget, "layer target");
            if layer < current {
                c.lowered(now);
            }
            c.set_target(layer);
            if let Some(wanted) = c.awaited_keyframe() {
                self.request_layer_keyframe(track, wanted, now);
            }
        }
    }

    /// Per simulcast producer: the highest layer any leg selects, to its dynacast.
    fn dynacast(&mut self, now: Instant) {
        let mut highest: Vec<(TrackId, Option<usize>)> = self
            .producers
            .values()
            .filter(|p| p.layer_count > 1)
            .map(|p| (p.id, None))
            .collect();
        for c in self.consumers.values() {
            if let Some((_, h)) = highest.iter_mut().find(|(t, _)| *t == c.producer) {
                *h = (*h).max(c.target_layer());
            }
        }
        for (track, h) in highest {
            let Some(p) = self.producers.get_mut(&track) else {
                continue;
            };
            // A layer the publisher stopped on its own, or that came back from such a
            // stop and has not settled, is chosen by nobody, but it is not unwanted:
            // pausing it would make it look like ours to resume, and the allocator
            // takes a layer we resume at once. Chromium sends it again when its own
            // estimate allows, and it is taken once it has settled; under heavy loss,
            // pausing and resuming it switched its subscribers up for a moment every
            // PAUSE_DELAY, a keyframe each time.
            let held_on = (0..p.layer_count).rev().find(|&l| {
                p.stopped_by_publisher(l, now)
                    || (p.layer_flows(l, now) && !p.layer_settled(l, now))
            });
            let h = h.max(held_on);
            if let Some(active) = p.dynacast.update(h, now) {
                self.outputs.push_back(Output::PublisherLayers {
                    publisher: p.owner,
                    track,
                    active,
                });
            }
        }
    }
}

impl Room {
    /// Header for `n` padding packets (bandwidth probes) to `subscriber`, on one of its
    /// video legs (flowing or paused); `None` when it receives no video.
    pub fn padding(&mut self, subscriber: ParticipantId, n: u16) -> Option<super::RewrittenHeader> {
        let videos: Vec<LegId> = self
            .consumers
            .values()
            .filter(|c| c.subscriber == subscriber)
            .filter(|c| {
                self.producers
                    .get(&c.producer)
                    .is_some_and(|p| p.codec.is_video())
            })
            .map(|c| c.leg)
            .collect();
        let leg = videos.into_iter().min()?;
        self.consumers.get_mut(&leg)?.padding(n)
    }

    /// Simulcast layer switches on `subscriber`'s legs so far.
    pub fn layer_switches(&self, subscriber: ParticipantId) -> u64 {
        self.consumers
            .values()
            .filter(|c| c.subscriber == subscriber)
            .map(|c| c.layer_switches)
            .sum()
    }

    /// Each leg `subscriber` receives: (track, layer forwarded, layer chosen).
    pub fn leg_layers(
        &self,
        subscriber: ParticipantId,
    ) -> Vec<(TrackId, Option<usize>, Option<usize>)> {
        let mut legs: Vec<_> = self
            .consumers
            .values()
            .filter(|c| c.subscriber == subscriber)
            .map(|c| (c.producer, c.current_layer(), c.target_layer()))
            .collect();
        legs.sort();
        legs
    }

    /// One layer of a producer: (bits per second now, picture size, publisher told to send it).
    pub fn layer_state(
        &self,
        track: TrackId,
        layer: usize,
        now: Instant,
    ) -> (u64, Option<(u16, u16)>, bool) {
        self.producers.get(&track).map_or((0, None, false), |p| {
            let bps = p
                .layers
                .get(layer)
                .map_or(0, |l| l.bitrate.bits_per_second(now));
            (bps, p.layer_size(layer), p.dynacast.is_active(layer))
        })
    }
}
