//! Negotiation state of one participant's single PeerConnection, as the server sees it.
//!
//! The server decides what the participant should receive (`desired`), compares it with
//! what the last completed offer/answer established (`negotiated`), and makes at most one
//! offer at a time. The browser is the polite peer; the server is impolite and ignores a
//! client offer that collides with its own outstanding offer.
//!
//! The server also waits for the client's first offer before making any of its own (or
//! until told to stop waiting, for clients that publish nothing). Whoever offers first
//! numbers the header extensions for the whole BUNDLE; Chromium then fails its own later
//! offers ("BUNDLE group contains a codec collision for header extension id") when the
//! server's numbering differs from its own, so the browser must number first.

use std::collections::BTreeSet;

use crate::id::TrackId;

/// The change one server offer makes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfferPlan {
    pub add: Vec<TrackId>,
    pub remove: Vec<TrackId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("an answer arrived but no offer is outstanding")]
    NoOfferPending,
    #[error("offer ignored: the server's own offer is outstanding (glare); answer it first")]
    Glare,
}

#[derive(Debug, Default)]
pub struct Negotiator {
    desired: BTreeSet<TrackId>,
    negotiated: BTreeSet<TrackId>,
    /// Wanted but not carried by the last offer (the connection could not take it, say
    /// a codec the subscriber lacks). Tried again with the next offer made for any other
    /// reason, not on their own: that would offer the same failure in a loop.
    uncarried: BTreeSet<TrackId>,
    in_flight: Option<OfferPlan>,
    answering_client_offer: bool,
    /// True once the client's first offer was answered (or waiting was given up).
    established: bool,
}

impl Negotiator {
    pub fn want(&mut self, track: TrackId) {
        self.desired.insert(track);
    }

    pub fn unwant(&mut self, track: TrackId) {
        self.desired.remove(&track);
        self.uncarried.remove(&track);
    }

    /// Whether the negotiated state is what is wanted (but for what cannot be carried).
    pub fn settled(&self) -> bool {
        self.in_flight.is_none()
            && self.negotiated.is_subset(&self.desired)
            && self
                .desired
                .iter()
                .all(|t| self.negotiated.contains(t) || self.uncarried.contains(t))
    }

