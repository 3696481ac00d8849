//! A real `redis-server` for the shared-state tests, on a free loopback port, with no
//! persistence; killed on drop. [`RedisServer::start_or_skip`] skips the test (or fails it under
//! `CI=true`, where `.ci/run` installs Debian's `redis-server`) when the binary is missing.
//! [`RedisServer::stop`] and [`RedisServer::restart`] (same port), and [`RedisServer::signal`]
//! (`STOP`/`CONT`: a stall), drive the outage tests; [`RedisServer::command`] looks inside
//! (`CLIENT LIST`, `XRANGE`) or flushes it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sdk::require;

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// `redis-server` on PATH, or why not.
pub fn redis_server() -> Result<(), String> {
    match Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        _ => Err("the Redis tests need `redis-server` (Debian package redis-server)".into()),
    }
}

impl RedisServer {
    /// A fresh server, or `None` (after a visible skip) when `redis-server` is missing.
    pub fn start_or_skip() -> Option<Self> {
        require(redis_server())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self {
            port,
            child: None,
            _dir: tempfile::tempdir().expect("temp dir"),
        };
        server.restart();
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would): clients see their connection reset.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence), and waits until it
    /// answers `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            // Start-up of a test fixture (tens of ms), called before the test's own traffic.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING on port {}", self.port);
    }

    /// Sends signal `name` (`STOP`, `CONT`) to the server: `STOP` freezes it as a stalled
    /// network or a long fork would (connections stay open, nothing answers).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis-server runs").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// One `PING` over a fresh connection.
    pub fn ping(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

/// One RESP reply, as [`RedisServer::command`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    /// A bulk string (`None`: nil).
    Bulk(Option<Vec<u8>>),
    /// An array (`None`: nil).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bulk or status text (empty for anything else).
    pub fn text(&self) -> String {
        match self {
            Reply::Status(s) => s.clone(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        }
    }

    /// The array's items (none for anything else).
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(v)) => v,
            _ => &[],
        }
    }
}

fn read_reply(r: &mut impl BufRead) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).expect("a reply line");
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    let n = || rest.parse::<i64>().expect("a length");
    match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(n()),
        "$" if n() < 0 => Reply::Bulk(None),
        "$" => {
            let mut buf = vec![0u8; n() as usize + 2];
            r.read_exact(&mut buf).expect("a bulk string");
            buf.truncate(buf.len() - 2);
            Reply::Bulk(Some(buf))
        }
        "*" if n() < 0 => Reply::Array(None),
        "*" => Reply::Array(Some((0..n()).map(|_| read_reply(r)).collect())),
        other => panic!("unexpected reply type {other:?} in {line:?}"),
    }
}

impl RedisServer {
    /// Runs one command over a fresh connection (which counts in `CLIENT LIST` while it runs).
    pub fn command(&self, args: &[&str]) -> Reply {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).expect("send");
        read_reply(&mut BufReader::new(s))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
