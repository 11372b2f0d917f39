//! Dynacast: which simulcast layers a publisher should keep encoding. A layer is needed
//! while some subscriber's allocation selects it or a higher one (the lower layers stay
//! on, so a subscriber whose downlink collapses has somewhere to fall to at once).
//! Resuming is immediate; pausing waits [`PAUSE_DELAY`], so a tile resized back and
//! forth or a short dip in someone's estimate does not make the publisher's encoder
//! restart layers (each restart costs a keyframe). Pure: time is an input.

use std::time::{Duration, Instant};

use super::producer::MAX_LAYERS;

pub const PAUSE_DELAY: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Dynacast {
    layer_count: usize,
    /// What the publisher was last told (all on at the start: the browser sends them).
    active: [bool; MAX_LAYERS],
    /// When each layer was last needed.
    last_needed: [Option<Instant>; MAX_LAYERS],
    /// When each layer was last turned back on (never: on since the start).
    resumed_at: [Option<Instant>; MAX_LAYERS],
}

impl Dynacast {
    pub fn new(layer_count: usize, now: Instant) -> Dynacast {
        let layer_count = layer_count.clamp(1, MAX_LAYERS);
        Dynacast {
            layer_count,
            active: std::array::from_fn(|i| i < layer_count),
            // Counted as needed at publish, so nothing pauses before subscribers settle.
            last_needed: [Some(now); MAX_LAYERS],
            resumed_at: [None; MAX_LAYERS],
        }
    }

    /// Whether the publisher was asked to send `layer` all along since `since`: a layer
    /// that fell silent meanwhile was stopped by the publisher itself, not by us.
    pub fn on_since(&self, layer: usize, since: Instant) -> bool {
        self.is_active(layer)
            && self.resumed_at[layer.min(MAX_LAYERS - 1)].is_none_or(|t| t <= since)
    }

    pub fn is_active(&self, layer: usize) -> bool {
        self.active.get(layer).copied().unwrap_or(false)
    }

    /// Takes the highest layer any subscriber selects now (`None`: nobody watches).
    /// Returns the new set for the publisher when it changed.
    pub fn update(
        &mut self,
        highest_selected: Option<usize>,
        now: Instant,
    ) -> Option<[bool; MAX_LAYERS]> {
        let mut next = self.active;
        let layers = next
            .iter_mut()
            .zip(&mut self.last_needed)
            .take(self.layer_count);
        for (layer, (on, last_needed)) in layers.enumerate() {
            if highest_selected.is_some_and(|h| layer <= h) {
                *last_needed = Some(now);
                *on = true;
            } else if last_needed.is_none_or(|t| now.saturating_duration_since(t) >= PAUSE_DELAY) {
                *on = false;
            }
        }
        (next != self.active).then(|| {
            for (layer, resumed) in self.resumed_at.iter_mut().enumerate() {
                if next[layer] && !self.active[layer] {
                    *resumed = Some(now);
                }
            }
            self.active = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unneeded_layers_pause_after_a_delay_and_resume_at_once() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_millis(n);
        let mut d = Dynacast::new(3, t0);
        assert_eq!(d.update(Some(2), s(500)), None, "all on already");
        assert_eq!(d.update(Some(0), s(1000)), None, "not yet: might come back");
        assert_eq!(d.update(Some(0), s(3400)), None);
        assert_eq!(d.update(Some(0), s(3600)), Some([true, false, false]));
        assert!(!d.is_active(2) && d.is_active(0));
        assert_eq!(
            d.update(Some(1), s(3700)),
            Some([true, true, false]),
            "at once"
        );
        assert_eq!(d.update(None, s(4000)), None);
        assert_eq!(
            d.update(None, s(6800)),
            Some([false, false, false]),
            "nobody watches"
        );
    }

    #[test]
    fn a_layer_is_on_since_a_time_only_if_we_did_not_pause_it_after() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_millis(n);
        let mut d = Dynacast::new(3, t0);
        assert!(d.on_since(2, t0), "on from the start");
        d.update(Some(0), s(3500));
        assert!(!d.on_since(2, s(100)), "paused now");
        d.update(Some(2), s(5000));
        assert!(!d.on_since(2, s(100)), "resumed by us after that");
        assert!(d.on_since(2, s(5000)) && d.on_since(2, s(6000)));
    }

    #[test]
    fn a_single_layer_track_has_only_layer_zero() {
        let t0 = Instant::now();
        let mut d = Dynacast::new(1, t0);
        assert!(d.is_active(0) && !d.is_active(1));
        assert_eq!(d.update(Some(2), t0), None);
    }
}
