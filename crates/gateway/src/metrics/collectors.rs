//! Values that live elsewhere (the relay's memory, open connections), read at scrape time so
//! that nobody updates a gauge on the way.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::net::connections::Connections;

/// Encodes one unlabelled value under `name`.
fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(e)
}

fn gauge(v: usize) -> ConstGauge<u64> {
    ConstGauge::new(v as u64)
}

fn counter(v: usize) -> ConstCounter<u64> {
    ConstCounter::new(v as u64)
}

/// The relay's memory and retained streams, read from `relay::Registry::stats` at scrape time.
/// Names as before the move to prometheus-client: the benchmark and dashboards read them.
#[derive(Debug)]
pub(super) struct RelayCollector(pub(super) Arc<relay::Registry>);

impl Collector for RelayCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        encode_one(
            &mut e,
            "sluice_relay_live_streams",
            "Generations in progress.",
            &gauge(s.live),
        )?;
        encode_one(
            &mut e,
            "sluice_relay_finished_streams",
            "Finished generations kept for resuming.",
            &gauge(s.finished),
        )?;
        encode_one(
            &mut e,
            "sluice_relay_bytes",
            "Bytes held by replay logs (live and finished streams).",
            &gauge(s.bytes),
        )?;
        encode_one(
            &mut e,
            "sluice_relay_live_bytes",
            "Bytes held by the replay logs of generations in progress.",
            &gauge(s.live_bytes),
        )?;
        encode_one(
            &mut e,
            "sluice_relay_max_bytes",
            "The relay memory bound (SLUICE_RELAY_MAX_TOTAL_BYTES, or its default).",
            &gauge(s.max_bytes),
        )?;
        encode_one(
            &mut e,
            "sluice_relay_oldest_retained_seconds",
            "Seconds since the oldest retained finished stream ended: how long answers stay resumable now.",
            &ConstGauge::new(s.oldest_finished_age.map_or(0, |d| d.as_secs())),
        )?;
        encode_one(
            &mut e,
            "sluice_relay_evicted_streams",
            "Finished streams evicted to stay under the relay memory bound.",
            &counter(s.evicted),
        )?;
        encode_one(
            &mut e,
            "sluice_relay_refused_streams",
            "New streams refused because live streams filled the relay memory bound.",
            &counter(s.refused),
        )
    }
}

/// Open client connections and what the caps did, read at scrape time.
#[derive(Debug)]
pub(super) struct ConnectionsCollector(pub(super) Arc<Connections>);

impl Collector for ConnectionsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        encode_one(
            &mut e,
            "sluice_connections_open",
            "Client connections open now.",
            &gauge(c.open()),
        )?;
        encode_one(
            &mut e,
            "sluice_connections_evicted",
            "Idle connections closed to make room for new ones at a connection cap.",
            &counter(c.evicted()),
        )?;
        encode_one(
            &mut e,
            "sluice_connections_refused",
            "Connections refused at a cap because every open one was busy.",
            &counter(c.refused()),
        )
    }
}
