//! One load run: C workers, each with its own keep-alive connection, sending streaming chat
//! requests back to back until a duration has passed or a number of requests has been sent,
//! then the merged samples.
//!
//! Every loop here ends: a worker stops at the run's deadline (or request count), each request
//! has a timeout, and a hard deadline caps the whole run whatever the peer does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use crate::client::{self, Conn, Endpoint, Failure};
use crate::sse::ScanMode;

/// A target of a run: where to send and with which key.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub endpoint: Endpoint,
    pub key: Option<String>,
}

/// When a run stops starting new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Start requests until this long after the start (requests in flight then finish).
    After(Duration),
    /// Start exactly this many requests in all.
    Requests(u64),
}

/// The shape of one run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub concurrency: usize,
    pub tokens: u32,
    pub delay_ms: u32,
    pub first_token_delay_ms: u32,
    pub stop: Stop,
    /// Workers start spread evenly over this time.
    pub ramp: Duration,
    pub scan: ScanMode,
    /// Keep every inter-token gap (off for soaks, where only counts matter).
    pub record_gaps: bool,
}

impl LoadSpec {
    /// How long one request may take before it counts as timed out: twice the answer's
    /// planned length, and at least 30 s.
    pub fn request_timeout(&self) -> Duration {
        let planned = Duration::from_millis(
            u64::from(self.first_token_delay_ms)
                + u64::from(self.tokens) * u64::from(self.delay_ms),
        );
        planned * 2 + Duration::from_secs(30)
    }

    /// The latest moment the run may end, however the peer behaves.
    pub fn hard_limit(&self) -> Duration {
        let starting = match self.stop {
            Stop::After(d) => d,
            // Back-to-back requests of the planned length, twice over, plus a minute.
            Stop::Requests(r) => {
                let per_worker = r.div_ceil(self.concurrency.max(1) as u64);
                let planned = Duration::from_millis(
                    u64::from(self.first_token_delay_ms)
                        + u64::from(self.tokens) * u64::from(self.delay_ms),
                );
                (planned * 2 + Duration::from_millis(200))
                    .saturating_mul(u32::try_from(per_worker).unwrap_or(u32::MAX))
                    + Duration::from_secs(60)
            }
        };
        self.ramp + starting + self.request_timeout()
    }
}

/// Counters visible while a run goes on (the soak prints them).
#[derive(Debug, Default)]
pub struct Progress {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub tokens: AtomicU64,
    /// Requests sent that have not ended yet.
    pub in_flight: AtomicU64,
}

/// Everything a run measured. Latency samples are microseconds.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// From the start of the run until the last worker finished.
    pub elapsed: Duration,
    pub ok: u64,
    pub tokens: u64,
    pub errors: BTreeMap<String, u64>,
    pub ttft_us: Vec<u32>,
    pub total_us: Vec<u32>,
    pub gaps_us: Vec<u32>,
    /// Per successful stream, its longest gap between content reads.
    pub max_gap_us: Vec<u32>,
    /// The run hit its hard limit and its workers were abandoned.
    pub aborted: bool,
}

impl RunResult {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another result's samples and counts (for merging rounds); elapsed times add up.
    pub fn merge(&mut self, other: RunResult) {
        self.elapsed += other.elapsed;
        self.ok += other.ok;
        self.tokens += other.tokens;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.ttft_us.extend(other.ttft_us);
        self.total_us.extend(other.total_us);
        self.gaps_us.extend(other.gaps_us);
        self.max_gap_us.extend(other.max_gap_us);
        self.aborted |= other.aborted;
    }
}

struct Shared {
    target: Target,
    spec: LoadSpec,
    body: Bytes,
    started: AtomicU64,
    progress: Arc<Progress>,
    /// Stop starting requests at this instant (duration runs).
    deadline: Option<Instant>,
    hard_deadline: Instant,
}

impl Shared {
    /// Claims the next request, or says the run is over.
    fn claim(&self) -> bool {
        let now = Instant::now();
        if now >= self.hard_deadline {
            return false;
        }
        match self.spec.stop {
            Stop::After(_) => self.deadline.is_none_or(|d| now < d),
            Stop::Requests(r) => self.started.fetch_add(1, Ordering::Relaxed) < r,
        }
    }
}

