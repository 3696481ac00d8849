//! What every handler shares: settings, providers, the relay registry, access control, metrics.

use std::sync::Arc;

use relay::Registry;

use crate::access::Access;
use crate::config::Settings;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::routing::ModelRouter;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub router: ModelRouter,
    /// The streams, in memory.
    pub registry: Arc<Registry>,
    /// Every task the gateway runs, and the moments of its shutdown.
    pub lifecycle: Lifecycle,
    pub access: Access,
    pub metrics: Metrics,
    /// Open client connections and their caps.
    pub connections: Arc<crate::net::connections::Connections>,
    /// The streams to read and cancel, here or on another instance ([`crate::streams`]).
    pub streams: crate::streams::Streams,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
