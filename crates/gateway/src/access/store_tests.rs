//! The same tests against both limit stores: `MemoryStore`, and `RedisStore` behind `FailOver`
//! as the gateway runs it (against a `RedisServer`; skipped when `redis-server` is missing).
//! Plus the Redis store's behaviour when Redis goes away (fail_open, fail_closed), lease expiry,
//! and the added latency per admission.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Admitted, FailOver, LimitStatus, LimitStore, MemoryStore, RedisStore, Refusal, TeamLimits,
    Ticket, Unavailable,
};
use crate::config::{OnFailure, RedisSettings};
use crate::lifecycle::Lifecycle;
use crate::shared_state::SharedState;
// The harness's server: it skips visibly without `redis-server`, and fails under `CI=true`.
use sluice_tests::redis::RedisServer;

/// Limits for a store test (the memory store's own tests use them too).
pub(super) fn limits(
    rpm: Option<u32>,
    burst: u32,
    tpm: Option<u64>,
    streams: Option<u32>,
) -> TeamLimits {
    TeamLimits {
        requests: rpm,
        burst,
        tokens: tpm,
        streams,
        default_max_tokens: 100,
        window: Duration::from_secs(60),
    }
}

fn settings(url: String, on_failure: OnFailure, lease: Duration) -> RedisSettings {
    RedisSettings {
        url,
        on_failure,
        timeout: Duration::from_millis(300),
        lease,
        owner_timeout: Duration::from_secs(10),
    }
}

/// A Redis store behind its `FailOver`, as the gateway builds it.
fn redis_store(server: &RedisServer, on_failure: OnFailure, lease: Duration) -> Arc<FailOver> {
    let state = SharedState::new(&settings(server.url(), on_failure, lease)).expect("redis url");
    let state = Arc::new(state);
    let policy = state.on_failure;
    Arc::new(FailOver::new(
        RedisStore::new(state, Lifecycle::new()),
        policy,
    ))
}

/// Runs `check` against a memory store, then a Redis store (unless `redis-server` is
/// missing).
macro_rules! both_stores {
    ($name:ident, $check:ident) => {
        #[tokio::test]
        async fn $name() {
            $check(Arc::new(MemoryStore::new())).await;
            if let Some(server) = RedisServer::start_or_skip() {
                $check(redis_store(
                    &server,
                    OnFailure::FailClosed,
                    Duration::from_secs(30),
                ))
                .await;
            }
        }
    };
}

async fn admit<S: LimitStore + ?Sized>(
    s: &Arc<S>,
    team: &str,
    l: &TeamLimits,
    estimate: u64,
) -> Result<Admitted, Refusal> {
    s.admit(team, l, estimate).await.expect("the store answers")
}

async fn status<S: LimitStore + ?Sized>(
    s: &Arc<S>,
    team: &str,
    l: &TeamLimits,
) -> (LimitStatus, LimitStatus) {
    s.status(team, l).await.expect("the store answers")
}

async fn gcra_burst_then_pace<S: LimitStore + ?Sized>(s: Arc<S>) {
    let l = limits(Some(60), 10, None, None);
    for i in 0..10 {
        let a = admit(&s, "a", &l, 1).await.expect("within the burst");
        assert_eq!(a.requests.limit, 60);
        assert_eq!(a.requests.remaining, 9 - i);
        assert_eq!(a.tokens, LimitStatus::UNLIMITED);
    }
    let Err(Refusal::Requests(wait)) = admit(&s, "a", &l, 1).await else {
        panic!("the 11th is refused on requests")
    };
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    let (st, _) = status(&s, "a", &l).await;
    assert_eq!(st.remaining, 0);
    assert!(st.reset > Duration::from_secs(9) && st.reset <= Duration::from_secs(10));
    // Another team is not affected.
    assert!(admit(&s, "b", &l, 1).await.is_ok());
    // The pace: one a second at 60 a minute. With a 1 s window and 10 a window: one per 100 ms.
    let fast = TeamLimits {
        window: Duration::from_secs(1),
        ..limits(Some(10), 2, None, None)
    };
    assert!(admit(&s, "p", &fast, 1).await.is_ok());
    assert!(admit(&s, "p", &fast, 1).await.is_ok());
    assert!(admit(&s, "p", &fast, 1).await.is_err());
    tokio::time::sleep(Duration::from_millis(110)).await;
    assert!(admit(&s, "p", &fast, 1).await.is_ok(), "one came back");
    assert!(admit(&s, "p", &fast, 1).await.is_err());
}
both_stores!(gcra_burst_and_pace, gcra_burst_then_pace);

