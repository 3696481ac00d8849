//! What every handler shares: settings, providers, the relay registry, access control, metrics.

use std::sync::Arc;

use relay::StreamStore;

use crate::access::Access;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::routing::ModelRouter;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub router: ModelRouter,
    /// The streams: in memory by default (`relay::Registry`).
    pub registry: Arc<dyn StreamStore>,
    pub access: Access,
    pub metrics: Metrics,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