/// Runs `spec` against `target`. `progress` is updated as requests end.
pub async fn run(target: &Target, spec: &LoadSpec, progress: Arc<Progress>) -> RunResult {
    let start = Instant::now();
    let hard = spec.hard_limit();
    let shared = Arc::new(Shared {
        target: target.clone(),
        spec: spec.clone(),
        body: client::chat_body(spec.tokens, spec.delay_ms, spec.first_token_delay_ms),
        started: AtomicU64::new(0),
        progress,
        deadline: match spec.stop {
            Stop::After(d) => Some(start + spec.ramp + d),
            Stop::Requests(_) => None,
        },
        hard_deadline: start + hard,
    });
    let c = spec.concurrency.max(1);
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..c {
        let delay = spec.ramp.mul_f64(i as f64 / c as f64);
        workers.spawn(worker(Arc::clone(&shared), delay));
    }
    let mut out = RunResult::default();
    let joined = tokio::time::timeout(hard + Duration::from_secs(5), async {
        while let Some(r) = workers.join_next().await {
            if let Ok(r) = r {
                out.merge(r);
            }
        }
    })
    .await;
    if joined.is_err() {
        workers.abort_all();
        out.aborted = true;
    }
    out.elapsed = start.elapsed();
    out
}

async fn worker(shared: Arc<Shared>, start_delay: Duration) -> RunResult {
    tokio::time::sleep(start_delay).await;
    let s = &*shared;
    let mut out = RunResult::default();
    let mut gaps = Vec::new();
    let mut conn: Option<Conn<Full<Bytes>>> = None;
    let timeout = s.spec.request_timeout();
    while s.claim() {
        let fail = |out: &mut RunResult, f: &Failure| {
            *out.errors.entry(f.label()).or_default() += 1;
            s.progress.errors.fetch_add(1, Ordering::Relaxed);
        };
        // Reuse the connection when it is still open, else open a new one.
        let usable = match conn.as_mut() {
            Some(c) => c.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            match client::connect(s.target.endpoint.addr).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    conn = None;
                    fail(&mut out, &Failure::Connect);
                    // Do not spin on a peer that refuses connections.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let req =
            match client::chat_request(&s.target.endpoint, s.target.key.as_deref(), s.body.clone())
            {
                Ok(r) => r,
                Err(_) => {
                    fail(&mut out, &Failure::Transport);
                    break;
                }
            };
        let g = s.spec.record_gaps.then_some(&mut gaps);
        s.progress.in_flight.fetch_add(1, Ordering::Relaxed);
        let res = tokio::time::timeout(
            timeout,
            client::stream_once(c, req, s.spec.tokens, s.spec.scan, g),
        )
        .await
        .unwrap_or(Err(Failure::Timeout));
        s.progress.in_flight.fetch_sub(1, Ordering::Relaxed);
        match res {
            Ok(t) => {
                out.ok += 1;
                out.tokens += u64::from(t.tokens);
                out.ttft_us.push(t.ttft_us);
                out.total_us.push(t.total_us);
                out.max_gap_us.push(t.max_gap_us);
                s.progress.ok.fetch_add(1, Ordering::Relaxed);
                s.progress
                    .tokens
                    .fetch_add(u64::from(t.tokens), Ordering::Relaxed);
            }
            Err(f) => {
                fail(&mut out, &f);
                if !f.keeps_connection() {
                    conn = None;
                }
            }
        }
    }
    out.gaps_us = gaps;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(stop: Stop) -> LoadSpec {
        LoadSpec {
            concurrency: 10,
            tokens: 20,
            delay_ms: 1000,
            first_token_delay_ms: 0,
            stop,
            ramp: Duration::from_secs(5),
            scan: ScanMode::Fast,
            record_gaps: true,
        }
    }

    #[test]
    fn timeouts_follow_the_planned_answer() {
        let s = spec(Stop::After(Duration::from_secs(10)));
        assert_eq!(s.request_timeout(), Duration::from_secs(70));
        assert_eq!(s.hard_limit(), Duration::from_secs(85));
        let s = spec(Stop::Requests(10));
        assert!(s.hard_limit() > Duration::from_secs(100));
        assert!(s.hard_limit() < Duration::from_secs(200));
    }

    #[test]
    fn merge_adds_up() {
        let mut a = RunResult {
            ok: 1,
            ttft_us: vec![1],
            ..RunResult::default()
        };
        a.errors.insert("timeout".into(), 1);
        let mut b = RunResult {
            ok: 2,
            ttft_us: vec![2, 3],
            ..RunResult::default()
        };
        b.errors.insert("timeout".into(), 2);
        a.merge(b);
        assert_eq!(a.ok, 3);
        assert_eq!(a.ttft_us, vec![1, 2, 3]);
        assert_eq!(a.error_count(), 3);
    }
}