    pub fn offer_outstanding(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The next offer to make, if the connection is stable and what is wanted differs
    /// from what is negotiated. Marks the offer outstanding.
    pub fn next_offer(&mut self) -> Option<OfferPlan> {
        if self.in_flight.is_some() || self.answering_client_offer || !self.established {
            return None;
        }
        let mut plan = OfferPlan {
            add: self
                .desired
                .difference(&self.negotiated)
                .filter(|t| !self.uncarried.contains(t))
                .copied()
                .collect(),
            remove: self.negotiated.difference(&self.desired).copied().collect(),
        };
        if plan.add.is_empty() && plan.remove.is_empty() {
            return None;
        }
        // An offer is being made anyway: the tracks that could not be carried get another try.
        plan.add.extend(std::mem::take(&mut self.uncarried));
        plan.add.sort_unstable();
        self.in_flight = Some(plan.clone());
        Some(plan)
    }

    /// The client sent an offer. Refused on glare (the server's offer wins).
    pub fn client_offer_received(&mut self) -> Result<(), NegotiationError> {
        if self.in_flight.is_some() {
            return Err(NegotiationError::Glare);
        }
        self.answering_client_offer = true;
        Ok(())
    }

    /// The server has answered the client's offer (`answered`) or failed to.
    pub fn client_offer_done(&mut self, answered: bool) {
        self.answering_client_offer = false;
        self.established |= answered;
    }

    /// Stop waiting for a first client offer (a client that only receives).
    pub fn stop_waiting_for_client(&mut self) {
        self.established = true;
    }

    pub fn waiting_for_client(&self) -> bool {
        !self.established
    }

    /// The client answered the outstanding offer: its plan is now negotiated.
    pub fn answer_received(&mut self) -> Result<OfferPlan, NegotiationError> {
        let plan = self
            .in_flight
            .take()
            .ok_or(NegotiationError::NoOfferPending)?;
        self.negotiated.extend(plan.add.iter().copied());
        for t in &plan.remove {
            self.negotiated.remove(t);
        }
        Ok(plan)
    }

    /// Making the offer failed: forget it, so the next attempt plans afresh.
    pub fn offer_failed(&mut self) {
        self.in_flight = None;
    }

    /// The client's answer to the outstanding offer could not be applied (and the offer
    /// was rolled back): nothing of it is negotiated. Returns its plan, so the caller can
    /// undo what it prepared for it; the next offer plans afresh.
    pub fn answer_failed(&mut self) -> Option<OfferPlan> {
        self.in_flight.take()
    }

    /// `track` cannot be carried on this connection (in the outstanding offer, or as its
    /// answer turned out): it is not negotiated, and is tried again with the next offer.
    pub fn not_carried(&mut self, track: TrackId) {
        if let Some(plan) = self.in_flight.as_mut() {
            plan.add.retain(|t| *t != track);
        }
        self.negotiated.remove(&track);
        if self.desired.contains(&track) {
            self.uncarried.insert(track);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn established() -> Negotiator {
        let mut n = Negotiator::default();
        n.client_offer_received().unwrap();
        n.client_offer_done(true);
        n
    }

    #[test]
    fn the_server_waits_for_the_clients_first_offer() {
        let mut n = Negotiator::default();
        n.want(TrackId(1));
        assert_eq!(
            n.next_offer(),
            None,
            "the browser numbers header extensions first"
        );
        n.client_offer_received().unwrap();
        n.client_offer_done(false);
        assert_eq!(n.next_offer(), None, "a refused offer establishes nothing");
        n.client_offer_received().unwrap();
        n.client_offer_done(true);
        assert_eq!(n.next_offer().unwrap().add, vec![TrackId(1)]);
    }

    #[test]
    fn a_receive_only_client_gets_offers_once_waiting_stops() {
        let mut n = Negotiator::default();
        n.want(TrackId(1));
        assert!(n.waiting_for_client());
        n.stop_waiting_for_client();
        assert_eq!(n.next_offer().unwrap().add, vec![TrackId(1)]);
    }

    #[test]
    fn one_offer_at_a_time_and_changes_accumulate() {
        let mut n = established();
        assert_eq!(n.next_offer(), None, "nothing to do");
        n.want(TrackId(1));
        n.want(TrackId(2));
        let plan = n.next_offer().unwrap();
        assert_eq!(plan.add, vec![TrackId(1), TrackId(2)]);
        n.want(TrackId(3));
        n.unwant(TrackId(1));
        assert_eq!(n.next_offer(), None, "at most one offer outstanding");
        n.answer_received().unwrap();
        let plan = n.next_offer().unwrap();
        assert_eq!(
            plan,
            OfferPlan {
                add: vec![TrackId(3)],
                remove: vec![TrackId(1)]
            }
        );
        n.answer_received().unwrap();
        assert_eq!(n.next_offer(), None);
    }

    #[test]
    fn answer_without_offer_is_an_error() {
        let mut n = established();
        assert_eq!(n.answer_received(), Err(NegotiationError::NoOfferPending));
    }

    #[test]
    fn client_offer_during_server_offer_is_glare() {
        let mut n = established();
        n.want(TrackId(1));
        n.next_offer().unwrap();
        assert_eq!(n.client_offer_received(), Err(NegotiationError::Glare));
        n.answer_received().unwrap();
        assert_eq!(n.client_offer_received(), Ok(()));
    }

    #[test]
    fn no_server_offer_while_answering_a_client_offer() {
        let mut n = established();
        n.client_offer_received().unwrap();
        n.want(TrackId(9));
        assert_eq!(n.next_offer(), None);
        n.client_offer_done(true);
        assert_eq!(n.next_offer().unwrap().add, vec![TrackId(9)]);
    }

    #[test]
    fn a_failed_offer_is_planned_again() {
        let mut n = established();
        n.want(TrackId(1));
        n.next_offer().unwrap();
        n.offer_failed();
        assert_eq!(n.next_offer().unwrap().add, vec![TrackId(1)]);
    }

    #[test]
    fn a_failed_answer_leaves_nothing_outstanding_and_is_planned_again() {
        let mut n = established();
        n.want(TrackId(1));
        n.next_offer().unwrap();
        assert_eq!(n.answer_failed().unwrap().add, vec![TrackId(1)]);
        assert_eq!(
            n.client_offer_received(),
            Ok(()),
            "no glare after a failed answer"
        );
        n.client_offer_done(true);
        assert_eq!(n.next_offer().unwrap().add, vec![TrackId(1)]);
    }

    #[test]
    fn an_uncarried_track_is_retried_with_the_next_offer_not_on_its_own() {
        let mut n = established();
        n.want(TrackId(1));
        n.next_offer().unwrap();
        n.not_carried(TrackId(1));
        assert!(n.answer_received().unwrap().add.is_empty());
        assert_eq!(
            n.next_offer(),
            None,
            "no offer loop for a track that cannot go"
        );
        assert!(n.settled());
        n.want(TrackId(2));
        assert_eq!(n.next_offer().unwrap().add, vec![TrackId(1), TrackId(2)]);
        n.answer_received().unwrap();
        assert!(n.settled());
        n.unwant(TrackId(1));
        assert_eq!(n.next_offer().unwrap().remove, vec![TrackId(1)]);
    }

    /// Random sequences of what a participant, the room and failures can do, stepped as
    /// a well-behaved engine steps them: at every quiet point (no offer outstanding and
    /// the engine asked for one), what is negotiated is what is wanted.
    #[test]
    fn no_sequence_leaves_desired_and_negotiated_apart() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        for seed in 0..400u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut n = Negotiator::default();
            // Tracks 0..3 can never be carried here (an unknown codec); the rest can.
            let carriable = |t: TrackId| t.0 >= 3;
            for step in 0..60 {
                match rng.random_range(0..9) {
                    0 | 1 => n.want(TrackId(rng.random_range(0..12))),
                    2 => n.unwant(TrackId(rng.random_range(0..12))),
                    // A client offer (publish, unpublish, ICE restart): glare or answered.
                    3 if n.client_offer_received().is_ok() => {
                        n.client_offer_done(rng.random_bool(0.9));
                    }
                    // The client's answer arrives, or fails to apply.
                    4 if n.offer_outstanding() => {
                        if rng.random_bool(0.2) {
                            n.answer_failed();
                        } else {
                            n.answer_received().unwrap();
                        }
                    }
                    5 => n.stop_waiting_for_client(),
                    _ => {}
                }
                // The engine: make the next offer when due, leaving out what cannot go.
                if let Some(plan) = n.next_offer() {
                    for t in plan.add.iter().filter(|t| !carriable(**t)) {
                        n.not_carried(*t);
                    }
                }
                // The client answers what is outstanding (planned before the latest
                // changes), the engine offers the difference, the client answers that:
                // after this one round nothing may be left apart.
                if !n.waiting_for_client() && step % 7 == 6 {
                    for _round in 0..2 {
                        if n.offer_outstanding() {
                            n.answer_received().unwrap();
                        }
                        if let Some(plan) = n.next_offer() {
                            for t in plan.add.iter().filter(|t| !carriable(**t)) {
                                n.not_carried(*t);
                            }
                        }
                    }
                    if n.offer_outstanding() {
                        n.answer_received().unwrap();
                    }
                    assert!(n.settled(), "seed {seed} step {step}: {n:?}");
                }
            }
        }
    }

    #[test]
    fn a_track_added_and_removed_before_negotiation_needs_no_offer() {
        let mut n = established();
        n.want(TrackId(1));
        n.unwant(TrackId(1));
        assert_eq!(n.next_offer(), None);
    }
}
