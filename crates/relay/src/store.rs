//! Where streams live: the seam a shared store (Redis, so that any of several instances can
//! serve a reconnect) plugs into. [`Registry`](crate::Registry) is the in-memory default.
//!
//! The live fan-out of a generation always happens in the process running it (readers there
//! wait on an in-process channel, never on the store); a shared store mirrors each append so
//! that another instance can serve a reader that reconnects to it.

use std::sync::Arc;

use crate::event::Meta;
use crate::{Generation, RelayError, Stats};

pub trait StreamStore: Send + Sync + std::fmt::Debug + 'static {
    /// Registers a new generation, or refuses it when the store is full of live streams.
    fn create(&self, meta: Meta, include_usage: bool) -> Result<Arc<Generation>, RelayError>;
    /// A stream by ID, unless unknown or expired.
    fn get(&self, id: &str) -> Result<Arc<Generation>, RelayError>;
    /// Drops streams finished longer ago than the retention time; returns how many.
    fn expire(&self) -> usize;
    /// Every stream still generating (for shutdown).
    fn live(&self) -> Vec<Arc<Generation>>;
    fn stats(&self) -> Stats;
}

impl StreamStore for crate::Registry {
    fn create(&self, meta: Meta, include_usage: bool) -> Result<Arc<Generation>, RelayError> {
        crate::Registry::create(self, meta, include_usage)
    }
    fn get(&self, id: &str) -> Result<Arc<Generation>, RelayError> {
        crate::Registry::get(self, id)
    }
    fn expire(&self) -> usize {
        self.sweep()
    }
    fn live(&self) -> Vec<Arc<Generation>> {
        crate::Registry::live(self)
    }
    fn stats(&self) -> Stats {
        crate::Registry::stats(self)
    }
}
