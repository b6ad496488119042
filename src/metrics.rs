//! Counters and histograms, exposed at `/metrics` in Prometheus text format
//! and summarized in `/api/status`.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub webhooks: Family<OutcomeLabel, Counter>,
    pub events_received: Counter,
    pub events_delivered: Counter,
    pub events_duplicate: Counter,
    pub events_unrouted: Counter,
    pub events_routed: Family<RuleLabel, Counter>,
    pub connections: Gauge,
    pub authenticated: Gauge,
    pub closes: Family<CodeLabel, Counter>,
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// Webhook received → frame written to the socket.
    pub delivery_latency: Histogram,
    /// Webhook request → response, for accepted webhooks.
    pub webhook_latency: Histogram,
    /// Time spent in the store while handling a webhook.
    pub store_latency: Histogram,
    pub slow_consumer_closes: Counter,
    /// notAfter of the certificate in service, Unix seconds.
    pub tls_cert_expiry: Gauge,
    pub tls_reloads: Family<OutcomeLabel, Counter>,
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 50 µs … ~3.3 s in ×2 steps: delivery is expected in the 0.1–5 ms range,
    // the store can take seconds when it is in trouble.
    exponential_buckets(0.000_05, 2.0, 17)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("callbridge");
        let m = Metrics {
            webhooks: Family::default(),
            events_received: Counter::default(),
            events_delivered: Counter::default(),
            events_duplicate: Counter::default(),
            events_unrouted: Counter::default(),
            events_routed: Family::default(),
            connections: Gauge::default(),
            authenticated: Gauge::default(),
            closes: Family::default(),
            auth_failures: Family::default(),
            delivery_latency: Histogram::new(seconds_buckets()),
            webhook_latency: Histogram::new(seconds_buckets()),
            store_latency: Histogram::new(seconds_buckets()),
            slow_consumer_closes: Counter::default(),
            tls_cert_expiry: Gauge::default(),
            tls_reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "webhooks",
            "Webhook requests by outcome",
            m.webhooks.clone(),
        );
        registry.register(
            "events_received",
            "Verified Telnyx events received (duplicates included)",
            m.events_received.clone(),
        );
        registry.register(
            "events_delivered",
            "Event frames written to dialer sockets",
            m.events_delivered.clone(),
        );
        registry.register(
            "events_duplicate",
            "Re-deliveries of an already stored Telnyx event id",
            m.events_duplicate.clone(),
        );
        registry.register(
            "events_unrouted",
            "Events no routing rule claimed (handled by CALLBRIDGE_UNROUTED)",
            m.events_unrouted.clone(),
        );
        registry.register(
            "events_routed",
            "Events by the routing rule that matched",
            m.events_routed.clone(),
        );
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "connections_authenticated",
            "Authenticated WebSocket connections",
            m.authenticated.clone(),
        );
        registry.register(
            "ws_closes",
            "WebSocket connections closed by the server, by close code",
            m.closes.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused WebSocket authentications by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Webhook received to event frame written",
            m.delivery_latency.clone(),
        );
        registry.register(
            "webhook_latency_seconds",
            "Webhook request to response for accepted webhooks",
            m.webhook_latency.clone(),
        );
        registry.register(
            "store_latency_seconds",
            "Store time per accepted webhook (route and ingest)",
            m.store_latency.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Sessions closed with 4013 because their queue was full",
            m.slow_consumer_closes.clone(),
        );
        registry.register(
            "tls_cert_expiry_timestamp_seconds",
            "notAfter of the TLS certificate in service (Unix seconds)",
            m.tls_cert_expiry.clone(),
        );
        registry.register(
            "tls_reloads",
            "TLS certificate reloads by outcome",
            m.tls_reloads.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn webhook(&self, outcome: &'static str) {
        self.webhooks.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn closed(&self, code: u16) {
        self.closes.get_or_create(&CodeLabel { code }).inc();
        if code == crate::protocol::close::SLOW_CONSUMER {
            self.slow_consumer_closes.inc();
        }
    }

    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn routed(&self, rule: &'static str) {
        self.events_routed.get_or_create(&RuleLabel { rule }).inc();
    }

    pub fn observe_since(h: &Histogram, start: Instant) {
        h.observe(start.elapsed().as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