async fn carry_over<S: LimitStore + ?Sized>(s: Arc<S>) {
    // Requests: a faster pace with the same burst is still exhausted; a bigger burst adds room;
    // back to the first limits: nothing refilled.
    let l = limits(Some(60), 10, None, None);
    for _ in 0..10 {
        admit(&s, "a", &l, 1).await.expect("admitted");
    }
    assert!(admit(&s, "a", &limits(Some(120), 10, None, None), 1)
        .await
        .is_err());
    let l3 = limits(Some(120), 12, None, None);
    assert_eq!(status(&s, "a", &l3).await.0.remaining, 2);
    assert!(admit(&s, "a", &l3, 1).await.is_ok());
    assert!(admit(&s, "a", &l3, 1).await.is_ok());
    assert!(admit(&s, "a", &l3, 1).await.is_err());
    assert!(admit(&s, "a", &l, 1).await.is_err());
    // Tokens: a bigger budget keeps the tokens used.
    let t = limits(None, 1, Some(1000), None);
    let a = admit(&s, "t", &t, 900).await.expect("admitted");
    let t2 = limits(None, 1, Some(2000), None);
    let (_, st) = status(&s, "t", &t2).await;
    assert_eq!(st.limit, 2000);
    assert!((1100..=1101).contains(&st.remaining), "{st:?}");
    // Settling after the change keeps the new quota.
    s.settle("t", a.ticket, 900, 100)
        .await
        .expect("the store answers");
    let (_, st) = status(&s, "t", &t2).await;
    assert!((1900..=1901).contains(&st.remaining), "{st:?}");
}
both_stores!(reload_carry_over, carry_over);

async fn token_reserve_settle_refund<S: LimitStore + ?Sized>(s: Arc<S>) {
    let l = limits(None, 1, Some(30), None);
    // An estimate above the budget takes the whole budget, and only when it is full.
    let a = admit(&s, "a", &l, u64::MAX).await.expect("admitted");
    assert_eq!(a.reserved, 30);
    assert_eq!(a.tokens.remaining, 0);
    assert!(a.tokens.reset <= Duration::from_secs(60), "{a:?}");
    let Err(Refusal::Tokens(wait)) = admit(&s, "a", &l, u64::MAX).await else {
        panic!("refused on tokens")
    };
    assert!(wait <= Duration::from_secs(60), "{wait:?}");
    // Refund: all back.
    s.settle("a", a.ticket, a.reserved, 0)
        .await
        .expect("the store answers");
    assert_eq!(status(&s, "a", &l).await.1.remaining, 30);
    // Settle: the difference back.
    let a = admit(&s, "a", &l, 20).await.expect("admitted");
    assert_eq!(a.tokens.remaining, 10);
    s.settle("a", a.ticket, a.reserved, 5)
        .await
        .expect("the store answers");
    assert_eq!(status(&s, "a", &l).await.1.remaining, 25);
    // Far more used than reserved: a debt, floored at one window's tokens.
    let a = admit(&s, "a", &l, 10).await.expect("admitted");
    s.settle("a", a.ticket, a.reserved, u64::MAX)
        .await
        .expect("the store answers");
    let (_, st) = status(&s, "a", &l).await;
    assert_eq!(st.remaining, 0);
    assert!(
        st.reset > Duration::from_secs(119) && st.reset <= Duration::from_secs(120),
        "the floor is minus the capacity: {st:?}"
    );
    // A refusal on requests costs no tokens.
    let both = limits(Some(60), 1, Some(100), None);
    admit(&s, "r", &both, 10).await.expect("admitted");
    assert!(matches!(
        admit(&s, "r", &both, 10).await,
        Err(Refusal::Requests(_))
    ));
    assert_eq!(status(&s, "r", &both).await.1.remaining, 90);
    // Nothing kept for a team: nothing to settle.
    s.settle("nobody", Ticket::default(), 0, 10)
        .await
        .expect("the store answers");
    assert_eq!(status(&s, "nobody", &l).await.1.remaining, 30);
}
both_stores!(
    tokens_reserve_settle_refund_and_debt_floor,
    token_reserve_settle_refund
);

async fn slots<S: LimitStore + ?Sized>(s: Arc<S>) {
    let l = limits(None, 1, Some(1000), Some(2));
    let one = admit(&s, "a", &l, 10).await.expect("admitted");
    let two = admit(&s, "a", &l, 10).await.expect("admitted");
    assert_eq!(admit(&s, "a", &l, 10).await, Err(Refusal::Concurrency));
    // The concurrency refusal reserved nothing.
    assert!(status(&s, "a", &l).await.1.remaining <= 980);
    assert!(status(&s, "a", &l).await.1.remaining >= 979);
    assert_eq!(s.open_streams("a").await.expect("the store answers"), 2);
    assert_eq!(s.open_streams_here("a"), 2);
    assert!(one.slot);
    s.release("a", one.ticket).await.expect("the store answers");
    assert_eq!(s.open_streams("a").await.expect("the store answers"), 1);
    let three = admit(&s, "a", &l, 10).await.expect("admitted");
    assert_eq!(admit(&s, "a", &l, 10).await, Err(Refusal::Concurrency));
    assert!(two.slot);
    s.release("a", two.ticket).await.expect("the store answers");
    assert!(three.slot);
    s.release("a", three.ticket)
        .await
        .expect("the store answers");
    assert_eq!(s.open_streams("a").await.expect("the store answers"), 0);
    assert_eq!(s.open_streams_here("a"), 0);
}
both_stores!(concurrency_slots, slots);

