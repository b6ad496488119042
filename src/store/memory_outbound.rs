//! The embedded store's outbound webhook state: endpoints and deliveries,
//! in memory like everything else there. Finished deliveries are kept for
//! the history window (for `attempts` and `stats`), then dropped.

use std::collections::HashMap;

use crate::domain::{AttemptResult, Delivery, DeliveryStatus, Endpoint, EndpointStats};

#[derive(Default)]
pub(super) struct Outbound {
    pub endpoints: HashMap<String, Endpoint>,
    pub deliveries: HashMap<String, Held>,
}

pub(super) struct Held {
    pub delivery: Delivery,
    /// Until when an attempt holds it (ms since the epoch).
    pub lease_until: i64,
    /// When it was delivered or failed.
    pub done_ms: Option<i64>,
}

impl Outbound {
    pub fn prune(&mut self, now: i64, history_ms: i64) {
        self.deliveries
            .retain(|_, h| h.done_ms.is_none_or(|done| now - done <= history_ms));
    }

    pub fn delete_endpoint(&mut self, id: &str) -> bool {
        self.deliveries.retain(|_, h| h.delivery.endpoint_id != id);
        self.endpoints.remove(id).is_some()
    }

    pub fn enqueue(&mut self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            self.deliveries.entry(d.id.clone()).or_insert(Held {
                delivery: d,
                lease_until: 0,
                done_ms: None,
            });
        }
    }

    pub fn claim(
        &mut self,
        endpoint: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Vec<Delivery> {
        let mut due: Vec<&mut Held> = self
            .deliveries
            .values_mut()
            .filter(|h| {
                h.delivery.endpoint_id == endpoint
                    && h.delivery.status == DeliveryStatus::Pending
                    && h.delivery.next_attempt_ms <= now
                    && h.lease_until <= now
            })
            .collect();
        due.sort_by_key(|h| (h.delivery.next_attempt_ms, h.delivery.created_ms));
        due.into_iter()
            .take(limit)
            .map(|h| {
                h.lease_until = now + lease_ms;
                h.delivery.clone()
            })
            .collect()
    }

    pub fn finish(&mut self, id: &str, r: AttemptResult, now: i64) {
        let Some(h) = self.deliveries.get_mut(id) else {
            // Deleted with its endpoint while the attempt ran.
            return;
        };
        let d = &mut h.delivery;
        d.status = r.status;
        d.attempts = r.attempts;
        d.next_attempt_ms = r.next_attempt_ms;
        d.last_status_code = r.last_status_code;
        d.last_error = r.last_error;
        h.lease_until = 0;
        if r.status != DeliveryStatus::Pending {
            h.done_ms = Some(now);
        }
    }

    pub fn stats(&self, endpoint: &str) -> EndpointStats {
        let mut s = EndpointStats::default();
        for h in self
            .deliveries
            .values()
            .filter(|h| h.delivery.endpoint_id == endpoint)
        {
            match h.delivery.status {
                DeliveryStatus::Pending => s.pending += 1,
                DeliveryStatus::Delivered => s.delivered += 1,
                DeliveryStatus::Failed => s.failed += 1,
            }
        }
        s
    }

    pub fn recent(&self, endpoint: &str, limit: usize) -> Vec<Delivery> {
        let mut v: Vec<&Delivery> = self
            .deliveries
            .values()
            .map(|h| &h.delivery)
            .filter(|d| d.endpoint_id == endpoint)
            .collect();
        v.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
        v.into_iter().take(limit).cloned().collect()
    }

    pub fn pending(&self) -> u64 {
        self.deliveries
            .values()
            .filter(|h| h.delivery.status == DeliveryStatus::Pending)
            .count() as u64
    }
}
