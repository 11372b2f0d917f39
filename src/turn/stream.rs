//! TURN clients over TCP and TLS: a listener per port and a task per connection. The
//! task cuts the byte stream into whole TURN frames (a STUN message or a ChannelData
//! message: both say their own length) and hands them to the service; what the service
//! sends back waits in a bounded queue. TLS is terminated here with rustls, so the TURN
//! library sees the same plaintext stream for both.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::counters::TurnCounters;

/// Connections (TCP and TLS together) the server holds at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// A connection must finish its TLS handshake and send a first frame this soon.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection silent this long is closed. Browsers send ICE consent checks through
/// their relay every few seconds, and refresh the allocation every few minutes.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A write the client does not take this soon closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames queued towards one client; more are dropped and counted.
pub const SEND_QUEUE: usize = 256;
/// The largest frame accepted: a STUN message or ChannelData carrying one datagram.
const MAX_FRAME: usize = 4096;

/// What a connection tells the service.
#[derive(Debug)]
pub enum StreamEvent {
    Opened {
        listen: SocketAddr,
        client: SocketAddr,
        out: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        listen: SocketAddr,
        client: SocketAddr,
        frame: Vec<u8>,
    },
    Closed {
        listen: SocketAddr,
        client: SocketAddr,
    },
}

/// The length of the TURN frame at the start of `buf`, once its header is there.
/// STUN: 20-byte header plus the length field. ChannelData (first byte 0x40-0x7f): a
/// 4-byte header plus the length field, padded to 4 over a stream (RFC 8656 12.5).
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    match buf[0] >> 6 {
        0 => Some(20 + len),
        1 => Some(4 + len.div_ceil(4) * 4),
        _ => Some(usize::MAX),
    }
}

/// Accepts TURN clients on `listener` (TLS when `tls` is set) until the service goes.
pub fn spawn_listener(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    events: mpsc::Sender<StreamEvent>,
    open: Arc<AtomicUsize>,
    counters: Arc<TurnCounters>,
) -> std::io::Result<SocketAddr> {
    let listen = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, client) = match listener.accept().await {
                Ok(pair) => pair,
                Err(_) => {
                    counters.connections_refused.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if events.is_closed() {
                return;
            }
            if open.fetch_add(1, Relaxed) >= MAX_CONNECTIONS {
                open.fetch_sub(1, Relaxed);
                counters.connections_refused.fetch_add(1, Relaxed);
                continue;
            }
            counters.connections_accepted.fetch_add(1, Relaxed);
            let (events, open, counters, tls) =
                (events.clone(), open.clone(), counters.clone(), tls.clone());
            tokio::spawn(async move {
                serve(stream, tls, listen, client, events, &counters).await;
                open.fetch_sub(1, Relaxed);
            });
        }
    });
    Ok(listen)
}

async fn serve(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    listen: SocketAddr,
    client: SocketAddr,
    events: mpsc::Sender<StreamEvent>,
    counters: &TurnCounters,
) {
    match tls {
        None => relay(stream, listen, client, events, counters).await,
        Some(acceptor) => {
            match tokio::time::timeout(FIRST_FRAME_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => relay(tls, listen, client, events, counters).await,
                _ => {
                    counters.connections_refused.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// Frames in to the service, queued frames out, until either side ends or a deadline
/// fires.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    listen: SocketAddr,
    client: SocketAddr,
    events: mpsc::Sender<StreamEvent>,
    counters: &TurnCounters,
) {
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(SEND_QUEUE);
    if events
        .send(StreamEvent::Opened {
            listen,
            client,
            out: out_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let mut buf = BytesMut::with_capacity(MAX_FRAME);
    let opened = tokio::time::Instant::now();
    let mut framed_once = false;
    // When the bytes waiting in `buf` (part of a frame) began to arrive.
    let mut partial_since = opened;
    loop {
        // A first frame, and then every frame once begun, must arrive whole within
        // FIRST_FRAME_TIMEOUT (a slowloris trickling a header); between frames the
        // connection may idle for IDLE_TIMEOUT.
        let deadline = if !framed_once {
            opened + FIRST_FRAME_TIMEOUT
        } else if !buf.is_empty() {
            partial_since + FIRST_FRAME_TIMEOUT
        } else {
            tokio::time::Instant::now() + IDLE_TIMEOUT
        };
        let was_empty = buf.is_empty();
        tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => {
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(_) => break,
                    Err(_) => {
                        counters.connections_timed_out.fetch_add(1, Relaxed);
                        break;
                    }
                }
                if was_empty {
                    partial_since = tokio::time::Instant::now();
                }
                let mut bad = false;
                while let Some(len) = frame_len(&buf) {
                    if len > MAX_FRAME {
                        bad = true;
                        break;
                    }
                    if buf.len() < len {
                        break;
                    }
                    let frame = buf[..len].to_vec();
                    buf.advance(len);
                    framed_once = true;
                    partial_since = tokio::time::Instant::now();
                    if events.send(StreamEvent::Frame { listen, client, frame }).await.is_err() {
                        return;
                    }
                }
                if bad {
                    counters.frames_refused.fetch_add(1, Relaxed);
                    break;
                }
            }
            out = out_rx.recv() => {
                let Some(bytes) = out else { break };
                match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        counters.connections_timed_out.fetch_add(1, Relaxed);
                        break;
                    }
                }
            }
        }
    }
    let _ = events.send(StreamEvent::Closed { listen, client }).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_say_their_own_length() {
        assert_eq!(frame_len(&[0, 1, 0]), None);
        // A STUN header announcing 8 bytes of attributes.
        assert_eq!(frame_len(&[0x00, 0x01, 0x00, 0x08]), Some(28));
        // ChannelData of 5 bytes is padded to 8 over a stream.
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x05]), Some(12));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x08]), Some(12));
        // Neither (RTP, TLS records): refused.
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Some(usize::MAX));
        // A TLS record header reads as a STUN header of 256 bytes; the TURN library
        // then refuses what it is.
        assert_eq!(frame_len(&[0x16, 3, 1, 0]), Some(276));
    }
}
