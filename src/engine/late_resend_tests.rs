//! A publisher's resend that comes back late is still decrypted. Browsers resend a lost
//! packet under its own number (we negotiate no RTX), so by the time the server's NACK
//! has been answered the stream may be hundreds of packets further on; rtc's default
//! SRTP replay window (64) refused such a resend as a replay, the packet was lost for
//! good, and every subscriber's picture froze until it asked for a keyframe.

use std::time::Instant;

use rtc::peer_connection::message::RTCMessage;

use super::build::SRTP_REPLAY_WINDOW;
use super::fuzz_tests::{
    connected_session, pump_reading, video_packet, video_payload_type, Session,
};

/// Sends packets `0..newer` except `late`, then `late`; returns the sequence numbers the
/// server's application read, in order.
fn send_with_one_late(newer: u16, late: u16) -> Vec<u16> {
    let mut s = connected_session(Instant::now());
    let pt = video_payload_type(&mut s);
    let mut read = Vec::new();
    let send = |s: &mut Session, seq: u16, read: &mut Vec<u16>| {
        s.client
            .rtp_sender(s.sender)
            .unwrap()
            .write_rtp(Instant::now(), video_packet(pt, seq))
            .unwrap();
        let mut rounds = 0;
        pump_reading(
            &mut s.server,
            &mut s.client,
            |_| {
                rounds += 1;
                rounds > 2
            },
            |m| {
                if let RTCMessage::RtpPacket(_, p) = m {
                    read.push(p.header.sequence_number);
                }
            },
        );
    };
    for seq in (0..newer).filter(|&q| q != late) {
        send(&mut s, seq, &mut read);
    }
    send(&mut s, late, &mut read);
    read
}

#[test]
fn a_resend_after_hundreds_of_newer_packets_still_reaches_the_room() {
    let late = 10;
    let newer = 400; // a full layer's ~2 s, or one keyframe and a little more
    assert!(usize::from(newer - late) < SRTP_REPLAY_WINDOW);
    let read = send_with_one_late(newer, late);
    assert_eq!(
        read.len(),
        usize::from(newer),
        "every packet read, the late one included"
    );
    assert_eq!(
        read.last(),
        Some(&late),
        "the resend came last and got through"
    );
}
