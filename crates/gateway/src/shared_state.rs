//! The connection to Redis that the shared limit and stream stores use when several instances
//! run behind one load balancer (`SLUICE_REDIS_URL`).
//!
//! One multiplexed connection (redis-rs's `ConnectionManager`, created lazily so that Sluice
//! starts while Redis is down, and reconnecting by itself), a timeout on every call so that the
//! gateway never waits on Redis for longer than `SLUICE_REDIS_TIMEOUT_MS`, an up/down state that
//! is logged once per change, and this instance's ID (random per process) for leases and stream
//! ownership.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::RngCore;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{OnFailure, RedisSettings};

/// Why a Redis call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

pub struct SharedState {
    conn: ConnectionManager,
    timeout: Duration,
    pub on_failure: OnFailure,
    pub lease: Duration,
    pub owner_timeout: Duration,
    /// This process, as the owner of leases and streams.
    pub instance: String,
    /// Where the URL points, without its password (for logs).
    pub redacted_url: String,
    up: AtomicBool,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("url", &self.redacted_url)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// Sets up the (lazy) connection; fails only on a URL redis-rs cannot parse.
    pub fn new(settings: &RedisSettings) -> Result<Self, StateError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            // Reconnect attempts are cheap and quick: a call never waits for more than the
            // timeout anyway.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        Ok(Self {
            conn,
            timeout: settings.timeout,
            on_failure: settings.on_failure,
            lease: settings.lease,
            owner_timeout: settings.owner_timeout,
            instance: hex::encode(id),
            redacted_url: settings.redacted(),
            up: AtomicBool::new(true),
        })
    }

    /// A connection handle for one call (cheap: a clone of the multiplexed connection).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs one Redis call with the timeout, noting whether Redis answered.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StateError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let r = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StateError::Redis(e)),
            Err(_) => Err(StateError::Timeout(self.timeout)),
        };
        self.note(r.is_ok(), r.as_ref().err());
        r
    }

    /// The call's timeout, for callers that wait longer on purpose (a blocking read).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the last call got an answer.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn note(&self, ok: bool, err: Option<&StateError>) {
        let was = self.up.swap(ok, Ordering::Relaxed);
        match (was, ok) {
            (true, false) => tracing::warn!(
                redis = %self.redacted_url,
                error = %err.map(ToString::to_string).unwrap_or_default(),
                on_failure = ?self.on_failure,
                "redis is not answering: {}",
                match self.on_failure {
                    OnFailure::FailOpen => "limits fall back to this instance's own, streams to this instance",
                    OnFailure::FailClosed => "requests that need shared state get 503",
                }
            ),
            (false, true) => {
                tracing::info!(redis = %self.redacted_url, "redis answers again: shared state is back")
            }
            _ => {}
        }
    }
}
