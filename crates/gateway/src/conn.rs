//! One accepted client connection: its TCP options, and the write side that lets a burst of
//! tokens leave in one write instead of one write per token.
//!
//! The upstream's body reaches a stream's pump one HTTP chunk at a time (hyper's client hands
//! over a chunk only after the previous one was taken, and its connection task runs between
//! them), and the server writes whatever the body has produced each time the body waits. When an
//! upstream sends a burst (a fast model, a replayed answer), that is one small `writev` per token,
//! and on two shared cores each write costs more than everything else a token costs. So when the
//! pump has just taken a chunk that followed the previous one closely ([`FlushHint::burst`]),
//! the next write on its connection is put off once: the task yields, the upstream's connection
//! task delivers the next chunk, and both leave in one write. A token that arrives alone (a
//! model's normal pace) is written at once.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Chunks closer together than this are a burst: the next write waits for the following one.
pub const BURST_GAP: Duration = Duration::from_millis(3);

/// Shared between a connection's write side and the pump driven by its response body (passed
/// in the request's extensions).
#[derive(Debug, Clone, Default)]
pub struct FlushHint(Arc<AtomicBool>);

impl FlushHint {
    /// More upstream data is probably a moment away: put the next write off once.
    pub fn burst(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::Relaxed)
    }
}

/// A client's TCP stream whose writes honour the [`FlushHint`].
pub struct Conn {
    tcp: TcpStream,
    hint: FlushHint,
}

impl Conn {
    pub fn new(tcp: TcpStream) -> (Self, FlushHint) {
        // Events are small writes in quick succession: without TCP_NODELAY, Nagle's algorithm
        // would hold each one back until the previous is acknowledged.
        let _ = tcp.set_nodelay(true);
        let hint = FlushHint::default();
        (
            Self {
                tcp,
                hint: hint.clone(),
            },
            hint,
        )
    }

    /// Puts a write off once when a burst is under way: wakes this task to run again after the
    /// tasks already queued (the upstream's among them) and reports the write as pending.
    fn defer(&self, cx: &mut Context<'_>) -> bool {
        if self.hint.take() {
            cx.waker().wake_by_ref();
            return true;
        }
        false
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.defer(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.defer(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_hinted_write_is_put_off_once_then_goes_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            out
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut conn, hint) = Conn::new(tcp);
        hint.burst();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut conn).poll_write(&mut cx, b"a").is_pending());
        // The hint is used up: the same write now goes out.
        conn.write_all(b"ab").await.unwrap();
        conn.shutdown().await.unwrap();
        drop(conn);
        assert_eq!(client.await.unwrap(), b"ab");
    }
}
