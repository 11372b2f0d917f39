//! Microbenchmarks of the pure forwarding path: one published track to N subscribers
//! (routing decision, per-leg rewrite and the packet copy the room actor makes), and the
//! sequence/timestamp rewriter alone. No sockets, no encryption: the floor under
//! everything the load tester measures.
//!
//!     cargo bench --bench forward

use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rtc::rtp;
use switchyard::engine::rewrite::apply_rewrite;
use switchyard::id::{LegId, MediaKind, ParticipantId, TrackId};
use switchyard::room::rewrite::SeqTsRewriter;
use switchyard::room::{Codec, ExtMap, LegParams, LegStart, Room, RtpIn};

const TRACK: TrackId = TrackId(1);

/// A room where participant 0 publishes VP8 and `n` others receive it.
fn room_with_subscribers(n: u64) -> Room {
    let now = Instant::now();
    let mut room = Room::new(n as usize + 1);
    room.join(ParticipantId(0), "publisher").unwrap();
    room.publish(
        ParticipantId(0),
        TRACK,
        MediaKind::Video,
        Codec::Vp8,
        1,
        now,
    )
    .unwrap();
    for i in 1..=n {
        room.join(ParticipantId(i), &format!("s{i}")).unwrap();
        let params = LegParams {
            ssrc: i as u32,
            payload_type: 96,
            ext_map: ExtMap::default(),
        };
        room.consumer_ready(
            LegId(i),
            ParticipantId(i),
            TRACK,
            params,
            LegStart::fresh(i as u16, i as u32),
            now,
        );
    }
    // Open every leg with a keyframe.
    let mut out = Vec::new();
    room.route_rtp(
        TRACK,
        RtpIn {
            layer: 0,
            audio_level: None,
            sequence_number: 0,
            timestamp: 0,
            payload: &[0x10, 0x00, 0x9d],
        },
        now,
        &mut out,
    );
    while room.poll_output().is_some() {}
    room
}

fn packet(seq: u16) -> rtp::Packet {
    // A 1100-byte VP8 interframe packet.
    let mut payload = vec![0u8; 1100];
    payload[..2].copy_from_slice(&[0x10, 0x01]);
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: seq as u32 * 3000,
            ssrc: 7,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    }
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out");
    for n in [1u64, 10, 100, 500] {
        let mut room = room_with_subscribers(n);
        let mut out = Vec::with_capacity(n as usize);
        let mut sent: Vec<rtp::Packet> = Vec::with_capacity(n as usize);
        let mut seq = 1u16;
        let now = Instant::now();
        let base = packet(0); // payload bytes are shared, as webrtc-rs hands them over
                              // Per forwarded packet: divide the reported time per iteration by n.
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let mut p = base.clone();
                p.header.sequence_number = seq;
                p.header.timestamp = seq as u32 * 3000;
                seq = seq.wrapping_add(1);
                out.clear();
                room.route_rtp(
                    TRACK,
                    RtpIn {
                        layer: 0,
                        audio_level: None,
                        sequence_number: p.header.sequence_number,
                        timestamp: p.header.timestamp,
                        payload: &p.payload,
                    },
                    now,
                    &mut out,
                );
                sent.clear();
                for f in &out {
                    let mut copy = p.clone();
                    apply_rewrite(&mut copy.header, &f.header);
                    sent.push(copy);
                }
                std::hint::black_box(&sent);
            })
        });
    }
    group.finish();
}

fn rewriter(c: &mut Criterion) {
    let mut rw = SeqTsRewriter::new(1000, 5000);
    let mut seq = 0u16;
    c.bench_function("seq_ts_rewrite", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            std::hint::black_box(rw.rewrite(std::hint::black_box(seq), seq as u32 * 3000))
        })
    });
}

criterion_group!(benches, fan_out, rewriter);
criterion_main!(benches);
