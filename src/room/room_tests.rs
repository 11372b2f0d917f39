use std::time::{Duration, Instant};

use super::*;
use crate::room::rewrite::ExtMap;

const ADA: ParticipantId = ParticipantId(1);
const BOB: ParticipantId = ParticipantId(2);
const CY: ParticipantId = ParticipantId(3);
const CAM: TrackId = TrackId(10);
const MIC: TrackId = TrackId(11);

fn drain(room: &mut Room) -> Vec<Output> {
    std::iter::from_fn(|| room.poll_output()).collect()
}

fn params(ssrc: u32, pt: u8) -> LegParams {
    LegParams {
        ssrc,
        payload_type: pt,
        ext_map: ExtMap::default(),
    }
}

/// VP8 keyframe start and interframe payloads.
const KEY: &[u8] = &[0x10, 0x00, 0x9d];
const DELTA: &[u8] = &[0x10, 0x01];

fn rtp(seq: u16, ts: u32, payload: &[u8]) -> RtpIn<'_> {
    RtpIn {
        layer: 0,
        sequence_number: seq,
        timestamp: ts,
        payload,
        audio_level: None,
    }
}

/// A room with these participants joined (and the outputs of joining drained).
fn room_with(people: &[(ParticipantId, &str)]) -> Room {
    let mut room = Room::new(10);
    for (id, name) in people {
        room.join(*id, name).unwrap();
    }
    drain(&mut room);
    room
}

/// Ada publishes a camera and mic; Bob and Cy subscribe to both.
fn three_person_room(now: Instant) -> Room {
    let mut room = room_with(&[(ADA, "Ada"), (BOB, "Bob"), (CY, "Cy")]);
    room.publish(ADA, CAM, MediaKind::Video, Codec::Vp8, 1, Instant::now())
        .unwrap();
    room.publish(ADA, MIC, MediaKind::Audio, Codec::Opus, 1, Instant::now())
        .unwrap();
    room.consumer_ready(
        LegId(1),
        BOB,
        CAM,
        params(111, 96),
        LegStart::fresh(0, 0),
        now,
    );
    room.consumer_ready(
        LegId(2),
        CY,
        CAM,
        params(222, 98),
        LegStart::fresh(500, 9000),
        now,
    );
    room.consumer_ready(
        LegId(3),
        BOB,
        MIC,
        params(333, 111),
        LegStart::fresh(0, 0),
        now,
    );
    drain(&mut room);
    room
}

#[test]
fn joining_tells_the_others_and_subscribes_to_existing_tracks() {
    let now = Instant::now();
    let mut room = Room::new(10);
    room.join(ADA, "Ada").unwrap();
    room.publish(ADA, CAM, MediaKind::Video, Codec::Vp8, 1, Instant::now())
        .unwrap();
    drain(&mut room);
    let snap = room.join(BOB, "Bob").unwrap();
    assert_eq!(snap.participants.len(), 1);
    assert_eq!(snap.tracks[0].track_id, CAM);
    let out = drain(&mut room);
    assert!(out.contains(&Output::Notify {
        to: ADA,
        event: RoomEvent::ParticipantJoined(ParticipantInfo::new(BOB, "Bob".into()))
    }));
    assert!(out.iter().any(
        |o| matches!(o, Output::Subscribe { subscriber: BOB, track } if track.track_id == CAM)
    ));
    let _ = now;
}

#[test]
fn duplicate_names_and_full_rooms_are_refused() {
    let mut room = Room::new(2);
    room.join(ADA, "Ada").unwrap();
    assert_eq!(
        room.join(BOB, "Ada"),
        Err(RoomError::NameTaken("Ada".into()))
    );
    room.join(BOB, "Bob").unwrap();
    assert_eq!(room.join(CY, "Cy"), Err(RoomError::RoomFull(2)));
}

#[test]
fn publishing_subscribes_everyone_else() {
    let mut room = room_with(&[(ADA, "Ada"), (BOB, "Bob"), (CY, "Cy")]);
    drain(&mut room);
    room.publish(BOB, CAM, MediaKind::Video, Codec::Vp8, 1, Instant::now())
        .unwrap();
    let subs: Vec<ParticipantId> = drain(&mut room)
        .into_iter()
        .filter_map(|o| match o {
            Output::Subscribe { subscriber, .. } => Some(subscriber),
            _ => None,
        })
        .collect();
    assert_eq!(subs, vec![ADA, CY]);
}

