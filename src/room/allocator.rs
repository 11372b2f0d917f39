//! Splitting one subscriber's downlink estimate across the tracks it receives: which
//! simulcast layer of each video it gets, or none. Pure: the room calls it on its
//! allocation tick with what it measured.
//!
//! The order follows LiveKit and Jitsi: audio is never cut (it is cheap and a meeting
//! without sound is over); then every visible video gets its lowest layer, the active
//! speaker and the largest tiles first, and a video that does not fit is paused (its
//! audio keeps flowing) rather than starving all of them; what is left raises layers in
//! the same order, never above the layer that fits the tile the subscriber renders.

use crate::id::{MediaKind, TrackId};

use super::producer::MAX_LAYERS;

/// How a subscriber shows one remote video, as its client reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// Rendered size in device pixels.
    pub width: u32,
    pub height: u32,
    pub visible: bool,
}

/// One layer as the allocator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerOffer {
    pub bitrate: u64,
    pub size: Option<(u16, u16)>,
    /// It flows, or the publisher will send it when asked (paused by dynacast).
    pub selectable: bool,
}

/// One track the subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackOffer {
    pub track: TrackId,
    pub kind: MediaKind,
    /// The active speaker's video goes first.
    pub speaking: bool,
    pub view: Option<View>,
    /// Lowest first; `layer_count` of them are real.
    pub layers: [LayerOffer; MAX_LAYERS],
    pub layer_count: usize,
    /// The layer the subscriber is on now, if any.
    pub current: Option<usize>,
}

/// The allocator's decision for one subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Per track: the layer to forward, `None` = paused.
    pub layers: Vec<(TrackId, Option<usize>)>,
    /// What the chosen layers cost.
    pub allocated_bps: u64,
    /// What the subscriber would receive with unlimited bandwidth (probing aims here).
    pub wanted_bps: u64,
}

/// A layer at least this fraction of the tile (each side) is sharp enough; the next
/// larger one would be downscaled by the browser, wasting the downlink.
const FIT_NUM: u32 = 3;
const FIT_DEN: u32 = 4;

/// The highest layer worth sending for how the video is shown; `None` when hidden.
pub fn max_useful_layer(t: &TrackOffer) -> Option<usize> {
    let top = t.layer_count.clamp(1, MAX_LAYERS) - 1;
    let Some(view) = t.view else {
        return Some(top); // the client has not said: it may show it large
    };
    if !view.visible || view.width == 0 || view.height == 0 {
        return None;
    }
    let fits = |l: &LayerOffer| match l.size {
        Some((w, h)) => {
            w as u32 * FIT_DEN >= view.width * FIT_NUM
                || h as u32 * FIT_DEN >= view.height * FIT_NUM
        }
        // Unknown (H.264 sizes are not parsed): do not guess low.
        None => false,
    };
    (0..=top).find(|&i| fits(&t.layers[i])).or(Some(top))
}

/// What one subscriber's downlink may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// What all the chosen layers may cost together.
    pub spend: u64,
    /// What the lowest layers (the ones that keep a video from pausing) may cost: the
    /// link's estimate before the headroom a lossy path leaves. That headroom is a
    /// reason to send smaller layers, not to blank a video the link carries: at 15 %
    /// loss it paused a Firefox subscriber's only video, what arrived then fell with
    /// it, and the estimate followed it down (tests/e2e/firefox-loss.test.mjs).
    pub lowest: u64,
}

impl Budget {
    /// The same limit for every layer.
    pub fn flat(bps: u64) -> Budget {
        Budget {
            spend: bps,
            lowest: bps,
        }
    }
}

