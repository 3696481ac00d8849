//! Finished Responses-API answers, kept after their relay stream is gone: `GET
//! /v1/responses/{id}` and the AI SDK's `item_reference` inputs (it stores by default, and sends
//! the previous assistant turn by id) must work after a pause longer than the streams' retention
//! (`SLUICE_STREAM_RETENTION_SECS`, 5 minutes), as OpenAI keeps stored responses for days.
//!
//! The response object of a stream started by `POST /v1/responses` with `store` not false is
//! kept whole, keyed by its id (`resp_<stream>`), with the team that made it (to another team it
//! does not exist), for `SLUICE_RESPONSES_RETENTION_SECS` (0: nothing is kept). Only the object
//! outlives the stream: its events (`?stream=true`) do not.
//!
//! - **in memory**: bounded by total bytes (`SLUICE_RESPONSES_MAX_BYTES`): the oldest objects
//!   go first (the order they expire in, as they all live the same time). An object larger
//!   than [`MAX_OBJECT_BYTES`] (or than the bound) is not kept.
//! - **with Redis** (`SLUICE_REDIS_URL`): `sluice:response:{id}` holds the team and the object,
//!   set with `EX` the retention, so that every instance finds it. When Redis does not answer, a
//!   new object is kept in this instance's memory instead (it has no client to refuse), and a
//!   lookup Redis cannot answer finds only those (`fail_open`) or, when they do not have it,
//!   gets the limits' 503 (`fail_closed`): the streams' policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::OnFailure;
use crate::error::GatewayError;
use crate::shared_state::{SharedState, StateError};

/// The largest object kept: a longer answer is not kept (a debug log says so).
pub const MAX_OBJECT_BYTES: usize = 1 << 20;

/// Bytes an entry costs beyond its id, team and object (map and order slots, the clock).
const ENTRY_OVERHEAD: usize = 96;

/// What Redis holds for one response: `{"team":…,"response":{…}}`.
fn stored(team: Option<&str>, body: &str) -> String {
    let team = serde_json::to_string(&team).unwrap_or_else(|_| "null".into());
    format!(r#"{{"team":{team},"response":{body}}}"#)
}

/// [`stored`] read back.
#[derive(Deserialize)]
struct Stored {
    team: Option<String>,
    response: Value,
}

struct Entry {
    team: Option<String>,
    /// The object, serialised.
    body: String,
    expires: Instant,
    /// Its place in [`Local::order`].
    seq: u64,
    bytes: usize,
}

#[derive(Default)]
struct Local {
    map: HashMap<String, Entry>,
    /// Oldest first: sequence number → id.
    order: BTreeMap<u64, String>,
    next: u64,
    bytes: usize,
}

impl Local {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let e = self.map.remove(id)?;
        self.order.remove(&e.seq);
        self.bytes -= e.bytes;
        Some(e)
    }

    /// Drops the oldest entries while the store holds more than `max_bytes`, and the expired
    /// ones at the front.
    fn trim(&mut self, now: Instant, max_bytes: usize) {
        while let Some((_, id)) = self.order.first_key_value() {
            let id = id.clone();
            let expired = self.map.get(&id).is_none_or(|e| e.expires <= now);
            if !expired && self.bytes <= max_bytes {
                return;
            }
            self.remove(&id);
        }
    }
}

/// The store; see the module docs.
pub struct ResponsesStore {
    /// Zero: disabled.
    ttl: Duration,
    max_bytes: usize,
    local: Mutex<Local>,
    shared: Option<Arc<SharedState>>,
}

fn redis_key(id: &str) -> String {
    format!("sluice:response:{id}")
}

impl ResponsesStore {
    /// Keeps objects `ttl` (zero: none), at most `max_bytes` of them in memory; in Redis when
    /// `shared` is given.
    pub fn new(ttl: Duration, max_bytes: usize, shared: Option<Arc<SharedState>>) -> Self {
        Self {
            ttl,
            max_bytes,
            local: Mutex::new(Local::default()),
            shared,
        }
    }

    /// A store that keeps nothing.
    pub fn disabled() -> Self {
        Self::new(Duration::ZERO, 0, None)
    }

