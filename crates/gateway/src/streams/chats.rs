//! Which stream answers a chat now: the AI SDK's `useChat({ resume: true })` knows only its
//! chat's id, and asks `GET /v1/ui/chat/{chatId}/stream` after a reload.
//!
//! A chat maps to the stream of its latest `POST /v1/ui/chat`, for the team that made it (a
//! chat id is chosen by the client, so it is no secret: another team's chat of the same id is
//! another chat). An entry lasts as long as its stream runs: a finished stream is "no stream in
//! progress" (204), whatever the map still holds.
//!
//! - **in memory**: a map bounded by the number of streams that may run at once (a chat
//!   starting its next stream replaces its entry; entries of finished streams are dropped
//!   when the map is full, and whenever a lookup finds one); chat ids are bounded by the
//!   routes ([`MAX_CHAT_ID_BYTES`](crate::routes::ui::request::MAX_CHAT_ID_BYTES)).
//! - **with Redis** (`SLUICE_REDIS_URL`): `sluice:chat:{team length}:{team}:{chat id}` holds
//!   the stream's ID, so that any instance resumes the chat (through the stream's replica).
//!   The key expires [`LIVE_TTL`] after its last renewal; a small task of the owner renews it
//!   while the stream runs and deletes it when the stream ends (only if it still names that
//!   stream), so Redis holds at most one key per running chat stream. The in-memory map is
//!   kept too: it answers for this instance's own streams when Redis does not. When Redis
//!   does not answer, the streams' policy applies: a chat this instance does not run is not
//!   found (`fail_open`) or the request gets the limits' 503 (`fail_closed`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use relay::{Handle, Registry, StreamId};

use super::redis_log::LIVE_TTL;
use crate::config::OnFailure;
use crate::error::GatewayError;
use crate::lifecycle::Lifecycle;
use crate::shared_state::{SharedState, StateError};

/// How often the renewal task looks whether its stream has ended.
const END_POLL: Duration = Duration::from_millis(250);

/// A chat, as one team sees it.
type Key = (Option<String>, String);

/// The chat → stream mapping; see the module docs.
pub struct Chats {
    local: Mutex<HashMap<Key, StreamId>>,
    /// Most entries held in memory.
    max: usize,
    registry: Arc<Registry>,
    shared: Option<Arc<SharedState>>,
    lifecycle: Lifecycle,
}

/// The Redis key of a chat (team names and chat ids may hold `:`: the length keeps them apart).
fn redis_key(team: Option<&str>, chat: &str) -> String {
    let team = team.unwrap_or("");
    format!("sluice:chat:{}:{team}:{chat}", team.len())
}

