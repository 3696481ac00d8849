//! Request bodies have a deadline (`SLUICE_BODY_READ_TIMEOUT_SECS`) and a connection whose
//! request body has not arrived counts as idle for the connection cap, so clients trickling
//! bodies can neither hold connections for long nor lock others out.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection and sends a chat request's head and the first byte of a 1000-byte body.
async fn trickler(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    s
}

#[tokio::test]
async fn a_trickled_body_gets_408_after_the_body_timeout() {
    let sluice = sluice_tests::Gateway::builder()
        .env(&[("SLUICE_BODY_READ_TIMEOUT_SECS", "1")])
        .start();
    let s = trickler(sluice.addr).await;
    // One byte every 300 ms: the connection is never silent for long, but the body never ends.
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if wr.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut out = Vec::new();
    // Generous: the point is that it ends at all, long before the body could.
    let r = tokio::time::timeout(Duration::from_secs(15), rd.read_to_end(&mut out)).await;
    writer.abort();
    assert!(r.is_ok(), "the connection was still open after 15 s");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("\"request_timeout\""),
        "OpenAI's error shape: {text}"
    );
}

#[tokio::test]
async fn trickling_sockets_do_not_lock_out_other_clients() {
    let sluice = sluice_tests::Gateway::builder()
        .env(&[
            ("SLUICE_MAX_CONNECTIONS", "4"),
            // Long: it is the cap's eviction, not the deadline, that must make room.
            ("SLUICE_BODY_READ_TIMEOUT_SECS", "60"),
        ])
        .start();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(trickler(sluice.addr).await);
    }
    // Let the server see every one of them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let r = sluice_tests::e2e::client_with_timeout(Duration::from_secs(5))
            .get(sluice.url("/healthz"))
            .send()
            .await;
        let status = r.map(|r| r.status().as_u16());
        assert!(matches!(status, Ok(200)), "healthz {i}: {status:?}");
    }
    drop(held);
}