#[test]
fn forwarding_table_rewrites_per_leg_and_gates_video_on_keyframes() {
    let now = Instant::now();
    let mut room = three_person_room(now);
    let mut out = Vec::new();
    room.route_rtp(CAM, rtp(1000, 90_000, DELTA), now, &mut out);
    assert!(out.is_empty(), "video legs wait for a keyframe");
    room.route_rtp(CAM, rtp(1001, 93_000, KEY), now, &mut out);
    assert_eq!(out.len(), 2);
    let bob = out.iter().find(|f| f.leg == LegId(1)).unwrap().header;
    let cy = out.iter().find(|f| f.leg == LegId(2)).unwrap().header;
    assert_eq!(
        (
            bob.ssrc,
            bob.payload_type,
            bob.sequence_number,
            bob.timestamp
        ),
        (111, 96, 0, 0)
    );
    assert_eq!(
        (cy.ssrc, cy.payload_type, cy.sequence_number, cy.timestamp),
        (222, 98, 500, 9000)
    );
    out.clear();
    room.route_rtp(CAM, rtp(1002, 96_000, DELTA), now, &mut out);
    let cy = out.iter().find(|f| f.leg == LegId(2)).unwrap().header;
    assert_eq!((cy.sequence_number, cy.timestamp), (501, 12_000));
    out.clear();
    room.route_rtp(MIC, rtp(7, 480, &[1, 2, 3]), now, &mut out);
    assert_eq!(out.len(), 1, "audio goes only to Bob, who has the leg");
    assert_eq!(out[0].header.ssrc, 333);
}

#[test]
fn a_keyframe_whose_first_packet_comes_late_is_forwarded_whole() {
    // The rest of the keyframe (1002, 1003) arrives before its first packet (1001),
    // which was lost on the uplink and comes back resent.
    let now = Instant::now();
    let mut room = three_person_room(now);
    let mut out = Vec::new();
    assert!(
        room.route_rtp(CAM, rtp(1002, 93_000, DELTA), now, &mut out),
        "a leg waits for this layer's keyframe: hold the packet"
    );
    assert!(room.route_rtp(CAM, rtp(1003, 93_000, DELTA), now, &mut out));
    assert!(out.is_empty());
    let waits = room.route_rtp(CAM, rtp(1001, 93_000, KEY), now, &mut out);
    assert!(!waits, "nobody waits any more");
    let cy = out.iter().find(|f| f.leg == LegId(2)).unwrap();
    assert!(cy.starts_layer);
    assert_eq!(cy.header.sequence_number, 500);
    let replayed: Vec<u16> = [1002, 1003]
        .into_iter()
        .map(|seq| {
            room.replay(LegId(2), 0, seq, 93_000, &[], now)
                .expect("the leg is on the layer now")
                .sequence_number
        })
        .collect();
    assert_eq!(
        replayed,
        [501, 502],
        "numbered after the keyframe's start, in order"
    );
    out.clear();
    room.route_rtp(CAM, rtp(1004, 96_000, DELTA), now, &mut out);
    let cy = out.iter().find(|f| f.leg == LegId(2)).unwrap();
    assert!(!cy.starts_layer);
    assert_eq!(cy.header.sequence_number, 503);
    assert_eq!(
        room.replay(LegId(2), 1, 1005, 96_000, &[], now),
        None,
        "nothing is replayed onto a layer the leg is not on"
    );
}

