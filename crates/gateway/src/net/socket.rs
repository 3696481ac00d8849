//! One accepted client connection: its TCP options, and the write side that lets a burst of
//! tokens leave in one write instead of one write per token.
//!
//! The upstream's body reaches a stream's pump one HTTP chunk at a time (hyper's client hands
//! over a chunk only after the previous one was taken, and its connection task runs between
//! them), and the server writes whatever the body has produced each time the body waits. When an
//! upstream sends a burst (a fast model, a replayed answer), that is one small `writev` per token,
//! and on two shared cores each write costs more than everything else a token costs. So when the
//! pump has just taken a run of chunks that each followed the one before closely
//! ([`FlushHint::burst`]; the rule is in `generation::pump`), the next write on its connection is
//! put off once: the task yields, the upstream's connection task delivers the next chunk, and
//! both leave in one write. A token that arrives alone (a model's normal pace) is written at
//! once, and so is a pair of tokens taken back to back because the machine was busy: putting
//! that off would bunch a slow stream's frames further when the machine is loaded.
//!
//! A yield waits for every task queued before it, and for the CPU. When the deferred write comes
//! back later than a model's token interval ([`LATE_ROUND`]), the machine is loaded: its streams'
//! chunks may only look like bursts because they are taken late, and each deferred write would
//! wait another such round (at 2,048 trickled streams on two cores, frames held past 200 ms).
//! So that connection writes at once for [`LOADED_PAUSE`]. (A shorter limit, a burst's own gap,
//! also turned coalescing off in real bursts on this busy 2-core machine, where a process is
//! preempted for milliseconds at a time: burst throughput at C=50 fell from 0.42 to 0.28 of a
//! direct connection; at 20 ms it is 0.34.)
//!
//! Writes also have a progress deadline ([`Conn::with_write_timeout`]): a client that stops
//! reading its socket (its receive window closed) leaves a write pending for ever, hyper stops
//! polling the response body, and a stream's pump running inside that body would freeze with its
//! slots and its upstream connection. When a write accepts no byte for the whole timeout, the
//! write fails with `TimedOut`: hyper closes the connection and drops the body, and the pump
//! runs on by itself (the grace period then applies, as when a reader leaves). The timer is armed
//! only when a write is pending, so a write that goes out at once costs nothing more. Progress is
//! what the kernel accepts: once the send buffer is full it takes more after the client has read
//! about a third of it (tens of KB over a network), so a client has to read at least that much
//! per timeout to stay connected.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What an HTTP/2 client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Chunks closer together than this are a burst: the next write waits for the following one.
pub const BURST_GAP: Duration = Duration::from_millis(3);

/// A put-off write that comes back later than this waited a scheduler round long enough to show
/// in a stream's pace (see the module doc).
const LATE_ROUND: Duration = Duration::from_millis(20);

/// How long a connection writes at once after a deferred write came back late.
const LOADED_PAUSE: Duration = Duration::from_secs(1);

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