/// Chooses a layer per track within `budget` (`None`: no estimate yet).
pub fn allocate_within(budget: Option<Budget>, tracks: &[TrackOffer]) -> Allocation {
    let mut out = Allocation::default();
    let mut remaining = budget.map_or(u64::MAX, |b| b.spend);
    let mut remaining_lowest = budget.map_or(u64::MAX, |b| b.lowest.max(b.spend));
    // Audio first, whatever the budget says.
    for t in tracks.iter().filter(|t| t.kind == MediaKind::Audio) {
        let cost = t.layers[0].bitrate;
        out.layers.push((t.track, Some(0)));
        out.allocated_bps += cost;
        out.wanted_bps += cost;
        remaining = remaining.saturating_sub(cost);
        remaining_lowest = remaining_lowest.saturating_sub(cost);
    }
    let mut videos: Vec<(&TrackOffer, Option<usize>)> = tracks
        .iter()
        .filter(|t| t.kind == MediaKind::Video)
        .map(|t| (t, max_useful_layer(t)))
        .collect();
    // Speaker, then larger tiles; ties keep a stable order by track id.
    videos.sort_by_key(|(t, _)| {
        let area = t
            .view
            .map_or(u64::MAX, |v| v.width as u64 * v.height as u64);
        (!t.speaking, std::cmp::Reverse(area), t.track)
    });
    // A track none of whose layers flows yet (it is starting, or its publisher is
    // silent) gets its lowest: waiting for that keyframe costs nothing meanwhile.
    let lowest = |t: &TrackOffer, max: usize| {
        let any = (0..t.layer_count.min(MAX_LAYERS)).any(|i| t.layers[i].selectable);
        if any {
            (0..=max).find(|&i| t.layers[i].selectable)
        } else {
            Some(0)
        }
    };
    let mut chosen: Vec<Option<usize>> = vec![None; videos.len()];
    for (i, (t, max)) in videos.iter().enumerate() {
        let Some(max) = *max else { continue };
        if let Some(top) = (0..=max).rev().find(|&l| t.layers[l].selectable) {
            out.wanted_bps += t.layers[top].bitrate;
        }
        if let Some(l) = lowest(t, max) {
            // A video without simulcast has nowhere lower to go: it is not paused for
            // bandwidth (a dip in the estimate would blank it, and each restart costs a
            // keyframe); what it takes is simply not left for the others.
            let single = t.layer_count <= 1;
            if single || t.layers[l].bitrate <= remaining_lowest {
                remaining = remaining.saturating_sub(t.layers[l].bitrate);
                remaining_lowest = remaining_lowest.saturating_sub(t.layers[l].bitrate);
                chosen[i] = Some(l);
            }
        }
    }
    // Each video keeps the layer it is on, as far as it still fits, before any other
    // goes up: when the speaker changes, raising the new one's layer at the expense of
    // another's current one swaps two layers, a keyframe on each publisher's uplink.
    // Then what is left raises layers, in the same order.
    for keeping in [true, false] {
        for (i, (t, max)) in videos.iter().enumerate() {
            let (Some(max), Some(cur)) = (*max, chosen[i]) else {
                continue;
            };
            let up_to = if keeping {
                t.current.map_or(cur, |c| c.min(max))
            } else {
                max
            };
            chosen[i] = Some(raise(t, cur, up_to, &mut remaining));
        }
    }
    for ((t, _), layer) in videos.iter().zip(chosen) {
        if let Some(l) = layer {
            out.allocated_bps += t.layers[l].bitrate;
        }
        out.layers.push((t.track, layer));
    }
    out
}