#[test]
fn a_new_video_subscriber_triggers_one_keyframe_request_and_throttles_the_rest() {
    let t0 = Instant::now();
    let mut room = room_with(&[(ADA, "Ada"), (BOB, "Bob"), (CY, "Cy")]);
    room.publish(ADA, CAM, MediaKind::Video, Codec::Vp8, 1, Instant::now())
        .unwrap();
    drain(&mut room);
    room.consumer_ready(LegId(1), BOB, CAM, params(1, 96), LegStart::fresh(0, 0), t0);
    assert_eq!(
        drain(&mut room),
        vec![Output::RequestKeyframe {
            track: CAM,
            layer: 0
        }]
    );
    // Cy arrives 100 ms later, then a burst of PLIs from both: all coalesced.
    room.consumer_ready(
        LegId(2),
        CY,
        CAM,
        params(2, 96),
        LegStart::fresh(0, 0),
        t0 + Duration::from_millis(100),
    );
    for ms in 0..25 {
        room.keyframe_request(BOB, CAM, t0 + Duration::from_millis(100 + ms * 10));
    }
    assert!(drain(&mut room).is_empty());
    // No keyframe came: the coalesced request goes out when the retry interval ends,
    // not before.
    let due = t0 + crate::room::producer::KEYFRAME_RETRY_INTERVAL;
    room.handle_timeout(due - Duration::from_millis(1));
    let early: Vec<Output> = drain(&mut room)
        .into_iter()
        .filter(|o| matches!(o, Output::RequestKeyframe { .. }))
        .collect();
    assert!(early.is_empty(), "{early:?}");
    room.handle_timeout(due);
    let requests: Vec<Output> = drain(&mut room)
        .into_iter()
        .filter(|o| matches!(o, Output::RequestKeyframe { .. }))
        .collect();
    assert_eq!(
        requests,
        vec![Output::RequestKeyframe {
            track: CAM,
            layer: 0
        }]
    );
}

#[test]
fn audio_subscribers_do_not_request_keyframes() {
    let now = Instant::now();
    let mut room = room_with(&[(ADA, "Ada"), (BOB, "Bob")]);
    room.publish(ADA, MIC, MediaKind::Audio, Codec::Opus, 1, Instant::now())
        .unwrap();
    drain(&mut room);
    room.consumer_ready(
        LegId(1),
        BOB,
        MIC,
        params(1, 111),
        LegStart::fresh(0, 0),
        now,
    );
    assert!(drain(&mut room).is_empty());
}

#[test]
fn leaving_stops_forwarding_to_and_from_the_participant_and_tells_the_others() {
    let now = Instant::now();
    let mut room = three_person_room(now);
    room.leave(ADA);
    let out = drain(&mut room);
    for leg in [LegId(1), LegId(2), LegId(3)] {
        assert!(closed(&out, leg), "{leg:?} closed");
    }
    for to in [BOB, CY] {
        assert!(out.contains(&Output::Notify {
            to,
            event: RoomEvent::ParticipantLeft(ADA)
        }));
        assert!(out.contains(&Output::Notify {
            to,
            event: RoomEvent::TrackUnpublished {
                track_id: CAM,
                participant_id: ADA
            }
        }));
        assert!(out.contains(&Output::Unsubscribe {
            subscriber: to,
            track: CAM
        }));
    }
    let mut fwd = Vec::new();
    room.route_rtp(CAM, rtp(1, 1, KEY), now, &mut fwd);
    assert!(fwd.is_empty());
    assert_eq!(room.rtp_counts().unknown_track, 1);
    assert_eq!(room.participants().count(), 2);
}

#[test]
fn a_subscriber_leaving_closes_only_its_own_legs() {
    let now = Instant::now();
    let mut room = three_person_room(now);
    room.leave(BOB);
    let out = drain(&mut room);
    assert!(closed(&out, LegId(1)));
    assert!(closed(&out, LegId(3)));
    assert!(!closed(&out, LegId(2)));
    let mut fwd = Vec::new();
    room.route_rtp(CAM, rtp(1, 1, KEY), now, &mut fwd);
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].leg, LegId(2));
}

#[test]
fn a_leg_ready_after_its_track_is_gone_is_closed_at_once() {
    let now = Instant::now();
    let mut room = room_with(&[(ADA, "Ada"), (BOB, "Bob")]);
    drain(&mut room);
    room.consumer_ready(
        LegId(9),
        BOB,
        CAM,
        params(1, 96),
        LegStart::fresh(7, 70),
        now,
    );
    assert_eq!(
        drain(&mut room),
        vec![Output::LegClosed {
            leg: LegId(9),
            resume: LegStart::fresh(7, 70)
        }],
        "closed at once, passing its numbering on unused"
    );
}

fn closed(out: &[Output], leg: LegId) -> bool {
    out.iter()
        .any(|o| matches!(o, Output::LegClosed { leg: l, .. } if *l == leg))
}