/// A client's TCP stream whose writes honour the [`FlushHint`] and fail after making no
/// progress for the write timeout.
pub struct Conn {
    tcp: TcpStream,
    hint: FlushHint,
    /// `None`: writes may wait for ever.
    write_timeout: Option<Duration>,
    /// The deadline of the write pending now; made at the first stall, then reused.
    stall: Option<Pin<Box<Sleep>>>,
    /// A write is pending and `stall` is armed for it.
    stalled: bool,
    /// When the write pending now was put off (see [`Conn::defer`]).
    deferred_at: Option<Instant>,
    /// Writes are not put off before this: a deferred write came back late.
    writes_at_once_until: Option<Instant>,
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
                write_timeout: None,
                stall: None,
                stalled: false,
                deferred_at: None,
                writes_at_once_until: None,
            },
            hint,
        )
    }

    /// Whether the client speaks HTTP/1, from its first bytes, peeked (left for hyper to read):
    /// `Some(false)` for HTTP/2's connection preface, or a part of it too short to tell;
    /// `None` when the client closed before sending a byte.
    pub async fn speaks_http1(&self) -> io::Result<Option<bool>> {
        let mut first = [0u8; H2_PREFACE.len()];
        let n = self.tcp.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(!H2_PREFACE.starts_with(&first[..n])))
    }

    /// Fails a write that accepts no byte for `timeout` (zero: never).
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Tracks a write's progress: a ready write disarms the deadline (one store); a pending one
    /// arms it if it is not armed yet, and fails once it has passed.
    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = false;
            return r;
        }
        let Some(timeout) = self.write_timeout else {
            return r;
        };
        let sleep = match &mut self.stall {
            // Still the same stall: its deadline stands.
            Some(sleep) if self.stalled => sleep,
            stall => {
                self.stalled = true;
                let deadline = Instant::now() + timeout;
                match stall {
                    Some(sleep) => {
                        sleep.as_mut().reset(deadline);
                        sleep
                    }
                    None => stall.insert(Box::pin(tokio::time::sleep_until(deadline))),
                }
            }
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Puts a write off once when a burst is under way: wakes this task to run again after the
    /// tasks already queued (the upstream's among them) and reports the write as pending. Not
    /// while the machine is loaded (see the module doc).
    fn defer(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(at) = self.deferred_at.take() {
            // The write put off last time, back: it goes now, and the wait says whether
            // putting writes off pays.
            let now = Instant::now();
            if now.duration_since(at) > LATE_ROUND {
                self.writes_at_once_until = Some(now + LOADED_PAUSE);
            }
            return false;
        }
        if !self.hint.take() {
            return false;
        }
        let now = Instant::now();
        if self.writes_at_once_until.is_some_and(|until| now < until) {
            return false;
        }
        self.deferred_at = Some(now);
        cx.waker().wake_by_ref();
        true
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
        let r = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.progress(cx, r)
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
        let r = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TCP flush is immediate: it says nothing of the peer's progress.
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
// The tests' peers are plain tasks with nothing to shut down.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer that never reads: writes fill both socket buffers, then the next one waits; after
    /// the timeout without progress it fails, so the server closes the connection.
    #[tokio::test]
    async fn a_write_that_makes_no_progress_fails_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let _peer = socket.connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let (conn, _) = Conn::new(tcp);
        let mut conn = conn.with_write_timeout(Duration::from_millis(300));
        let chunk = vec![b'x'; 64 * 1024];
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Err(e) = conn.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await
        .expect("the stalled write failed");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    /// A slow reader makes progress: each write it takes moves the deadline, so a stream to a
    /// slow but live client is never cut.
    ///
    /// The kernel lets a blocked writer go on once the peer has taken about a third of the
    /// socket's send buffer, so "progress" is seen in steps of that size. Over a network the
    /// send buffer of a connection to a slow client stays small (tens of KB); loopback's 64 KB
    /// segments grow it to megabytes, so the test fixes it at a network-like size.
    #[tokio::test]
    async fn a_slow_reader_is_not_timed_out() {
        let listen = tokio::net::TcpSocket::new_v4().unwrap();
        // Inherited by the accepted (reading) socket.
        listen.set_recv_buffer_size(4096).unwrap();
        listen.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listen.local_addr().unwrap();
        let listener = listen.listen(8).unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(64 * 1024).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        let (conn, _) = Conn::new(tcp);
        let mut conn = conn.with_write_timeout(Duration::from_millis(500));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if matches!(peer.read(&mut buf).await, Ok(0) | Err(_)) {
                    return;
                }
            }
        });
        let chunk = vec![b'x'; 64 * 1024];
        let writing = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                if let Err(e) = conn.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await;
        assert!(writing.is_err(), "a live reader was timed out: {writing:?}");
    }

    /// A connected pair: the accepted side wrapped as a [`Conn`], and the client's stream.
    async fn pair() -> (Conn, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        (Conn::new(tcp).0, client)
    }

    /// During a burst a write is put off once (to leave with the next chunk); once a put-off
    /// write comes back later than a model's token interval (a loaded machine, whose rounds
    /// would bunch a stream's frames further), writes go at once for a while.
    #[tokio::test(start_paused = true)]
    async fn a_burst_puts_a_write_off_once_unless_the_machine_is_loaded() {
        let (mut conn, _client) = pair().await;
        let hint = conn.hint.clone();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut write = |conn: &mut Conn| Pin::new(conn).poll_write(&mut cx, b"data: x\n\n");
        assert!(write(&mut conn).is_ready(), "no burst: at once");
        hint.burst();
        assert!(write(&mut conn).is_pending(), "a burst: put off once");
        assert!(write(&mut conn).is_ready(), "then written");
        hint.burst();
        assert!(write(&mut conn).is_pending());
        tokio::time::advance(LATE_ROUND * 2).await;
        assert!(write(&mut conn).is_ready(), "back late: written");
        hint.burst();
        assert!(
            write(&mut conn).is_ready(),
            "loaded: bursts are not waited for"
        );
        tokio::time::advance(LOADED_PAUSE).await;
        hint.burst();
        assert!(
            write(&mut conn).is_pending(),
            "after the pause, put off again"
        );
    }

    /// The protocol is told from the first bytes without taking them: hyper reads the whole
    /// request head itself (into one buffer of its initial size).
    #[tokio::test]
    async fn an_http1_request_is_told_by_peeking_and_left_to_read() {
        let (mut conn, mut client) = pair().await;
        let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(head).await.unwrap();
        assert_eq!(conn.speaks_http1().await.unwrap(), Some(true));
        let mut read = vec![0u8; head.len()];
        conn.read_exact(&mut read).await.unwrap();
        assert_eq!(read, head);
    }

    #[tokio::test]
    async fn the_http2_preface_or_a_part_of_it_is_not_http1() {
        let (conn, mut client) = pair().await;
        client.write_all(&H2_PREFACE[..3]).await.unwrap();
        assert_eq!(conn.speaks_http1().await.unwrap(), Some(false));
        let (conn, mut client) = pair().await;
        client.write_all(H2_PREFACE).await.unwrap();
        assert_eq!(conn.speaks_http1().await.unwrap(), Some(false));
        // One byte of a method that shares the preface's first letter is not enough to tell.
        let (conn, mut client) = pair().await;
        client.write_all(b"P").await.unwrap();
        assert_eq!(conn.speaks_http1().await.unwrap(), Some(false));
        let (conn, mut client) = pair().await;
        client.write_all(b"PO").await.unwrap();
        assert_eq!(conn.speaks_http1().await.unwrap(), Some(true));
    }

    #[tokio::test]
    async fn a_client_that_closes_before_a_byte_has_no_protocol() {
        let (conn, client) = pair().await;
        drop(client);
        assert_eq!(conn.speaks_http1().await.unwrap(), None);
    }

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
