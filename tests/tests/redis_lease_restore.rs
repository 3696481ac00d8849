//! Concurrency leases after Redis lost them (a restart without persistence, `FLUSHALL`): the
//! holder's renewal adds its missing leases again, so the team does not get a second
//! `max_concurrent_streams` on top of the streams still running.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::wait_for;
use sluice_tests::redis::RedisServer;
use sluice_tests::teams::{chat_as as chat, new_key, team};
use sluice_tests::{Gateway, Sluice};

fn start(redis: &RedisServer, toml: &str) -> Sluice {
    let url = redis.url();
    Gateway::builder()
        .config(toml)
        .env(&[
            ("SLUICE_REDIS_URL", url.as_str()),
            ("SLUICE_REDIS_TIMEOUT_MS", "300"),
            // Renewed every second.
            ("SLUICE_CONCURRENCY_LEASE_SECS", "3"),
        ])
        .start()
}

#[tokio::test]
async fn a_lease_lost_with_redis_is_added_again_by_its_renewal() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let k = new_key();
    let toml = team("conc", &[&k], "max_concurrent_streams = 1");
    let (a, b) = (start(&redis, &toml), start(&redis, &toml));
    // A long, slow stream holds the team's one slot (about 20 s).
    let held = chat(
        &a,
        &k,
        &json!({
            "model": "sluice-demo", "stream": true,
            "messages": [{"role": "user", "content": "hi"}],
            "mock": {"tokens": 200, "delay_ms": 100},
        }),
    )
    .await;
    assert_eq!(held.status(), 200);
    let short = json!({
        "model": "sluice-demo", "max_tokens": 3,
        "messages": [{"role": "user", "content": "hi"}],
    });
    assert_eq!(chat(&b, &k, &short).await.status(), 429);
    assert_eq!(redis.command(&["FLUSHALL"]).text(), "OK");
    // Within a renewal the lease is back, and the other instance is refused again (before the
    // fix, `ZADD XX` never re-added it: every later request was admitted).
    let (k, b, short) = (&k, &b, &short);
    let refused = wait_for(Duration::from_secs(15), || async move {
        let r = chat(b, k, short).await;
        (r.status() == 429).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the lost lease was never restored");
    // And stays refused across further renewals.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = chat(b, k, short).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "concurrency", "{v}");
    drop(held);
}
