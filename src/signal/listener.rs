//! The HTTP accept loop: the axum router served by hyper's HTTP/1 connection builder
//! directly, because `axum::serve` has no knob for the two limits a server facing the
//! internet needs before any handler runs:
//! - a deadline for a request's headers (hyper's `header_read_timeout`): a client that
//!   sends half a request and stalls, or connects and sends nothing, is closed;
//! - a cap on connections open at once from one IP address. The count travels with the
//!   socket ([`Counted`]), so a connection upgraded to a WebSocket keeps its place
//!   until the WebSocket closes.
//!
//! Both fire counted (`http_header_timeouts`, `http_connections_refused`).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use crate::metrics::Metrics;

#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    /// 0: no cap.
    pub max_connections_per_ip: usize,
}

/// Open connections per address.
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place in the per-address count, given back when dropped.
struct Slot {
    ip: IpAddr,
    counts: Counts,
}

impl Slot {
    fn take(counts: &Counts, ip: IpAddr, cap: usize) -> Option<Slot> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let open = map.entry(ip).or_insert(0);
        if cap != 0 && *open >= cap {
            return None;
        }
        *open += 1;
        Some(Slot {
            ip,
            counts: counts.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A TCP stream that holds its [`Slot`]: hyper hands the stream itself to the
/// WebSocket on upgrade, so the slot is given back when the socket closes, whichever
/// of HTTP or the WebSocket had it last.
struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting and
/// lets each open HTTP connection finish its request (WebSockets end with the engine).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let counts: Counts = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, or the peer gave up mid-handshake: the
                    // listener itself is fine; a short pause keeps an EMFILE from spinning.
                    debug!("accept failed: {e}");
                    Metrics::inc(&metrics.http_accept_errors);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = Slot::take(&counts, peer.ip(), limits.max_connections_per_ip) else {
            Metrics::inc(&metrics.http_connections_refused);
            continue; // dropped: the client sees the connection closed
        };
        // No TCP_NODELAY (axum::serve sets none either): with it, tests/simulcast.rs's
        // throttled subscriber was paused, or lifted past its limit, in 2-4 runs of 8
        // (0 of 8 without). Faster `layers` messages to the publisher expose a race
        // between dynacast and the allocator that is not understood yet.
        let io = TokioIo::new(Counted {
            stream,
            _slot: slot,
        });
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    Metrics::inc(&metrics.http_header_timeouts);
                }
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(stop_tx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_given_back() {
        let counts = Counts::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = Slot::take(&counts, a, 2).unwrap();
        let _second = Slot::take(&counts, a, 2).unwrap();
        assert!(
            Slot::take(&counts, a, 2).is_none(),
            "a third from one address"
        );
        assert!(
            Slot::take(&counts, b, 2).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert!(
            Slot::take(&counts, a, 2).is_some(),
            "a closed one frees its place"
        );
        assert!(Slot::take(&counts, a, 0).is_some(), "0: no cap");
    }

    #[test]
    fn the_map_forgets_addresses_with_nothing_open() {
        let counts = Counts::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        drop(Slot::take(&counts, a, 1));
        assert!(counts.lock().unwrap().is_empty());
    }
}