/// `t`'s layer raised from `cur` towards `up_to`, a selectable layer at a time, while
/// `remaining` pays for the step; what it took is taken from `remaining`.
fn raise(t: &TrackOffer, mut cur: usize, up_to: usize, remaining: &mut u64) -> usize {
    for next in cur + 1..=up_to {
        if !t.layers[next].selectable {
            continue;
        }
        let extra = t.layers[next].bitrate.saturating_sub(t.layers[cur].bitrate);
        if extra > *remaining {
            break;
        }
        *remaining -= extra;
        cur = next;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chooses a layer per track within `budget_bps`, the same for every layer (`None`:
    /// no estimate yet, so every track gets the layer its view wants).
    fn allocate(budget_bps: Option<u64>, tracks: &[TrackOffer]) -> Allocation {
        allocate_within(budget_bps.map(Budget::flat), tracks)
    }

    const SIZES: [(u16, u16); 3] = [(160, 120), (320, 240), (640, 480)];
    const RATES: [u64; 3] = [150_000, 500_000, 1_500_000];

    fn video(id: u64, view: Option<View>) -> TrackOffer {
        let layer = |i: usize| LayerOffer {
            bitrate: RATES[i],
            size: Some(SIZES[i]),
            selectable: true,
        };
        TrackOffer {
            track: TrackId(id),
            kind: MediaKind::Video,
            speaking: false,
            view,
            layers: [layer(0), layer(1), layer(2)],
            layer_count: 3,
            current: None,
        }
    }

    fn audio(id: u64) -> TrackOffer {
        let mut t = video(id, None);
        t.kind = MediaKind::Audio;
        t.layers[0].bitrate = 40_000;
        t.layer_count = 1;
        t
    }

    fn view(width: u32, height: u32) -> Option<View> {
        Some(View {
            width,
            height,
            visible: true,
        })
    }

    fn layer_of(a: &Allocation, id: u64) -> Option<usize> {
        a.layers
            .iter()
            .find(|(t, _)| *t == TrackId(id))
            .and_then(|(_, l)| *l)
    }

    #[test]
    fn without_an_estimate_each_video_gets_the_layer_its_tile_needs() {
        let tracks = [
            video(1, view(640, 480)),
            video(2, view(160, 120)),
            video(3, None),
        ];
        let a = allocate(None, &tracks);
        assert_eq!(layer_of(&a, 1), Some(2));
        assert_eq!(layer_of(&a, 2), Some(0), "a thumbnail gets the small layer");
        assert_eq!(layer_of(&a, 3), Some(2), "no view reported: full");
        assert_eq!(a.wanted_bps, 1_500_000 * 2 + 150_000);
    }

    #[test]
    fn a_hidden_video_is_paused() {
        let hidden = Some(View {
            width: 640,
            height: 480,
            visible: false,
        });
        let a = allocate(None, &[video(1, hidden)]);
        assert_eq!(layer_of(&a, 1), None);
        assert_eq!(a.wanted_bps, 0);
    }

    #[test]
    fn a_tight_budget_gives_everyone_the_low_layer_and_the_rest_to_the_speaker() {
        let mut tracks = vec![
            audio(10),
            audio(11),
            video(1, view(640, 480)),
            video(2, view(640, 480)),
        ];
        tracks[3].speaking = true;
        let a = allocate(Some(80_000 + 300_000 + 400_000), &tracks);
        assert_eq!(layer_of(&a, 10), Some(0));
        assert_eq!(layer_of(&a, 2), Some(1), "the speaker is raised first");
        assert_eq!(layer_of(&a, 1), Some(0));
        assert!(a.allocated_bps <= 780_000);
    }

    #[test]
    fn a_new_speaker_does_not_take_the_layer_another_video_is_on() {
        let mut tracks = vec![video(1, view(640, 480)), video(2, view(640, 480))];
        // Room for one middle layer: video 1 has it, video 2 just became the speaker.
        tracks[0].current = Some(1);
        tracks[1].current = Some(0);
        tracks[1].speaking = true;
        let budget = Some(150_000 + 500_000 + 100_000);
        let a = allocate(budget, &tracks);
        assert_eq!(
            (layer_of(&a, 1), layer_of(&a, 2)),
            (Some(1), Some(0)),
            "no swap: each would cost a keyframe"
        );
        // With room for both, the speaker goes up too; with room for neither, the
        // incumbent comes down.
        let a = allocate(Some(1_100_000), &tracks);
        assert_eq!((layer_of(&a, 1), layer_of(&a, 2)), (Some(1), Some(1)));
        let a = allocate(Some(400_000), &tracks);
        assert_eq!((layer_of(&a, 1), layer_of(&a, 2)), (Some(0), Some(0)));
    }

    #[test]
    fn a_budget_below_every_video_keeps_audio_and_pauses_what_does_not_fit() {
        let tracks = [
            audio(10),
            video(1, view(640, 480)),
            video(2, view(320, 240)),
        ];
        let a = allocate(Some(40_000 + 200_000), &tracks);
        assert_eq!(layer_of(&a, 10), Some(0), "audio is never cut");
        assert_eq!(
            layer_of(&a, 1),
            Some(0),
            "the larger tile keeps its low layer"
        );
        assert_eq!(
            layer_of(&a, 2),
            None,
            "audio-only rather than starving both"
        );
        let a = allocate(Some(10_000), &tracks);
        assert_eq!(layer_of(&a, 10), Some(0));
    }

    #[test]
    fn a_lossy_paths_headroom_lowers_layers_but_does_not_pause_what_the_link_carries() {
        let tracks = [
            audio(10),
            video(1, view(640, 480)),
            video(2, view(640, 480)),
        ];
        // The estimate carries both low layers (40k + 2 x 150k); the headroom leaves
        // less than one.
        let budget = Budget {
            spend: 120_000,
            lowest: 400_000,
        };
        let a = allocate_within(Some(budget), &tracks);
        assert_eq!(layer_of(&a, 10), Some(0));
        assert_eq!(layer_of(&a, 1), Some(0), "kept at its lowest layer");
        assert_eq!(layer_of(&a, 2), Some(0), "kept at its lowest layer");
        // With more to spend, the headroom still decides how high layers go.
        let budget = Budget {
            spend: 40_000 + 150_000 + 500_000,
            lowest: 3_000_000,
        };
        let a = allocate_within(Some(budget), &tracks);
        assert_eq!(layer_of(&a, 1), Some(1));
        assert_eq!(layer_of(&a, 2), Some(0));
        // Beyond what the link carries, a video is paused as before.
        let budget = Budget {
            spend: 100_000,
            lowest: 250_000,
        };
        let a = allocate_within(Some(budget), &tracks);
        assert_eq!((layer_of(&a, 1), layer_of(&a, 2)), (Some(0), None));
    }

    #[test]
    fn a_video_without_simulcast_is_not_paused_for_bandwidth() {
        let mut single = video(1, view(640, 480));
        single.layer_count = 1;
        let tracks = [audio(10), single, video(2, view(640, 480))];
        let a = allocate(Some(100_000), &tracks);
        assert_eq!(layer_of(&a, 1), Some(0), "nowhere lower to go");
        assert_eq!(layer_of(&a, 2), None, "the simulcast one gives way");
        let hidden = Some(View {
            width: 640,
            height: 480,
            visible: false,
        });
        let mut single = video(1, hidden);
        single.layer_count = 1;
        assert_eq!(
            layer_of(&allocate(Some(100_000), &[single]), 1),
            None,
            "hidden: paused"
        );
    }

    #[test]
    fn layers_that_cannot_be_had_are_skipped() {
        let mut t = video(1, view(640, 480));
        t.layers[2].selectable = false; // the publisher stopped sending it on its own
        let a = allocate(None, &[t.clone()]);
        assert_eq!(layer_of(&a, 1), Some(1));
        t.layers[0].selectable = false;
        assert_eq!(layer_of(&allocate(None, &[t.clone()]), 1), Some(1));
        t.layers[1].selectable = false;
        assert_eq!(
            layer_of(&allocate(None, &[t]), 1),
            Some(0),
            "nothing flows yet: start from the bottom"
        );
    }

    #[test]
    fn unknown_sizes_allow_the_top_layer() {
        let mut t = video(1, view(100, 100));
        for l in &mut t.layers {
            l.size = None;
        }
        assert_eq!(
            max_useful_layer(&t),
            Some(2),
            "unknown size: do not guess low"
        );
        t.layer_count = 1;
        assert_eq!(max_useful_layer(&t), Some(0));
    }
}