    pub fn is_enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps response `id` of `team`. Too large an object is left out, with a debug log.
    pub async fn put(&self, id: &str, team: Option<&str>, response: &Value) {
        if !self.is_enabled() {
            return;
        }
        let body = response.to_string();
        if body.len() > MAX_OBJECT_BYTES {
            tracing::debug!(
                response = id,
                bytes = body.len(),
                max = MAX_OBJECT_BYTES,
                "response too large to keep after its stream"
            );
            return;
        }
        if let Some(shared) = &self.shared {
            match self.put_redis(shared, id, team, &body).await {
                Ok(()) => return,
                Err(e) => tracing::debug!(
                    error = %e,
                    response = id,
                    "keeping a response in redis failed: kept in this instance's memory"
                ),
            }
        }
        self.put_local(id, team, body);
    }

    async fn put_redis(
        &self,
        shared: &SharedState,
        id: &str,
        team: Option<&str>,
        body: &str,
    ) -> Result<(), StateError> {
        let value = stored(team, body);
        let mut conn = shared.conn();
        shared
            .call(conn.set_ex::<_, _, ()>(redis_key(id), value, self.ttl.as_secs().max(1)))
            .await
    }

    fn put_local(&self, id: &str, team: Option<&str>, body: String) {
        let bytes = body.len() + id.len() + team.map_or(0, str::len) + ENTRY_OVERHEAD;
        if bytes > self.max_bytes {
            tracing::debug!(
                response = id,
                bytes,
                max = self.max_bytes,
                "response larger than SLUICE_RESPONSES_MAX_BYTES: not kept"
            );
            return;
        }
        let now = Instant::now();
        let mut local = self.local();
        local.remove(id);
        let seq = local.next;
        local.next += 1;
        local.order.insert(seq, id.to_owned());
        local.bytes += bytes;
        local.map.insert(
            id.to_owned(),
            Entry {
                team: team.map(Into::into),
                body,
                expires: now + self.ttl,
                seq,
                bytes,
            },
        );
        local.trim(now, self.max_bytes);
    }

    fn get_local(&self, id: &str, team: Option<&str>) -> Option<Value> {
        let now = Instant::now();
        let mut local = self.local();
        local.trim(now, self.max_bytes);
        let e = local.map.get(id)?;
        if e.expires <= now {
            local.remove(id);
            return None;
        }
        if e.team.as_deref() != team {
            return None;
        }
        serde_json::from_str(&e.body).ok()
    }