#[tokio::test]
async fn redis_slots_are_shared_and_a_dead_holders_lease_expires() {
    let Some(server) = RedisServer::start_or_skip() else {
        return;
    };
    let lease = Duration::from_secs(1);
    let a = redis_store(&server, OnFailure::FailClosed, lease);
    let b = redis_store(&server, OnFailure::FailClosed, lease);
    let l = limits(None, 1, None, Some(1));
    let held = admit(&a, "t", &l, 1).await.expect("admitted");
    assert_eq!(admit(&b, "t", &l, 1).await, Err(Refusal::Concurrency));
    // A keeps renewing: still held after several leases.
    tokio::time::sleep(lease * 2).await;
    assert_eq!(admit(&b, "t", &l, 1).await, Err(Refusal::Concurrency));
    assert_eq!(b.open_streams("t").await.expect("the store answers"), 1);
    assert_eq!(b.open_streams_here("t"), 0);
    // A dies (stops renewing): the slot is free within the lease.
    drop(a);
    let start = Instant::now();
    let slot = loop {
        if let Ok(s) = admit(&b, "t", &l, 1).await {
            break s;
        }
        assert!(
            start.elapsed() < lease + Duration::from_millis(500),
            "lease did not expire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!FailOver::is_local(&slot));
    let _ = held;
}

#[tokio::test]
async fn redis_down_fail_open_counts_here_fail_closed_refuses_and_both_recover() {
    let Some(mut server) = RedisServer::start_or_skip() else {
        return;
    };
    let open = redis_store(&server, OnFailure::FailOpen, Duration::from_secs(30));
    let closed = redis_store(&server, OnFailure::FailClosed, Duration::from_secs(30));
    let l = limits(Some(60), 3, Some(1000), Some(5));
    let shared = admit(&open, "t", &l, 10).await.expect("admitted");
    assert!(!FailOver::is_local(&shared));
    server.stop();
    // fail_open: this instance's own limits, a fresh burst of 3.
    let start = Instant::now();
    let mut local = Vec::new();
    for _ in 0..3 {
        let a = admit(&open, "t", &l, 10).await.expect("admitted");
        assert!(FailOver::is_local(&a));
        local.push(a);
    }
    assert!(matches!(
        admit(&open, "t", &l, 10).await,
        Err(Refusal::Requests(_))
    ));
    assert!(start.elapsed() < Duration::from_secs(3), "never hangs");
    // fail_closed: no answer.
    assert_eq!(closed.admit("t", &l, 10).await, Err(Unavailable));
    assert_eq!(closed.status("t", &l).await, Err(Unavailable));
    // Local admissions settle and release locally.
    for a in local {
        assert!(a.slot);
        open.clone().release_later("t".into(), a.ticket);
    }
    assert_eq!(open.open_streams_here("t"), 1);
    server.restart();
    let back = |s: Arc<FailOver>| async move {
        let start = Instant::now();
        loop {
            match s.admit("t", &l, 10).await {
                Ok(Ok(a)) if !FailOver::is_local(&a) => return a,
                _ if start.elapsed() > Duration::from_secs(10) => panic!("did not recover"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    let a = back(open.clone()).await;
    let b = back(closed.clone()).await;
    // Shared counting resumed (Redis came back empty): two of the burst of 3 used.
    assert_eq!(b.requests.remaining, a.requests.remaining - 1);
}

/// The added latency per admission: memory vs Redis (loopback), printed for the README.
#[tokio::test]
async fn admission_latency_memory_vs_redis() {
    const N: u32 = 2000;
    let l = TeamLimits {
        window: Duration::from_secs(1),
        ..limits(
            Some(1_000_000),
            1_000_000,
            Some(1_000_000_000),
            Some(1_000_000),
        )
    };
    async fn run(s: Arc<dyn LimitStore>, l: &TeamLimits) -> Duration {
        let start = Instant::now();
        for _ in 0..N {
            let a = s
                .admit("bench", l, 10)
                .await
                .expect("the store answers")
                .expect("admitted");
            s.settle("bench", a.ticket, a.reserved, 5)
                .await
                .expect("the store answers");
            assert!(a.slot);
            s.release("bench", a.ticket)
                .await
                .expect("the store answers");
        }
        start.elapsed() / N
    }
    let memory = run(Arc::new(MemoryStore::new()), &l).await;
    println!("memory: {memory:?} per admission (admit + settle + release)");
    let Some(server) = RedisServer::start_or_skip() else {
        return;
    };
    let redis = redis_store(&server, OnFailure::FailClosed, Duration::from_secs(30));
    let shared: Arc<dyn LimitStore> = redis.clone();
    let start = Instant::now();
    for _ in 0..N {
        shared
            .admit("bench2", &l, 10)
            .await
            .expect("admitted")
            .unwrap();
    }
    let admit_only = start.elapsed() / N;
    let full = run(shared, &l).await;
    println!(
        "redis: {admit_only:?} per admission (one script), {full:?} per admit + settle + release"
    );
}