#[test]
fn a_closed_leg_passes_on_where_its_numbering_continues() {
    let now = Instant::now();
    let mut room = three_person_room(now);
    let mut fwd = Vec::new();
    room.route_rtp(MIC, rtp(7, 480, &[1]), now, &mut fwd);
    room.route_rtp(MIC, rtp(8, 960, &[1]), now, &mut fwd);
    let sent = fwd
        .iter()
        .filter(|f| f.leg == fwd[0].leg)
        .map(|f| f.header.sequence_number)
        .max()
        .unwrap();
    let leg = fwd[0].leg;
    room.leave(ADA);
    let resume = drain(&mut room).into_iter().find_map(|o| match o {
        Output::LegClosed { leg: l, resume } if l == leg => Some(resume),
        _ => None,
    });
    assert_eq!(
        resume.map(|r| r.sequence_number),
        Some(sent.wrapping_add(1)),
        "past the highest number sent: the subscriber's SRTP replay check"
    );
}

#[test]
fn mute_is_told_to_the_others_and_kept_for_newcomers() {
    let mut room = room_with(&[(ADA, "Ada"), (BOB, "Bob")]);
    drain(&mut room);
    room.set_muted(ADA, MediaKind::Audio, true);
    assert_eq!(
        drain(&mut room),
        vec![Output::Notify {
            to: BOB,
            event: RoomEvent::Mute {
                participant_id: ADA,
                kind: MediaKind::Audio,
                muted: true
            }
        }]
    );
    let snap = room.join(CY, "Cy").unwrap();
    assert!(snap
        .participants
        .iter()
        .any(|p| p.id == ADA && p.audio_muted));
}

/// Ada publishes a 3-layer camera; Bob receives it. Each layer sends a frame every 33 ms
/// (q 1 packet, h 2, f 6, 600 bytes each) from `from` for `ms`.
fn feed_layers(room: &mut Room, from: Instant, ms: u64, seq: &mut [u16; 3]) {
    feed_some_layers(room, from, ms, seq, &[0, 1, 2]);
}

/// As [`feed_layers`], with only `sending` of the layers; returns the room's outputs.
fn feed_some_layers(
    room: &mut Room,
    from: Instant,
    ms: u64,
    seq: &mut [u16; 3],
    sending: &[usize],
) -> Vec<Output> {
    let mut outputs = Vec::new();
    let mut out = Vec::new();
    let mut t = 0;
    while t < ms {
        let now = from + Duration::from_millis(t);
        for (layer, count) in [(0usize, 1), (1, 2), (2, 6)] {
            if !sending.contains(&layer) {
                continue;
            }
            for i in 0..count {
                let mut payload = vec![0u8; 600];
                payload[..2].copy_from_slice(
                    if i == 0 && t % 990 == 0 { KEY } else { DELTA }
                        .get(..2)
                        .unwrap(),
                );
                let rtp = RtpIn {
                    layer,
                    sequence_number: seq[layer],
                    timestamp: (t * 90) as u32,
                    payload: &payload,
                    audio_level: None,
                };
                seq[layer] = seq[layer].wrapping_add(1);
                room.route_rtp(CAM, rtp, now, &mut out);
            }
        }
        if room.poll_timeout().is_some_and(|d| d <= now) {
            room.handle_timeout(now);
        }
        outputs.extend(drain(room));
        t += 33;
    }
    outputs
}

/// Ada's 3-layer camera, sending for a second from `t0`; Bob in the room, not yet
/// subscribed.
fn ada_simulcasting(t0: Instant, seq: &mut [u16; 3]) -> Room {
    let mut room = room_with(&[(ADA, "Ada"), (BOB, "Bob")]);
    room.publish(ADA, CAM, MediaKind::Video, Codec::Vp8, 3, t0)
        .unwrap();
    drain(&mut room);
    feed_layers(&mut room, t0, 1000, seq);
    room
}

