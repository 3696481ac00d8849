//! What every handler shares: settings, providers, the relay registry, access control, metrics.

use std::sync::Arc;

use relay::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::routing::ModelRouter;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub router: ModelRouter,
    /// The streams, in memory.
    pub registry: Arc<Registry>,
    /// Every running pump (see `generation`), so that shutdown can wait for them.
    pub pumps: TaskTracker,
    /// Cancelled when the shutdown grace period is over: pumps still running end their
    /// streams with an error event.
    pub shutdown: CancellationToken,
    pub access: Access,
    pub metrics: Metrics,
    /// Open client connections and their caps.
    pub connections: Arc<crate::connections::Connections>,
    /// Redis, when several instances share state (`SLUICE_REDIS_URL`); `None`: in memory.
    pub shared: Option<Arc<crate::shared_state::SharedState>>,
    /// Where streams are shared with other instances ([`crate::stream_log`]).
    pub stream_log: Arc<dyn crate::stream_log::StreamLog>,
    /// Cancelled when shutdown starts: `/readyz` answers 503 from then on.
    pub draining: CancellationToken,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