    /// Response `id` as `team` may see it: `None` when it was never kept, has expired, or is
    /// another team's. Redis failing follows the streams' policy (see the module docs).
    pub async fn get(&self, id: &str, team: Option<&str>) -> Result<Option<Value>, GatewayError> {
        if !self.is_enabled() {
            return Ok(None);
        }
        let local = self.get_local(id, team);
        let Some(shared) = &self.shared else {
            return Ok(local);
        };
        if local.is_some() {
            return Ok(local);
        }
        let mut conn = shared.conn();
        let found: Result<Option<String>, StateError> = shared.call(conn.get(redis_key(id))).await;
        match found {
            Ok(Some(text)) => Ok(serde_json::from_str::<Stored>(&text)
                .ok()
                .filter(|s| s.team.as_deref() == team)
                .map(|s| s.response)),
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::debug!(error = %e, "response lookup in redis failed");
                match shared.on_failure {
                    OnFailure::FailClosed => Err(GatewayError::SharedStateUnavailable),
                    OnFailure::FailOpen => Ok(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn object(id: &str, text: &str) -> Value {
        json!({"id": id, "object": "response", "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}]})
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_an_object_whole_for_its_team_only() {
        let store = ResponsesStore::new(DAY, 1 << 20, None);
        let obj = object("resp_a", "hello");
        store.put("resp_a", Some("t1"), &obj).await;
        assert_eq!(store.get("resp_a", Some("t1")).await.unwrap(), Some(obj));
        assert_eq!(store.get("resp_a", Some("t2")).await.unwrap(), None);
        assert_eq!(store.get("resp_a", None).await.unwrap(), None);
        assert_eq!(store.get("resp_b", Some("t1")).await.unwrap(), None);
        // Open mode: no team.
        store.put("resp_c", None, &object("resp_c", "x")).await;
        assert!(store.get("resp_c", None).await.unwrap().is_some());
        assert_eq!(store.get("resp_c", Some("t1")).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn objects_expire_after_the_retention() {
        let store = ResponsesStore::new(Duration::from_secs(60), 1 << 20, None);
        store.put("resp_a", None, &object("resp_a", "a")).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        store.put("resp_b", None, &object("resp_b", "b")).await;
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(store.get("resp_a", None).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(store.get("resp_a", None).await.unwrap(), None);
        assert!(store.get("resp_b", None).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(store.get("resp_b", None).await.unwrap(), None);
        let local = store.local();
        assert!(local.map.is_empty() && local.order.is_empty());
        assert_eq!(local.bytes, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_go_first_when_the_bytes_run_out() {
        let one = object("resp_0", &"x".repeat(1000)).to_string().len() + 6 + ENTRY_OVERHEAD;
        // Room for three.
        let store = ResponsesStore::new(DAY, one * 3 + one / 2, None);
        for i in 0..5 {
            let id = format!("resp_{i}");
            store.put(&id, None, &object(&id, &"x".repeat(1000))).await;
            assert!(store.local().bytes <= one * 3 + one / 2);
        }
        for (i, kept) in [false, false, true, true, true].into_iter().enumerate() {
            let got = store.get(&format!("resp_{i}"), None).await.unwrap();
            assert_eq!(got.is_some(), kept, "resp_{i}");
        }
        // An object larger than the whole bound, or than the per-object cap, is not kept, and
        // evicts nothing.
        let big = object("resp_big", &"x".repeat(one * 4));
        store.put("resp_big", None, &big).await;
        assert_eq!(store.get("resp_big", None).await.unwrap(), None);
        let roomy = ResponsesStore::new(DAY, 8 << 20, None);
        let huge = object("resp_huge", &"x".repeat(MAX_OBJECT_BYTES));
        roomy.put("resp_huge", None, &huge).await;
        assert_eq!(roomy.get("resp_huge", None).await.unwrap(), None);
        assert!(store.get("resp_4", None).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn zero_retention_keeps_nothing() {
        let store = ResponsesStore::new(Duration::ZERO, 1 << 20, None);
        assert!(!store.is_enabled());
        store.put("resp_a", None, &object("resp_a", "a")).await;
        assert_eq!(store.get("resp_a", None).await.unwrap(), None);
        assert!(store.local().map.is_empty());
        assert!(!ResponsesStore::disabled().is_enabled());
    }

    /// A store through a Redis that never answers (nothing listens on port 1).
    fn unreachable(on_failure: OnFailure) -> ResponsesStore {
        let settings = crate::config::RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            on_failure,
            timeout: Duration::from_millis(300),
            lease: Duration::from_secs(30),
            owner_timeout: Duration::from_secs(3),
        };
        let shared = Arc::new(SharedState::new(&settings).expect("redis url"));
        ResponsesStore::new(DAY, 1 << 20, Some(shared))
    }

    #[tokio::test]
    async fn with_redis_down_objects_stay_here_and_the_policy_applies() {
        for policy in [OnFailure::FailOpen, OnFailure::FailClosed] {
            let store = unreachable(policy);
            let obj = object("resp_a", "a");
            store.put("resp_a", Some("t"), &obj).await;
            // Kept here instead: found without Redis.
            assert_eq!(store.get("resp_a", Some("t")).await.unwrap(), Some(obj));
            let other = store.get("resp_elsewhere", Some("t")).await;
            match policy {
                OnFailure::FailOpen => assert_eq!(other.unwrap(), None),
                OnFailure::FailClosed => assert!(
                    matches!(other, Err(GatewayError::SharedStateUnavailable)),
                    "{other:?}"
                ),
            }
        }
    }

    #[test]
    fn what_redis_holds_reads_back() {
        let text = stored(Some("t\"1"), r#"{"id":"resp_a"}"#);
        assert_eq!(text, r#"{"team":"t\"1","response":{"id":"resp_a"}}"#);
        let back: Stored = serde_json::from_str(&text).unwrap();
        assert_eq!(back.team.as_deref(), Some("t\"1"));
        assert_eq!(back.response, json!({"id": "resp_a"}));
        let none: Stored = serde_json::from_str(&stored(None, "{}")).unwrap();
        assert_eq!(none.team, None);
        assert_eq!(redis_key("resp_a"), "sluice:response:resp_a");
    }
}