#[test]
fn a_step_down_in_bandwidth_moves_the_leg_to_the_low_layer_and_back() {
    let t0 = Instant::now();
    let mut seq = [0u16; 3];
    let mut room = ada_simulcasting(t0, &mut seq);
    room.consumer_ready(
        LegId(1),
        BOB,
        CAM,
        params(1, 96),
        LegStart::fresh(0, 0),
        t0 + Duration::from_millis(1000),
    );
    feed_layers(&mut room, t0 + Duration::from_millis(1000), 2000, &mut seq);
    assert_eq!(
        room.leg_layers(BOB),
        vec![(CAM, Some(2), Some(2))],
        "no estimate: the full layer"
    );
    let d = room.downlink(BOB).unwrap();
    assert!(
        d.wanted_bps > 800_000,
        "wants the full layer: {}",
        d.wanted_bps
    );

    room.set_estimate(BOB, 250_000, t0 + Duration::from_millis(3000));
    feed_layers(&mut room, t0 + Duration::from_millis(3000), 2000, &mut seq);
    assert_eq!(
        room.leg_layers(BOB),
        vec![(CAM, Some(0), Some(0))],
        "250 kbit/s: the low layer"
    );

    room.set_estimate(BOB, 3_000_000, t0 + Duration::from_millis(5000));
    feed_layers(&mut room, t0 + Duration::from_millis(5000), 2000, &mut seq);
    assert_eq!(
        room.leg_layers(BOB),
        vec![(CAM, Some(2), Some(2))],
        "back to full"
    );
}

#[test]
fn a_layer_the_publisher_stops_and_restarts_is_not_switched_to_until_it_settles() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut seq = [0u16; 3];
    let mut room = bob_receiving(t0, &mut seq);
    assert_eq!(room.leg_layers(BOB), vec![(CAM, Some(2), Some(2))]);
    // Ada's encoder stops the full layer (its own estimate fell): Bob goes down, and
    // stays down for longer than dynacast's pause delay. The layer is not paused
    // (that would make its return look like ours to resume, taken at once).
    feed_some_layers(&mut room, at(2000), 1000, &mut seq, &[0, 1]);
    assert_eq!(room.leg_layers(BOB), vec![(CAM, Some(1), Some(1))]);
    let out = feed_some_layers(&mut room, at(3000), 4000, &mut seq, &[0, 1]);
    assert_eq!(room.leg_layers(BOB), vec![(CAM, Some(1), Some(1))]);
    let resumed_or_paused = out.iter().any(|o| {
        matches!(o, Output::PublisherLayers { .. })
            || matches!(o, Output::RequestKeyframe { layer: 2, .. })
    });
    assert!(
        !resumed_or_paused,
        "the full layer is left on for Ada: {out:?}"
    );
    // It comes back, as Chromium's does under loss, for a moment at a time.
    for round in 0..3 {
        let from = 7000 + round * 1000;
        let mut out = feed_some_layers(&mut room, at(from), 300, &mut seq, &[0, 1, 2]);
        out.extend(feed_some_layers(
            &mut room,
            at(from + 300),
            700,
            &mut seq,
            &[0, 1],
        ));
        assert_eq!(
            room.leg_layers(BOB),
            vec![(CAM, Some(1), Some(1))],
            "a flapping layer is not switched to (round {round})"
        );
        let paused = out
            .iter()
            .any(|o| matches!(o, Output::PublisherLayers { .. }));
        assert!(
            !paused && room.layer_state(CAM, 2, at(from + 1000)).2,
            "nor paused"
        );
    }
    // Back for good: Bob is moved up once it has flowed LAYER_SETTLE.
    feed_layers(&mut room, at(10000), 1500, &mut seq);
    assert_eq!(
        room.leg_layers(BOB),
        vec![(CAM, Some(1), Some(1))],
        "settling"
    );
    feed_layers(&mut room, at(11500), 1500, &mut seq);
    assert_eq!(
        room.leg_layers(BOB),
        vec![(CAM, Some(2), Some(2))],
        "settled"
    );
}

#[test]
fn a_tile_of_an_unpublished_track_is_forgotten() {
    let t0 = Instant::now();
    let mut room = three_person_room(t0);
    let view = crate::room::View {
        width: 160,
        height: 120,
        visible: true,
    };
    room.set_view(BOB, CAM, view, t0);
    assert!(room.downlink(BOB).unwrap().views.contains_key(&CAM));
    room.unpublish(CAM);
    assert!(room.downlink(BOB).unwrap().views.is_empty());
}

