//! The registry of live and recently finished generations by ID, with expiry and the memory
//! bounds: a per-stream cap, and a global cap that evicts the oldest finished streams first and
//! refuses new streams (never cuts a live one) when live streams alone fill it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::event::Meta;
use crate::{Generation, RelayError, StreamId};

pub const DEFAULT_RETENTION_SECS: u64 = 300;
pub const DEFAULT_MAX_STREAM_BYTES: usize = 64 << 20;
pub const DEFAULT_MAX_TOTAL_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a finished stream stays resumable.
    pub retention: Duration,
    pub max_stream_bytes: usize,
    pub max_total_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(DEFAULT_RETENTION_SECS),
            max_stream_bytes: DEFAULT_MAX_STREAM_BYTES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub live: usize,
    pub finished: usize,
    pub bytes: usize,
    pub evicted: usize,
    pub refused: usize,
}

#[derive(Debug)]
pub struct Registry {
    streams: Mutex<HashMap<StreamId, Arc<Generation>>>,
    limits: Limits,
    bytes: Arc<AtomicUsize>,
    evicted: AtomicUsize,
    refused: AtomicUsize,
}

impl Registry {
    pub fn new(limits: Limits) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            limits,
            bytes: Arc::new(AtomicUsize::new(0)),
            evicted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Arc<Generation>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new generation, evicting the oldest finished streams if the global bound is
    /// reached, or refusing with [`RelayError::Full`] if live streams alone hold it.
    pub fn create(&self, meta: Meta, include_usage: bool) -> Result<Arc<Generation>, RelayError> {
        let mut map = self.map();
        if self.bytes.load(Ordering::Relaxed) >= self.limits.max_total_bytes {
            let mut finished: Vec<(Instant, StreamId)> = map
                .iter()
                .filter_map(|(id, g)| g.finished_at().map(|t| (t, id.clone())))
                .collect();
            finished.sort();
            for (_, id) in finished {
                if self.bytes.load(Ordering::Relaxed) < self.limits.max_total_bytes {
                    break;
                }
                // Readers still holding it keep its memory until they finish; it is no longer
                // findable either way.
                map.remove(&id);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            if self.bytes.load(Ordering::Relaxed) >= self.limits.max_total_bytes {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(RelayError::Full);
            }
        }
        let id = StreamId::random();
        let gen = Arc::new(Generation::new(
            id.clone(),
            meta,
            include_usage,
            self.limits.max_stream_bytes,
            self.bytes.clone(),
        ));
        map.insert(id, gen.clone());
        Ok(gen)
    }

    /// A stream by ID, unless unknown or expired.
    pub fn get(&self, id: &str) -> Result<Arc<Generation>, RelayError> {
        let id = StreamId::parse(id).ok_or(RelayError::NotFound)?;
        let map = self.map();
        let gen = map.get(&id).ok_or(RelayError::NotFound)?;
        if gen
            .finished_at()
            .is_some_and(|t| t.elapsed() >= self.limits.retention)
        {
            return Err(RelayError::NotFound);
        }
        Ok(gen.clone())
    }

    /// Drops streams finished longer ago than the retention time. Call periodically.
    pub fn sweep(&self) -> usize {
        let mut map = self.map();
        let before = map.len();
        let retention = self.limits.retention;
        map.retain(|_, g| g.finished_at().is_none_or(|t| t.elapsed() < retention));
        before - map.len()
    }

    /// Every stream still generating (for shutdown).
    pub fn live(&self) -> Vec<Arc<Generation>> {
        self.map()
            .values()
            .filter(|g| !g.is_finished())
            .cloned()
            .collect()
    }

    pub fn stats(&self) -> Stats {
        let map = self.map();
        let live = map.values().filter(|g| !g.is_finished()).count();
        Stats {
            live,
            finished: map.len() - live,
            bytes: self.bytes.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Delta;

    #[test]
    fn expired_streams_are_gone() {
        let r = Registry::new(Limits {
            retention: Duration::from_millis(0),
            ..Limits::default()
        });
        let g = r.create(Meta::default(), false).unwrap();
        assert!(r.get(g.id().as_str()).is_ok(), "live streams never expire");
        g.finish();
        assert_eq!(r.get(g.id().as_str()).unwrap_err(), RelayError::NotFound);
        assert_eq!(r.sweep(), 1);
        assert_eq!(r.get("nope").unwrap_err(), RelayError::NotFound);
    }

    #[test]
    fn full_registry_evicts_finished_then_refuses() {
        let r = Registry::new(Limits {
            max_total_bytes: 1000,
            ..Limits::default()
        });
        let old = r.create(Meta::default(), false).unwrap();
        old.push_delta(Delta::text(0, "x".repeat(2000)));
        old.finish();
        let old_id = old.id().clone();
        drop(old);
        // The finished stream is evicted to make room.
        let live = r.create(Meta::default(), false).unwrap();
        assert_eq!(r.get(old_id.as_str()).unwrap_err(), RelayError::NotFound);
        assert_eq!(r.stats().evicted, 1);
        // A live stream over the bound is not cut short; new streams are refused instead.
        assert!(live.push_delta(Delta::text(0, "y".repeat(2000))));
        assert_eq!(
            r.create(Meta::default(), false).unwrap_err(),
            RelayError::Full
        );
        live.finish();
        assert_eq!(r.stats().refused, 1);
    }

    #[tokio::test]
    async fn encodings_count_globally_but_not_against_the_stream_bound() {
        let r = Registry::new(Limits {
            max_stream_bytes: 2000,
            ..Limits::default()
        });
        let g = r.create(Meta::default(), false).unwrap();
        for _ in 0..5 {
            assert!(g.push_delta(Delta::text(0, "abcd")));
        }
        let before = r.stats().bytes;
        let mut reader = g.subscribe(0).unwrap();
        for f in [crate::Format::OpenAi, crate::Format::Browser] {
            for _ in 0..5 {
                let e = reader.next().await.unwrap();
                g.encoded(&e, f, &Meta::default());
            }
            drop(reader);
            reader = g.subscribe(0).unwrap();
        }
        assert!(r.stats().bytes > before, "cached encodings are counted");
        // The stream still has room for as much text as before the reads.
        assert!(g.push_delta(Delta::text(0, "efgh")));
        assert!(!g.is_finished());
    }

    #[test]
    fn per_stream_bound_fails_the_stream() {
        let r = Registry::new(Limits {
            max_stream_bytes: 500,
            ..Limits::default()
        });
        let g = r.create(Meta::default(), false).unwrap();
        assert!(g.push_delta(Delta::text(0, "a")));
        assert!(!g.push_delta(Delta::text(0, "b".repeat(1000))));
        assert!(g.is_finished());
        assert!(matches!(g.outcome(), Some(crate::Event::Failed(_))));
    }
}
