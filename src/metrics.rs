//! Counters and histograms, exposed at `/metrics` in Prometheus text format
//! and summarized in `/api/status`; and this instance's per-second figures
//! for the console ([`crate::rates`]), fed from the same call sites.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::rates::Rates;

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
pub struct EndpointOutcomeLabel {
    pub endpoint: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionOutcomeLabel {
    pub action: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
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
    /// Refused reloads, by any path (API, SIGHUP, file change).
    pub tls_reload_failures: Counter,
    /// §8 `send`s by outcome: `sent` or the `error` code.
    pub messages: Family<OutcomeLabel, Counter>,
    /// §9 signed-message refusals by reason (the `error` code).
    pub signature_failures: Family<ReasonLabel, Counter>,
    /// Recovery runs by outcome (ok, failed, unauthorized, busy).
    pub recovery_runs: Family<OutcomeLabel, Counter>,
    /// Recovered deliveries by result (ingested, duplicate, skipped).
    pub recovered_events: Family<ResultLabel, Counter>,
    /// When a recovery run last completed, Unix seconds.
    pub recovery_last_success: Gauge,
    /// Call actions (§14) by action and outcome (`ok` or the error code).
    pub call_actions: Family<ActionOutcomeLabel, Counter>,
    /// JWKS fetches (§15) by outcome, and the keys known.
    pub jwks_fetches: Family<OutcomeLabel, Counter>,
    pub jwks_keys: Gauge,
    /// Outbound attempts by endpoint and outcome (delivered, retry, failed).
    pub outbound_attempts: Family<EndpointOutcomeLabel, Counter>,
    pub outbound_enqueued: Counter,
    /// Attempt start → answer (or timeout).
    pub outbound_latency: Histogram,
    /// Pending deliveries in the store, refreshed every 10 s.
    pub outbound_queue_depth: Gauge,
    /// The last 15 minutes, second by second, for the console (not
    /// exported to Prometheus, which has the counters themselves).
    pub rates: Rates,
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 50 µs … ~3.3 s in ×2 steps: delivery is expected in the 0.1–5 ms range,
    // the store can take seconds when it is in trouble.
    exponential_buckets(0.000_05, 2.0, 17)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("callbridge"),
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
            tls_reload_failures: Counter::default(),
            messages: Family::default(),
            signature_failures: Family::default(),
            recovery_runs: Family::default(),
            recovered_events: Family::default(),
            recovery_last_success: Gauge::default(),
            call_actions: Family::default(),
            jwks_fetches: Family::default(),
            jwks_keys: Gauge::default(),
            outbound_attempts: Family::default(),
            outbound_enqueued: Counter::default(),
            outbound_latency: Histogram::new(seconds_buckets()),
            outbound_queue_depth: Gauge::default(),
            rates: Rates::default(),
        };
        // Registration order is the order of `/metrics`: keep it.
        m.register_events();
        m.register_connections();
        m.register_delivery();
        m.register_tls();
        m.register_messages();
        m.register_outbound();
        m.register_recovery();
        m
    }
}

impl Metrics {
    fn register_events(&mut self) {
        let r = &mut self.registry;
        r.register(
            "webhooks",
            "Webhook requests by outcome",
            self.webhooks.clone(),
        );
        r.register(
            "events_received",
            "Verified Telnyx events received (duplicates included)",
            self.events_received.clone(),
        );
        r.register(
            "events_delivered",
            "Event frames written to dialer sockets",
            self.events_delivered.clone(),
        );
        r.register(
            "events_duplicate",
            "Re-deliveries of an already stored Telnyx event id",
            self.events_duplicate.clone(),
        );
        r.register(
            "events_unrouted",
            "Events no routing rule claimed (handled by CALLBRIDGE_UNROUTED)",
            self.events_unrouted.clone(),
        );
        r.register(
            "events_routed",
            "Events by the routing rule that matched",
            self.events_routed.clone(),
        );
    }

    fn register_connections(&mut self) {
        let r = &mut self.registry;
        r.register(
            "connections",
            "Open WebSocket connections",
            self.connections.clone(),
        );
        r.register(
            "connections_authenticated",
            "Authenticated WebSocket connections",
            self.authenticated.clone(),
        );
        r.register(
            "ws_closes",
            "WebSocket connections closed by the server, by close code",
            self.closes.clone(),
        );
        r.register(
            "auth_failures",
            "Refused WebSocket authentications by reason",
            self.auth_failures.clone(),
        );
    }

    /// How fast events get through, and sessions that could not keep up.
    fn register_delivery(&mut self) {
        let r = &mut self.registry;
        r.register(
            "delivery_latency_seconds",
            "Webhook received to event frame written",
            self.delivery_latency.clone(),
        );
        r.register(
            "webhook_latency_seconds",
            "Webhook request to response for accepted webhooks",
            self.webhook_latency.clone(),
        );
        r.register(
            "store_latency_seconds",
            "Store time per accepted webhook (route and ingest)",
            self.store_latency.clone(),
        );
        r.register(
            "slow_consumer_closes",
            "Sessions closed with 4013 because their queue was full",
            self.slow_consumer_closes.clone(),
        );
    }

    fn register_messages(&mut self) {
        let r = &mut self.registry;
        r.register(
            "messages",
            "Client messages to users and calls (send), by outcome: sent or the error code",
            self.messages.clone(),
        );
        r.register(
            "signature_failures",
            "Client messages refused by the signing check, by reason",
            self.signature_failures.clone(),
        );
    }

