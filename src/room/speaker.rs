//! Active-speaker detection from RFC 6464 audio levels (`ssrc-audio-level`, -dBov per
//! packet). Pure: no clock, no I/O; every call takes the current `Instant`, so it is
//! tested on simulated time. Per participant it keeps a few numbers, so `audio_level`
//! (called for every audio packet) is O(1), two `exp`s and no allocation.
//!
//! Two separate signals, because they answer different questions:
//! - *Is someone speaking?* A "voiced run": voiced packets (louder than -50 dBov) whose
//!   gaps are all shorter than [`HOLD`]. Listed once the run spans [`ENTER_AFTER`],
//!   dropped [`HOLD`] after its last voiced packet. This is about gaps, not voice
//!   density, because Chromium's fake microphone beeps for 20-200 ms once every 0.5-1 s
//!   and must read as continuous speech; an average over time would sag between beeps.
//! - *Who dominates?* An activity score: an average of per-packet loudness (0 when not
//!   voiced) with a 1 s time constant that decays with elapsed time, not packet count,
//!   so a sender that stops fades out. A challenger must beat the dominant speaker's
//!   score by [`SWITCH_MARGIN`] for [`SWITCH_AFTER`] to take over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::id::ParticipantId;

/// Clients show a few speaker tiles at most; more names only churn the list.
pub const MAX_SPEAKERS: usize = 3;
/// Speech at a normal mic sits around -20..-45 dBov; room noise after WebRTC's noise
/// suppression, and the fake mic between beeps (~-100), stay well below -50.
pub const VOICED_MAX_LEVEL: u8 = 50;
/// Longer than a cough or a clicked key, short enough that a speaker shows up while
/// still on their first sentence.
pub const ENTER_AFTER: Duration = Duration::from_millis(400);
/// Covers pauses between words and sentences and the ~1 s beep period of the fake mic,
/// and is the "gone quiet" delay: a speaker leaves 1.5 s (plus one tick) after stopping.
pub const HOLD: Duration = Duration::from_millis(1500);
/// Time constant of the activity score: long enough to average over syllables, short
/// enough that the score tracks who is talking now.
pub const SCORE_TAU_SECS: f32 = 1.0;
/// "Clearly more active": voiced packets score 0.5..1, so 0.1 is a real difference in
/// loudness or talk time, not jitter between two people talking alike.
pub const SWITCH_MARGIN: f32 = 0.1;
/// A challenger must lead this long: one loud packet or a laugh does not move the focus.
pub const SWITCH_AFTER: Duration = Duration::from_secs(1);
/// The longest audio one packet stands for (Opus ptime up to 60 ms); a longer gap
/// before a packet is counted as silence, so a sender that stopped decays.
const MAX_PACKET_SPAN: Duration = Duration::from_millis(60);
/// What the first packet of a participant stands for (the usual 20 ms ptime).
const FIRST_PACKET_SPAN: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, Default)]
struct Track {
    /// Activity score as of `updated`.
    score: f32,
    updated: Option<Instant>,
    /// The voiced run: its first and its latest voiced packet.
    run: Option<(Instant, Instant)>,
    muted: bool,
}

impl Track {
    fn score_at(&self, now: Instant) -> f32 {
        self.updated.map_or(0.0, |u| {
            self.score * decay(now.saturating_duration_since(u))
        })
    }

    fn speaking(&self, now: Instant) -> bool {
        !self.muted
            && self.run.is_some_and(|(start, last)| {
                now.saturating_duration_since(last) <= HOLD
                    && last.saturating_duration_since(start) >= ENTER_AFTER
            })
    }
}

fn decay(elapsed: Duration) -> f32 {
    (-elapsed.as_secs_f32() / SCORE_TAU_SECS).exp()
}

/// Tracks who is speaking in one room; see the module docs.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    tracks: HashMap<ParticipantId, Track>,
    current: Vec<ParticipantId>,
    dominant: Option<ParticipantId>,
    /// A participant clearly ahead of the dominant one, and since when.
    challenger: Option<(ParticipantId, Instant)>,
    /// Reused by `tick`: speaking participants and their scores.
    scratch: Vec<(ParticipantId, f32)>,
}