#[test]
fn an_admin_mute_stops_forwarding_until_lifted_and_everyone_hears_of_it() {
    let now = Instant::now();
    let mut room = three_person_room(now);
    let mut out = Vec::new();
    assert!(room.admin_mute(ADA, MediaKind::Audio, true));
    let told: Vec<ParticipantId> = drain(&mut room)
        .into_iter()
        .filter_map(|o| match o {
            Output::Notify {
                to,
                event: RoomEvent::Mute { muted: true, .. },
            } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 3, "Ada too: {told:?}");
    room.route_rtp(MIC, rtp(7, 480, &[1, 2, 3]), now, &mut out);
    assert!(out.is_empty(), "silenced");
    room.set_muted(ADA, MediaKind::Audio, false); // her own unmute does not lift it
    room.route_rtp(MIC, rtp(8, 960, &[1, 2, 3]), now, &mut out);
    assert!(out.is_empty());
    assert!(room.admin_mute(ADA, MediaKind::Audio, false));
    room.route_rtp(MIC, rtp(9, 1440, &[1, 2, 3]), now, &mut out);
    assert_eq!(out.len(), 1);
    assert!(!room.admin_mute(ParticipantId(99), MediaKind::Audio, true));
}

#[test]
fn revoking_the_subscribe_grant_closes_legs_and_granting_it_opens_them() {
    let now = Instant::now();
    let mut room = three_person_room(now);
    assert!(room.set_can_subscribe(BOB, false));
    let outputs = drain(&mut room);
    let closed: Vec<LegId> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::LegClosed { leg, .. } => Some(*leg),
            _ => None,
        })
        .collect();
    assert_eq!(closed.len(), 2, "Bob's camera and mic legs: {closed:?}");
    let unsubscribed = outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::Unsubscribe {
                    subscriber: BOB,
                    ..
                }
            )
        })
        .count();
    assert_eq!(unsubscribed, 2, "and their m-sections are negotiated away");
    let mut out = Vec::new();
    room.route_rtp(MIC, rtp(7, 480, &[1]), now, &mut out);
    assert!(out.is_empty());
    // A leg that was being negotiated meanwhile is closed on arrival.
    room.consumer_ready(
        LegId(9),
        BOB,
        CAM,
        params(999, 96),
        LegStart::fresh(0, 0),
        now,
    );
    assert!(matches!(
        drain(&mut room)[..],
        [Output::LegClosed { leg: LegId(9), .. }]
    ));
    assert!(room.set_can_subscribe(BOB, true));
    let subscribed = drain(&mut room)
        .into_iter()
        .filter(|o| {
            matches!(
                o,
                Output::Subscribe {
                    subscriber: BOB,
                    ..
                }
            )
        })
        .count();
    assert_eq!(subscribed, 2);
}

#[test]
fn a_leg_started_before_its_subscriber_connected_waits_for_a_fresh_keyframe() {
    let t0 = Instant::now();
    let mut room = three_person_room(t0);
    let mut fwd = Vec::new();
    // The keyframe starts Bob's and Cy's legs, but Bob's connection was not up: it
    // never reached him.
    room.route_rtp(CAM, rtp(1, 3000, KEY), t0, &mut fwd);
    assert_eq!(fwd.len(), 2);
    let t1 = t0 + Duration::from_secs(2); // past the keyframe throttle
    room.subscriber_connected(BOB, t1);
    let out = drain(&mut room);
    assert!(
        out.contains(&Output::RequestKeyframe {
            track: CAM,
            layer: 0
        }),
        "a fresh keyframe is asked for: {out:?}"
    );
    fwd.clear();
    room.route_rtp(CAM, rtp(2, 6000, DELTA), t1, &mut fwd);
    assert_eq!(
        fwd.iter().map(|f| f.leg).collect::<Vec<_>>(),
        vec![LegId(2)],
        "Bob waits for the keyframe, Cy goes on"
    );
    fwd.clear();
    room.route_rtp(CAM, rtp(3, 9000, KEY), t1, &mut fwd);
    assert_eq!(fwd.len(), 2, "the keyframe starts Bob's leg again");
    let counts = room.rtp_counts();
    assert_eq!(counts.legs.awaiting_keyframe, 1);
    assert_eq!(
        counts.legs.offered + counts.legs.replayed,
        counts.legs.forwarded + counts.legs.dropped()
    );
}