    fn register_outbound(&mut self) {
        let r = &mut self.registry;
        r.register(
            "outbound_attempts",
            "Outbound webhook attempts by endpoint and outcome (delivered, retry, failed)",
            self.outbound_attempts.clone(),
        );
        r.register(
            "outbound_enqueued",
            "Outbound deliveries queued (one per event and matching endpoint)",
            self.outbound_enqueued.clone(),
        );
        r.register(
            "outbound_attempt_latency_seconds",
            "Outbound attempt start to answer or timeout",
            self.outbound_latency.clone(),
        );
        r.register(
            "outbound_queue_depth",
            "Outbound deliveries pending in the store",
            self.outbound_queue_depth.clone(),
        );
    }

    /// Contract §13's names.
    fn register_recovery(&mut self) {
        let r = &mut self.registry;
        r.register(
            "recovery_runs",
            "Recovery runs (Telnyx delivery log) by outcome",
            self.recovery_runs.clone(),
        );
        r.register(
            "recovered_events",
            "Failed Telnyx deliveries read by recovery, by result: ingested, duplicate, skipped",
            self.recovered_events.clone(),
        );
        r.register(
            "recovery_last_success_timestamp_seconds",
            "When a recovery run last completed (Unix seconds)",
            self.recovery_last_success.clone(),
        );
        r.register(
            "call_actions",
            "Call actions from dialers (answer, hangup, dial, ...) by action and outcome",
            self.call_actions.clone(),
        );
        r.register(
            "jwks_fetches",
            "Fetches of the identity provider's JWKS by outcome",
            self.jwks_fetches.clone(),
        );
        r.register(
            "jwks_keys",
            "Signing keys known from the identity provider's JWKS",
            self.jwks_keys.clone(),
        );
    }

    fn register_tls(&mut self) {
        let r = &mut self.registry;
        r.register(
            "tls_cert_expiry_timestamp_seconds",
            "notAfter of the TLS certificate in service (Unix seconds)",
            self.tls_cert_expiry.clone(),
        );
        r.register(
            "tls_reloads",
            "TLS certificate reloads by outcome",
            self.tls_reloads.clone(),
        );
        r.register(
            "tls_reload_failures",
            "Certificate reloads refused (the previous certificate stayed in service)",
            self.tls_reload_failures.clone(),
        );
    }
}

impl Metrics {
    /// Publish the store's command counter (MongoDB: every command the
    /// driver starts) as `callbridge_store_commands_total`.
    pub fn with_store_commands(mut self, counter: Option<Counter>) -> Self {
        if let Some(c) = counter {
            self.registry.register(
                "store_commands",
                "Commands sent to MongoDB (driver command monitoring)",
                c,
            );
        }
        self
    }

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

    pub fn message(&self, outcome: &'static str) {
        self.messages.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn outbound_attempt(&self, endpoint: &str, outcome: &'static str) {
        self.outbound_attempts
            .get_or_create(&EndpointOutcomeLabel {
                endpoint: endpoint.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn signature_failed(&self, reason: &'static str) {
        self.signature_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn call_action(&self, action: &str, outcome: &'static str) {
        self.call_actions
            .get_or_create(&ActionOutcomeLabel {
                action: action.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn recovery_run(&self, outcome: &'static str) {
        self.recovery_runs
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn recovered(&self, result: &'static str, n: u64) {
        self.recovered_events
            .get_or_create(&ResultLabel { result })
            .inc_by(n);
    }

    pub fn routed(&self, rule: &'static str) {
        self.events_routed.get_or_create(&RuleLabel { rule }).inc();
    }

    pub fn observe_since(h: &Histogram, start: Instant) {
        h.observe(start.elapsed().as_secs_f64());
    }

    /// A live event's frame was flushed to its socket: the webhook's
    /// arrival → now, into the histogram and the console's second.
    pub fn delivery_observed(&self, received: Instant) {
        let d = received.elapsed();
        self.delivery_latency.observe(d.as_secs_f64());
        self.rates.observe_latency(d);
    }

    /// Close the console's current second (called once a second by
    /// `server::spawn_rates`): webhooks accepted (answered 200, stored or
    /// duplicate) and frames delivered come from the counters above, so
    /// counting them costs the hot path nothing more.
    pub fn roll_second(&self) {
        let outcome = |outcome: &'static str| {
            self.webhooks
                .get(&OutcomeLabel { outcome })
                .map_or(0, |c| c.get())
        };
        let accepted = outcome("stored") + outcome("duplicate");
        self.rates.roll(accepted, self.events_delivered.get());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family is exposed, in the order it always was.
    #[test]
    fn families_keep_their_order() {
        let text = Metrics::default().render();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP callbridge_"))
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        let want = [
            "webhooks",
            "events_received",
            "events_delivered",
            "events_duplicate",
            "events_unrouted",
            "events_routed",
            "connections",
            "connections_authenticated",
            "ws_closes",
            "auth_failures",
            "delivery_latency_seconds",
            "webhook_latency_seconds",
            "store_latency_seconds",
            "slow_consumer_closes",
            "tls_cert_expiry_timestamp_seconds",
            "tls_reloads",
            "tls_reload_failures",
            "messages",
            "signature_failures",
            "outbound_attempts",
            "outbound_enqueued",
            "outbound_attempt_latency_seconds",
            "outbound_queue_depth",
            "recovery_runs",
            "recovered_events",
            "recovery_last_success_timestamp_seconds",
            "call_actions",
            "jwks_fetches",
            "jwks_keys",
        ];
        assert_eq!(names, want, "{text}");
    }
}