/// Renews (ARGV[2] > 0: milliseconds) or deletes (0) a chat's key, if it still names stream
/// ARGV[1]: a newer stream of the same chat keeps its own.
const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
";

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Chats {
    pub fn new(
        registry: Arc<Registry>,
        shared: Option<Arc<SharedState>>,
        lifecycle: Lifecycle,
    ) -> Self {
        // Every entry worth keeping is a running stream: no more than may run at once.
        let max = registry.limits().max_live_streams.clamp(16, 1_000_000);
        Self {
            local: Mutex::new(HashMap::new()),
            max,
            registry,
            shared,
            lifecycle,
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<Key, StreamId>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_live(&self, id: &StreamId) -> bool {
        self.registry
            .get(id.as_str())
            .is_ok_and(|h| !h.is_finished())
    }

    /// Records `handle` (just started) as chat `chat`'s stream for `team`. With Redis down,
    /// `fail_closed` is the limits' 503 (the caller stops the stream), `fail_open` keeps the
    /// chat resumable on this instance only.
    pub async fn record(
        &self,
        team: Option<&str>,
        chat: &str,
        handle: &Handle,
    ) -> Result<(), GatewayError> {
        let id = *handle.id();
        {
            let mut local = self.local();
            if local.len() >= self.max {
                local.retain(|_, s| self.is_live(s));
            }
            if local.len() < self.max || local.contains_key(&(team.map(Into::into), chat.into())) {
                local.insert((team.map(Into::into), chat.to_owned()), id);
            } else {
                tracing::warn!(
                    max = self.max,
                    "too many chats in progress to remember one more: it cannot be resumed"
                );
            }
        }
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let key = redis_key(team, chat);
        let mut conn = shared.conn();
        let set = shared
            .call(conn.pset_ex::<_, _, ()>(&key, id.as_str(), ms(LIVE_TTL)))
            .await;
        if let Err(e) = set {
            tracing::debug!(error = %e, "recording a chat's stream in redis failed");
            return match shared.on_failure {
                OnFailure::FailClosed => Err(GatewayError::SharedStateUnavailable),
                OnFailure::FailOpen => Ok(()),
            };
        }
        // Background work: renews the key while the stream runs, deletes it at its end.
        self.lifecycle
            .spawn(keep(shared.clone(), key, handle.clone()));
        Ok(())
    }

    /// The stream chat `chat` of `team` runs now, if it has one in progress (a stream that has
    /// ended is none). Redis (when configured) knows the latest stream of every instance; this
    /// instance's map answers when Redis knows nothing or does not answer.
    pub async fn find(
        &self,
        team: Option<&str>,
        chat: &str,
    ) -> Result<Option<StreamId>, GatewayError> {
        let key = (team.map(Into::into), chat.to_owned());
        let local = {
            let mut map = self.local();
            match map.get(&key).copied() {
                Some(id) if self.is_live(&id) => Some(id),
                Some(_) => {
                    map.remove(&key);
                    None
                }
                None => None,
            }
        };
        let Some(shared) = &self.shared else {
            return Ok(local);
        };
        let mut conn = shared.conn();
        let found: Result<Option<String>, StateError> =
            shared.call(conn.get(redis_key(team, chat))).await;
        match found {
            Ok(Some(s)) => match StreamId::parse(&s) {
                // Finished here: no stream in progress, whatever Redis says.
                Some(id)
                    if self
                        .registry
                        .get(id.as_str())
                        .is_ok_and(|h| h.is_finished()) =>
                {
                    Ok(None)
                }
                Some(id) => Ok(Some(id)),
                None => Ok(local),
            },
            Ok(None) => Ok(local),
            Err(e) => {
                tracing::debug!(error = %e, "chat lookup in redis failed");
                match (local, shared.on_failure) {
                    (Some(id), _) => Ok(Some(id)),
                    (None, OnFailure::FailClosed) => Err(GatewayError::SharedStateUnavailable),
                    (None, OnFailure::FailOpen) => Ok(None),
                }
            }
        }
    }
}

/// Keeps a chat's Redis key while its stream runs, and deletes it at the end (see the module
/// docs). A renewal Redis misses is tried again at the next poll.
async fn keep(shared: Arc<SharedState>, key: String, handle: Handle) {
    let script = redis::Script::new(RENEW_SCRIPT);
    let id = handle.id().as_str().to_owned();
    let renew_every = LIVE_TTL / 3;
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(END_POLL).await;
        let finished = handle.is_finished();
        if !finished && renewed.elapsed() < renew_every {
            continue;
        }
        let ttl = if finished { 0 } else { ms(LIVE_TTL) };
        let mut conn = shared.conn();
        let done = shared
            .call(
                script
                    .key(&key)
                    .arg(&id)
                    .arg(ttl)
                    .invoke_async::<i64>(&mut conn),
            )
            .await;
        match (finished, done) {
            (true, Ok(_)) => return,
            (false, Ok(_)) => renewed = tokio::time::Instant::now(),
            // Not taken: the key expires by itself within `LIVE_TTL` if Redis stays away.
            (_, Err(_)) => {}
        }
        if finished && renewed.elapsed() >= LIVE_TTL {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chats(max_live: usize) -> (Arc<Registry>, Chats) {
        let registry = Arc::new(Registry::new(relay::Limits {
            max_live_streams: max_live,
            ..relay::Limits::default()
        }));
        let chats = Chats::new(registry.clone(), None, Lifecycle::new());
        (registry, chats)
    }

    #[tokio::test]
    async fn a_chat_maps_to_its_running_stream_for_its_team_only() {
        let (registry, chats) = chats(100);
        let w = registry
            .create_owned(relay::Meta::default(), true, Some("a".into()))
            .expect("stream");
        let h = w.handle();
        chats.record(Some("a"), "chat-1", &h).await.unwrap();
        assert_eq!(
            chats.find(Some("a"), "chat-1").await.unwrap(),
            Some(*h.id())
        );
        assert_eq!(chats.find(Some("b"), "chat-1").await.unwrap(), None);
        assert_eq!(chats.find(None, "chat-1").await.unwrap(), None);
        assert_eq!(chats.find(Some("a"), "chat-2").await.unwrap(), None);
        // A finished stream is no stream in progress, and its entry goes.
        w.finish_cancelled();
        assert!(h.is_finished());
        assert_eq!(chats.find(Some("a"), "chat-1").await.unwrap(), None);
        assert!(chats.local().is_empty());
    }

    #[tokio::test]
    async fn the_map_is_bounded_and_drops_finished_streams_first() {
        let (registry, chats) = chats(16);
        let mut writers = Vec::new();
        for i in 0..16 {
            let w = registry
                .create_owned(relay::Meta::default(), true, None)
                .expect("stream");
            chats
                .record(None, &format!("c{i}"), &w.handle())
                .await
                .unwrap();
            writers.push(w);
        }
        assert_eq!(chats.local().len(), 16);
        // One more while all run: not remembered (bounded).
        let extra = registry.create_owned(relay::Meta::default(), true, None);
        if let Ok(w) = extra {
            chats.record(None, "c16", &w.handle()).await.unwrap();
            assert!(chats.local().len() <= 16);
        }
        // One ends: the next chat takes its place.
        writers.remove(0).finish();
        let w = registry
            .create_owned(relay::Meta::default(), true, None)
            .expect("stream");
        chats.record(None, "c17", &w.handle()).await.unwrap();
        assert!(chats.local().len() <= 16);
        assert_eq!(
            chats.find(None, "c17").await.unwrap(),
            Some(*w.handle().id())
        );
        assert_eq!(chats.find(None, "c0").await.unwrap(), None);
    }

    /// Chats through a Redis that never answers (nothing listens on port 1).
    fn unreachable(on_failure: OnFailure) -> (Arc<Registry>, Chats) {
        let settings = crate::config::RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            on_failure,
            timeout: Duration::from_millis(300),
            lease: Duration::from_secs(30),
            owner_timeout: Duration::from_secs(3),
        };
        let shared = Arc::new(SharedState::new(&settings).expect("redis url"));
        let registry = Arc::new(Registry::new(relay::Limits::default()));
        let chats = Chats::new(registry.clone(), Some(shared), Lifecycle::new());
        (registry, chats)
    }

    #[tokio::test]
    async fn with_redis_down_the_streams_policy_applies() {
        let (registry, closed) = unreachable(OnFailure::FailClosed);
        let w = registry
            .create_owned(relay::Meta::default(), true, None)
            .expect("stream");
        // Recording needs Redis when failing closed (the caller then drops the stream).
        let e = closed.record(None, "c", &w.handle()).await.unwrap_err();
        assert!(matches!(e, GatewayError::SharedStateUnavailable), "{e:?}");
        // This instance's own chat is found without Redis; another one is the limits' 503.
        assert_eq!(
            closed.find(None, "c").await.unwrap(),
            Some(*w.handle().id())
        );
        let e = closed.find(None, "elsewhere").await.unwrap_err();
        assert!(matches!(e, GatewayError::SharedStateUnavailable), "{e:?}");

        let (registry, open) = unreachable(OnFailure::FailOpen);
        let w = registry
            .create_owned(relay::Meta::default(), true, None)
            .expect("stream");
        open.record(None, "c", &w.handle()).await.unwrap();
        assert_eq!(open.find(None, "c").await.unwrap(), Some(*w.handle().id()));
        assert_eq!(open.find(None, "elsewhere").await.unwrap(), None);
    }

    #[test]
    fn redis_keys_keep_team_and_chat_apart() {
        assert_ne!(redis_key(Some("a:b"), "c"), redis_key(Some("a"), "b:c"));
        assert_eq!(redis_key(None, "x"), "sluice:chat:0::x");
    }
}