#[test]
fn a_repeated_mute_is_not_passed_on() {
    let mut room = room_with(&[(ADA, "Ada"), (BOB, "Bob")]);
    for _ in 0..5 {
        room.set_muted(ADA, MediaKind::Audio, true);
    }
    let told = drain(&mut room)
        .into_iter()
        .filter(|o| {
            matches!(
                o,
                Output::Notify {
                    event: RoomEvent::Mute { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(told, 1, "five mutes, one change");
    room.set_muted(ADA, MediaKind::Audio, false);
    assert_eq!(drain(&mut room).len(), 1, "an unmute is a change");
    let snap = room.snapshot_for(BOB);
    assert_eq!(snap.participants.len(), 1, "the others, not Bob himself");
    assert_eq!(snap.participants[0].id, ADA);
}

/// A VP8 packet with a payload descriptor carrying a 15-bit PictureID and TL0PICIDX,
/// `size` bytes long.
fn vp8_packet(picture_id: u16, tl0: u8, keyframe: bool, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    let [hi, lo] = picture_id.to_be_bytes();
    p[..6].copy_from_slice(&[0x90, 0xc0, 0x80 | hi, lo, tl0, u8::from(!keyframe)]);
    p
}

#[test]
fn a_leg_switching_layers_numbers_its_pictures_on_from_the_last_one_sent() {
    // Each of Ada's layers numbers its pictures from its own start, as Chromium's do;
    // Bob's leg goes full, low, full. What Bob receives counts one picture per frame,
    // whatever layer it came from (a receiver drops a picture numbered behind the
    // last it decoded, and looks a frame's reference up by TL0PICIDX).
    let t0 = Instant::now();
    let mut room = room_with(&[(ADA, "Ada"), (BOB, "Bob")]);
    room.publish(ADA, CAM, MediaKind::Video, Codec::Vp8, 3, t0)
        .unwrap();
    room.consumer_ready(LegId(1), BOB, CAM, params(1, 96), LegStart::fresh(0, 0), t0);
    drain(&mut room);
    let picture_base: [u16; 3] = [30_000, 12, 20_000];
    let tl0_base: [u8; 3] = [250, 7, 100];
    let mut seq = [0u16; 3];
    let mut received: Vec<u16> = Vec::new();
    let mut tl0s: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut layers_seen = Vec::new();
    for frame in 0..240u16 {
        let now = t0 + Duration::from_millis(33 * frame as u64);
        match frame {
            60 => room.set_estimate(BOB, 250_000, now),
            150 => room.set_estimate(BOB, 5_000_000, now),
            _ => {}
        }
        for layer in 0..3 {
            let picture_id = picture_base[layer].wrapping_add(frame) & 0x7fff;
            let tl0 = tl0_base[layer].wrapping_add(frame as u8);
            // Keyframes on request and every 30 frames.
            let payload = vp8_packet(
                picture_id,
                tl0,
                frame % 30 == 0 || frame % 30 == 15,
                [200, 500, 1500][layer],
            );
            let rtp = RtpIn {
                layer,
                sequence_number: seq[layer],
                timestamp: 3000 * frame as u32,
                payload: &payload,
                audio_level: None,
            };
            seq[layer] = seq[layer].wrapping_add(1);
            out.clear();
            room.route_rtp(CAM, rtp, now, &mut out);
            for f in &out {
                let sent = f
                    .header
                    .vp8
                    .or(Codec::Vp8.picture_numbering(&payload))
                    .unwrap();
                received.push(sent.picture_id.unwrap());
                tl0s.push(sent.tl0_pic_idx.unwrap());
                if layers_seen.last() != Some(&layer) {
                    layers_seen.push(layer);
                }
            }
        }
        if room.poll_timeout().is_some_and(|d| d <= now) {
            room.handle_timeout(now);
        }
        drain(&mut room);
    }
    assert!(
        layers_seen.len() >= 3 && layers_seen.contains(&0),
        "the leg switched down and up again: {layers_seen:?}"
    );
    for (pair, tl0) in received.windows(2).zip(tl0s.windows(2)) {
        assert_eq!(
            pair[1],
            (pair[0] + 1) & 0x7fff,
            "one picture after another across switches: {received:?}"
        );
        assert_eq!(tl0[1], tl0[0].wrapping_add(1));
    }
}

/// Ada's 3-layer camera, Bob receiving it from 1 s after `t0`, fed until 2 s.
fn bob_receiving(t0: Instant, seq: &mut [u16; 3]) -> Room {
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut room = ada_simulcasting(t0, seq);
    room.consumer_ready(
        LegId(1),
        BOB,
        CAM,
        params(1, 96),
        LegStart::fresh(0, 0),
        at(1000),
    );
    feed_layers(&mut room, at(1000), 1000, seq);
    room
}

/// As [`bob_receiving`], with Bob's leg on the low layer 3 s after `t0` (his estimate
/// fell to 250 kbit/s at 2 s).
fn bob_on_the_low_layer(t0: Instant, seq: &mut [u16; 3]) -> Room {
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut room = bob_receiving(t0, seq);
    room.set_estimate(BOB, 250_000, at(2000));
    feed_layers(&mut room, at(2000), 1000, seq);
    assert_eq!(room.leg_layers(BOB), vec![(CAM, Some(0), Some(0))]);
    room
}

#[test]
fn a_leg_just_raised_is_not_lowered_for_its_own_keyframe_but_is_for_a_falling_estimate() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut seq = [0u16; 3];
    let mut room = bob_on_the_low_layer(t0, &mut seq);
    // Room for the full layer (about 890 kbit/s here) and its upgrade margin, little
    // more: the leg climbs once the holds are over.
    room.set_estimate(BOB, 1_300_000, at(3000));
    let mut t = 3000;
    while room.leg_layers(BOB)[0].2 != Some(2) {
        assert!(t < 9000, "the leg climbs to the full layer");
        feed_layers(&mut room, at(t), 250, &mut seq);
        t += 250;
    }
    let raised = t;
    let cost_before = room.layer_state(CAM, 2, at(raised)).0;
    // Its keyframe: 70 packets of one picture on the full layer, as much as the layer
    // sends in a third of a second.
    let mut out = Vec::new();
    for i in 0..70 {
        let mut payload = vec![0u8; 600];
        payload[..2].copy_from_slice(&if i == 0 { KEY } else { DELTA }[..2]);
        let rtp = RtpIn {
            layer: 2,
            sequence_number: seq[2],
            timestamp: (raised * 90) as u32 + 1,
            payload: &payload,
            audio_level: None,
        };
        seq[2] = seq[2].wrapping_add(1);
        room.route_rtp(CAM, rtp, at(raised), &mut out);
    }
    assert_eq!(
        room.layer_state(CAM, 2, at(raised)).0,
        cost_before,
        "the keyframe does not price the layer"
    );
    feed_layers(&mut room, at(raised), 1000, &mut seq);
    assert_eq!(
        room.leg_layers(BOB)[0].2,
        Some(2),
        "not lowered for the keyframe it asked for"
    );
    // A falling estimate lowers it at once.
    room.set_estimate(BOB, 500_000, at(raised + 1000));
    feed_layers(&mut room, at(raised + 1000), 300, &mut seq);
    assert!(
        room.leg_layers(BOB)[0].2 < Some(2),
        "{:?}",
        room.leg_layers(BOB)
    );
}

#[test]
fn a_leg_goes_up_only_with_room_to_spare() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut seq = [0u16; 3];
    let mut room = bob_on_the_low_layer(t0, &mut seq);
    // 90 % of the estimate covers the full layer, not the full layer and a 15 % margin:
    // a budget wobbling around a layer's cost must not move the leg up and down.
    let full = room.layer_state(CAM, 2, at(3000)).0;
    room.set_estimate(BOB, full * 105 / 100 * 10 / 9, at(3000));
    feed_layers(&mut room, at(3000), 8000, &mut seq);
    assert_eq!(
        room.leg_layers(BOB),
        vec![(CAM, Some(1), Some(1))],
        "the middle layer, not the full one it just affords"
    );
    room.set_estimate(BOB, full * 120 / 100 * 10 / 9, at(11_000));
    feed_layers(&mut room, at(11_000), 1000, &mut seq);
    assert_eq!(room.leg_layers(BOB), vec![(CAM, Some(2), Some(2))]);
}
