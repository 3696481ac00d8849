//! A scripted raw-bytes upstream: answers every request with a fixed list of steps (write these
//! bytes, flush, sleep, close), one TCP write per step, so tests control exactly how the bytes
//! are split. It records each request and notices when a client closes its connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub enum Step {
    /// Write these bytes in one write call.
    Write(Vec<u8>),
    /// Wait.
    Sleep(Duration),
    /// Close the connection abruptly (RST where the OS allows), without ending the body.
    Reset,
}

/// A raw HTTP/1.1 head with a chunked SSE body: use `sse_head()` then `chunk(...)` steps.
/// `connection: close`: a script serves one request per connection, so the client must not
/// reuse it.
pub fn sse_head() -> Step {
    Step::Write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec(),
    )
}

/// One chunk of a chunked body.
pub fn chunk(bytes: &[u8]) -> Step {
    let mut v = format!("{:x}\r\n", bytes.len()).into_bytes();
    v.extend_from_slice(bytes);
    v.extend_from_slice(b"\r\n");
    Step::Write(v)
}

/// The end of a chunked body.
pub fn end_chunks() -> Step {
    Step::Write(b"0\r\n\r\n".to_vec())
}

/// A complete response with a fixed body.
pub fn full_response(status: u16, content_type: &str, extra_headers: &str, body: &[u8]) -> Step {
    let mut v = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra_headers}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    Step::Write(v)
}

#[derive(Default)]
pub struct Recorded {
    /// Raw request heads and bodies, in arrival order.
    pub requests: Mutex<Vec<(String, Vec<u8>)>>,
    /// Connections whose client closed the socket while the script was still running or after.
    pub client_closed: AtomicUsize,
    pub connections: AtomicUsize,
}

pub struct ScriptedUpstream {
    pub addr: std::net::SocketAddr,
    pub recorded: Arc<Recorded>,
}

impl ScriptedUpstream {
    /// Base URL in the form providers take (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<(String, Vec<u8>)> {
        self.recorded.requests.lock().expect("lock").clone()
    }

    pub fn client_closed(&self) -> usize {
        self.recorded.client_closed.load(Ordering::SeqCst)
    }
}

/// Serves `steps` to every connection. Call from within a tokio runtime.
pub async fn serve(steps: Vec<Step>) -> ScriptedUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recorded = Arc::new(Recorded::default());
    let rec = recorded.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let _ = sock.set_nodelay(true);
            let steps = steps.clone();
            let rec = rec.clone();
            rec.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Read the head and a content-length body.
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                let head_end = loop {
                    let Ok(n) = sock.read(&mut tmp).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let Ok(n) = sock.read(&mut tmp).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                rec.requests
                    .lock()
                    .expect("lock")
                    .push((head, buf[head_end..].to_vec()));
                let (mut rd, mut wr) = sock.into_split();
                // Watch for the client closing its side while we play the script.
                let rec2 = rec.clone();
                let watcher = tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    loop {
                        match rd.read(&mut b).await {
                            Ok(0) | Err(_) => {
                                rec2.client_closed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(_) => {}
                        }
                    }
                });
                for step in steps {
                    match step {
                        Step::Write(bytes) => {
                            if wr.write_all(&bytes).await.is_err() {
                                return;
                            }
                            let _ = wr.flush().await;
                        }
                        Step::Sleep(d) => tokio::time::sleep(d).await,
                        Step::Reset => {
                            watcher.abort();
                            return;
                        }
                    }
                }
                // Script done: keep the socket open until the client closes it, so tests can
                // see who closes first; a script that wants the body to end writes the end.
                let _ = watcher.await;
            });
        }
    });
    ScriptedUpstream { addr, recorded }
}

/// A loopback address that refuses connections for as long as this value lives: its port is
/// bound, so no other test's listener can be given it meanwhile (a port bound and then released
/// can be), but nothing listens on it.
pub struct RefusedPort {
    _socket: tokio::net::TcpSocket,
    pub addr: std::net::SocketAddr,
}

pub fn refused_port() -> RefusedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    RefusedPort {
        _socket: socket,
        addr,
    }
}