impl SpeakerDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// One audio packet from `who`: `level` is the RFC 6464 value, -dBov, 0 = loudest,
    /// 127 = silence.
    pub fn audio_level(&mut self, who: ParticipantId, level: u8, now: Instant) {
        let t = self.tracks.entry(who).or_default();
        if t.muted {
            return;
        }
        let voiced = level <= VOICED_MAX_LEVEL;
        // Voiced packets count 0.5..1 so that talk time weighs as much as loudness and a
        // quiet microphone can still dominate a room by talking.
        let x = if voiced {
            0.5 + 0.5 * f32::from(VOICED_MAX_LEVEL - level) / f32::from(VOICED_MAX_LEVEL)
        } else {
            0.0
        };
        let elapsed = t
            .updated
            .map_or(FIRST_PACKET_SPAN, |u| now.saturating_duration_since(u));
        let span = elapsed.min(MAX_PACKET_SPAN);
        // Silence over the gap, then the packet's loudness held over its span.
        let decayed = t.score * decay(elapsed - span);
        t.score = x + (decayed - x) * decay(span);
        t.updated = Some(t.updated.map_or(now, |u| u.max(now)));
        if voiced {
            let start = match t.run {
                Some((start, last)) if now.saturating_duration_since(last) <= HOLD => start,
                _ => now,
            };
            t.run = Some((start, now.max(start)));
        }
    }

    /// A muted participant is never a speaker: it leaves the list at the next `tick`,
    /// without waiting out [`HOLD`], and its packets are ignored until unmuted.
    pub fn set_muted(&mut self, who: ParticipantId, muted: bool) {
        let fresh = Track {
            muted,
            ..Track::default()
        };
        self.tracks.insert(who, fresh);
    }

    /// Forgets `who`; it leaves the list at the next `tick`.
    pub fn remove(&mut self, who: ParticipantId) {
        self.tracks.remove(&who);
    }

    /// `who`'s activity score at `now`, 0..1 (0 for unknown or muted participants).
    pub fn activity(&self, who: ParticipantId, now: Instant) -> f32 {
        self.tracks.get(&who).map_or(0.0, |t| t.score_at(now))
    }

    /// Called every ~100-250 ms by the room; returns `Some(list)` only when the
    /// published list changed: the participants speaking, the dominant speaker first,
    /// then the others (those already listed keep their order), at most
    /// [`MAX_SPEAKERS`].
    pub fn tick(&mut self, now: Instant) -> Option<Vec<ParticipantId>> {
        self.scratch.clear();
        self.scratch.extend(
            self.tracks
                .iter()
                .filter(|(_, t)| t.speaking(now))
                .map(|(p, t)| (*p, t.score_at(now))),
        );
        // Highest score first; ties by id so the outcome does not depend on hash order.
        self.scratch
            .sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let speaking = &self.scratch;
        let score = |p| speaking.iter().find(|s| s.0 == p).map(|s| s.1);
        let (dominant, challenger) = match self.dominant.and_then(|d| Some((d, score(d)?))) {
            None => (speaking.first().map(|s| s.0), None),
            Some((d, ds)) => {
                // The best other speaker, if clearly ahead; the same one must stay ahead
                // for SWITCH_AFTER.
                let ahead = speaking
                    .iter()
                    .find(|s| s.0 != d)
                    .filter(|s| s.1 > ds + SWITCH_MARGIN)
                    .map(|s| s.0);
                let since = match (ahead, self.challenger) {
                    (Some(c), Some((id, since))) if c == id => since,
                    _ => now,
                };
                match ahead {
                    Some(c) if now.saturating_duration_since(since) >= SWITCH_AFTER => {
                        (Some(c), None)
                    }
                    _ => (Some(d), ahead.map(|c| (c, since))),
                }
            }
        };
        (self.dominant, self.challenger) = (dominant, challenger);
        let mut next = Vec::with_capacity(MAX_SPEAKERS);
        next.extend(dominant);
        let listed = self.current.iter().copied().filter(|&p| score(p).is_some());
        for p in listed.chain(speaking.iter().map(|s| s.0)) {
            if next.len() < MAX_SPEAKERS && !next.contains(&p) {
                next.push(p);
            }
        }
        if next == self.current {
            return None;
        }
        self.current = next;
        Some(self.current.clone())
    }

    /// The list published by the last `tick` that changed it.
    pub fn current(&self) -> &[ParticipantId] {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);

    /// Per tick: (ms, whether `tick` reported a change, the list after it).
    type Ticks = Vec<(u64, bool, Vec<ParticipantId>)>;

    struct Sim {
        d: SpeakerDetector,
        t0: Instant,
    }

    impl Sim {
        fn new() -> Self {
            Sim {
                d: SpeakerDetector::new(),
                t0: Instant::now(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// A 20 ms packet from each of `ids` at `level(id, ms)` (None: no packet) over
        /// `from..to` ms, and a tick every 100 ms.
        fn run(
            &mut self,
            from: u64,
            to: u64,
            ids: &[ParticipantId],
            level: impl Fn(ParticipantId, u64) -> Option<u8>,
        ) -> Ticks {
            let mut out = Vec::new();
            for ms in (from..to).step_by(20) {
                for &p in ids {
                    if let Some(l) = level(p, ms) {
                        self.d.audio_level(p, l, self.at(ms));
                    }
                }
                if ms % 100 == 0 {
                    let changed = self.d.tick(self.at(ms)).is_some();
                    out.push((ms, changed, self.d.current().to_vec()));
                }
            }
            out
        }
    }

    /// The ticks at which `p` was listed, checked to be one unbroken stretch.
    fn listed(ticks: &Ticks, p: ParticipantId) -> Vec<u64> {
        let on: Vec<u64> = ticks
            .iter()
            .filter(|t| t.2.contains(&p))
            .map(|t| t.0)
            .collect();
        assert!(on.windows(2).all(|w| w[1] == w[0] + 100), "gap in {on:?}");
        on
    }

    /// A packet at `level` while `on`, else a silent one.
    fn voice(on: bool, level: u8) -> Option<u8> {
        Some(if on { level } else { 127 })
    }

    /// Chromium's fake microphone: a tone of `beep` ms every `period` ms, quiet between.
    fn fake_mic(ms: u64, beep: u64, period: u64) -> Option<u8> {
        Some(if ms % period < beep { 30 } else { 115 })
    }

    #[test]
    fn sustained_speech_enters_after_a_delay() {
        let ticks = Sim::new().run(0, 2000, &[A], |_, _| Some(30));
        assert_eq!(listed(&ticks, A)[0], 400);
    }

    #[test]
    fn brief_sounds_never_enter() {
        // A 300 ms cough from A; one very loud packet from B.
        let ticks = Sim::new().run(0, 5000, &[A, B], |p, ms| {
            voice((p == A && ms < 300) || (p == B && ms == 1000), 0)
        });
        assert!(ticks.iter().all(|t| t.2.is_empty()));
    }

    #[test]
    fn short_pauses_do_not_drop_a_speaker_and_silence_does() {
        // 800 ms phrases, 700 ms pauses; the last packet is at 9780 ms.
        let talk = |_, ms| voice(ms < 10_000 && ms % 1500 < 800, 35);
        let ticks = Sim::new().run(0, 15_000, &[A], talk);
        assert_eq!(listed(&ticks, A).pop(), Some(11_200), "out 1.5 s after");
        assert_eq!(
            ticks.iter().filter(|t| t.1).count(),
            2,
            "one change in, one out"
        );
    }

    #[test]
    fn a_sender_that_stops_decays_by_time() {
        let mut sim = Sim::new();
        let ticks = sim.run(0, 6000, &[A], |_, ms| (ms < 3000).then_some(30));
        assert_eq!(listed(&ticks, A).pop(), Some(4400));
        assert!(sim.d.activity(A, sim.at(3000)) > 0.5);
        assert!(sim.d.activity(A, sim.at(6000)) < 0.05);
        sim.d.audio_level(A, 30, sim.at(6000));
        assert!(
            sim.d.activity(A, sim.at(6000)) < 0.1,
            "the gap counts as silence"
        );
    }

    #[test]
    fn fake_microphone_speaks_continuously() {
        for (beep, period) in [(100, 1000), (200, 1000), (20, 500), (150, 1200)] {
            let ticks = Sim::new().run(0, 20_000, &[A], |_, ms| fake_mic(ms, beep, period));
            let on = listed(&ticks, A);
            assert!(
                on[0] <= 1200 && on.last() == Some(&19_900),
                "{beep}/{period}"
            );
        }
    }

    #[test]
    fn muted_fake_microphone_never_speaks() {
        let mut sim = Sim::new();
        sim.d.set_muted(A, true);
        let ticks = sim.run(0, 10_000, &[A, B], |p, ms| match p {
            A => fake_mic(ms, 150, 1000),
            _ => Some(127),
        });
        assert!(ticks.iter().all(|t| t.2.is_empty() && !t.1));
    }

    #[test]
    fn muting_or_removing_drops_out_at_once() {
        let mut sim = Sim::new();
        sim.run(0, 2000, &[A, B], |_, _| Some(30));
        assert_eq!(sim.d.current(), [A, B]);
        sim.d.set_muted(A, true);
        sim.d.remove(B);
        assert_eq!(sim.d.tick(sim.at(2000)), Some(vec![]));
        let ticks = sim.run(2000, 4000, &[A], |_, _| Some(30));
        assert!(ticks.iter().all(|t| t.2.is_empty()));
        assert_eq!(sim.d.activity(A, sim.at(4000)), 0.0, "ignored while muted");
        sim.d.set_muted(A, false);
        let ticks = sim.run(4000, 5000, &[A], |_, _| Some(30));
        assert_eq!(listed(&ticks, A)[0], 4400);
    }

    #[test]
    fn one_loud_burst_does_not_steal_dominance() {
        let ticks = Sim::new().run(0, 8000, &[A, B], |p, ms| match p {
            A => Some(40),
            _ => Some(if (3000..3500).contains(&ms) { 0 } else { 45 }),
        });
        assert!(ticks.iter().filter(|t| t.0 >= 400).all(|t| t.2 == [A, B]));
    }

    #[test]
    fn clearly_louder_challenger_takes_over_after_a_while() {
        let ticks = Sim::new().run(0, 15_000, &[A, B], |p, ms| match p {
            A => Some(45),
            _ => (ms >= 5000).then_some(20),
        });
        let switch = ticks
            .iter()
            .find(|t| t.2.first() == Some(&B))
            .map_or(0, |t| t.0);
        assert!((7200..=9000).contains(&switch), "switched at {switch}");
        let want = |ms| if ms < switch { [A, B] } else { [B, A] };
        assert!(
            ticks.iter().all(|t| t.0 < 5400 || t.2 == want(t.0)),
            "no flip-back"
        );
    }

    #[test]
    fn others_keep_their_place() {
        let c = ParticipantId(3);
        let ticks = Sim::new().run(0, 6000, &[A, B, c], |p, ms| match p {
            A => Some(20),
            B => Some(45),
            _ => (ms >= 1000).then_some(35),
        });
        assert!(ticks.iter().all(|t| t.0 < 1400 || t.2 == [A, B, c]));
        assert_eq!(ticks.iter().filter(|t| t.1).count(), 2);
    }

    #[test]
    fn list_is_capped_loudest_first() {
        let ids: Vec<_> = (0..5).map(ParticipantId).collect();
        let levels = [40, 20, 35, 25, 30];
        let ticks = Sim::new().run(0, 5000, &ids, |p, _| levels.get(p.0 as usize).copied());
        assert!(ticks.iter().all(|t| t.2.len() <= MAX_SPEAKERS));
        assert_eq!(ticks[ticks.len() - 1].2, [ids[1], ids[3], ids[4]]);
    }
}
