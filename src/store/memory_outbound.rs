//! The embedded store's outbound webhook state: endpoints and deliveries,
//! in memory like everything else there.
//!
//! Every operation on the delivery path is O(log n) in the number queued:
//! pending deliveries are indexed per endpoint by when they are due, held
//! ones by when their lease runs out, finished ones by when they finished
//! (kept for the history window, for `attempts` and `stats`, then dropped).
//! A scan over everything queued per webhook would make an endpoint that
//! is down, with its growing backlog, slow down every webhook.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::domain::{AttemptResult, Delivery, DeliveryStatus, Endpoint, EndpointStats};

/// (due or lease end in ms, insertion order, delivery id).
type Slot = (i64, u64, String);

#[derive(Default)]
pub(super) struct Outbound {
    pub endpoints: HashMap<String, Endpoint>,
    deliveries: HashMap<String, Held>,
    /// Pending and not held, per endpoint, by due time.
    due: HashMap<String, BTreeSet<Slot>>,
    /// Held by an attempt, per endpoint, by lease end.
    leased: HashMap<String, BTreeSet<Slot>>,
    /// Finished: (when, id), oldest first.
    done: VecDeque<(i64, String)>,
    order: u64,
}

struct Held {
    delivery: Delivery,
    order: u64,
    lease_until: Option<i64>,
}

impl Outbound {
    pub fn prune(&mut self, now: i64, history_ms: i64) {
        while let Some((at, _)) = self.done.front() {
            if now - *at <= history_ms {
                break;
            }
            let (_, id) = self.done.pop_front().expect("front exists");
            self.deliveries.remove(&id);
        }
    }

    pub fn delete_endpoint(&mut self, id: &str) -> bool {
        self.deliveries.retain(|_, h| h.delivery.endpoint_id != id);
        self.due.remove(id);
        self.leased.remove(id);
        self.endpoints.remove(id).is_some()
    }

    pub fn enqueue(&mut self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            if self.deliveries.contains_key(&d.id) {
                continue;
            }
            self.order += 1;
            let slot = (d.next_attempt_ms, self.order, d.id.clone());
            self.due
                .entry(d.endpoint_id.clone())
                .or_default()
                .insert(slot);
            let held = Held {
                delivery: d,
                order: self.order,
                lease_until: None,
            };
            self.deliveries.insert(held.delivery.id.clone(), held);
        }
    }

    pub fn claim(
        &mut self,
        endpoint: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Vec<Delivery> {
        self.expire_leases(endpoint, now);
        let mut out = Vec::new();
        let Some(due) = self.due.get_mut(endpoint) else {
            return out;
        };
        while out.len() < limit {
            let Some(first) = due.first() else { break };
            if first.0 > now {
                break;
            }
            let (_, order, id) = due.pop_first().expect("first exists");
            let Some(h) = self.deliveries.get_mut(&id) else {
                continue;
            };
            h.lease_until = Some(now + lease_ms);
            self.leased
                .entry(endpoint.to_string())
                .or_default()
                .insert((now + lease_ms, order, id));
            out.push(h.delivery.clone());
        }
        out
    }

    /// Held past their lease (the attempt never reported): due again.
    fn expire_leases(&mut self, endpoint: &str, now: i64) {
        let Some(leased) = self.leased.get_mut(endpoint) else {
            return;
        };
        while leased.first().is_some_and(|s| s.0 <= now) {
            let (_, order, id) = leased.pop_first().expect("first exists");
            if let Some(h) = self.deliveries.get_mut(&id) {
                h.lease_until = None;
                let slot = (h.delivery.next_attempt_ms, order, id);
                self.due
                    .entry(endpoint.to_string())
                    .or_default()
                    .insert(slot);
            }
        }
    }

    pub fn finish(&mut self, id: &str, r: AttemptResult, now: i64) {
        let Some(h) = self.deliveries.get_mut(id) else {
            // Deleted with its endpoint while the attempt ran.
            return;
        };
        let endpoint = h.delivery.endpoint_id.clone();
        if let Some(until) = h.lease_until.take() {
            if let Some(l) = self.leased.get_mut(&endpoint) {
                l.remove(&(until, h.order, id.to_string()));
            }
        }
        let d = &mut h.delivery;
        d.status = r.status;
        d.attempts = r.attempts;
        d.next_attempt_ms = r.next_attempt_ms;
        d.last_status_code = r.last_status_code;
        d.last_error = r.last_error;
        if r.status == DeliveryStatus::Pending {
            let slot = (d.next_attempt_ms, h.order, id.to_string());
            self.due.entry(endpoint).or_default().insert(slot);
        } else {
            // Kept for `attempts` and `stats` only: the body is not needed
            // any more (it is most of the record's size).
            d.body = String::new();
            self.done.push_back((now, id.to_string()));
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
        let mut v: Vec<&Held> = self
            .deliveries
            .values()
            .filter(|h| h.delivery.endpoint_id == endpoint)
            .collect();
        v.sort_by(|a, b| {
            b.delivery
                .created_ms
                .cmp(&a.delivery.created_ms)
                .then(b.order.cmp(&a.order))
        });
        v.into_iter()
            .take(limit)
            .map(|h| h.delivery.clone())
            .collect()
    }

    pub fn pending(&self) -> u64 {
        let n =
            |m: &HashMap<String, BTreeSet<Slot>>| m.values().map(|s| s.len() as u64).sum::<u64>();
        n(&self.due) + n(&self.leased)
    }
}
