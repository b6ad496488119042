//! This instance's figures per second for the operator's console (contract
//! §12): webhooks accepted, event frames delivered to sockets, and the
//! delivery latency's p50 and p99, one slot per second for the last 15
//! minutes. A leaf module: [`crate::metrics::Metrics`] holds a [`Rates`]
//! and feeds it; the console's stream reads it.
//!
//! The hot path only touches atomics: a delivery's latency is one
//! `fetch_add` on its bucket (the counts come from the Prometheus counters
//! the daemon keeps anyway, read once per second). One task calls
//! [`Rates::roll`] every second (`server::spawn_rates`): it takes the
//! second's buckets and the counters' growth, computes the percentiles and
//! appends the slot to a ring of [`WINDOW_SECS`] slots (a mutex that only
//! that task and the console's readers take).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// 15 minutes of one-second slots: what the console's charts show.
pub const WINDOW_SECS: usize = 900;

/// Latency buckets: 4 per power of two of microseconds (1, 2, 3, 4, 5, 6,
/// 7, 8, 10, 12, 14, 16, 20, …), so a bucket is at most 25 % wider than its
/// lower bound and a percentile reported at the bucket's middle is within
/// ±12.5 % of the true value. 104 buckets reach 2^27 µs (134 s); anything
/// slower is counted in the last one.
const BUCKETS: usize = 104;

/// One second of this instance.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Slot {
    pub webhooks: u64,
    pub deliveries: u64,
    /// `None`: nothing was delivered live in that second, so there is no
    /// latency to show (not a made-up zero).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// What the console's `rates` key carries: oldest second first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RatesView {
    pub interval_secs: u64,
    pub webhooks: Vec<u64>,
    pub deliveries: Vec<u64>,
    pub delivery_p50_ms: Vec<Option<f64>>,
    pub delivery_p99_ms: Vec<Option<f64>>,
}

#[derive(Default)]
struct Ring {
    slots: VecDeque<Slot>,
    /// The counters' values at the last roll: a slot holds their growth.
    last_webhooks: Option<u64>,
    last_deliveries: Option<u64>,
}

pub struct Rates {
    /// This second's live deliveries, by latency bucket.
    latency: [AtomicU64; BUCKETS],
    ring: Mutex<Ring>,
    /// Bumped by every roll: readers re-serialize only when it moved.
    generation: AtomicU64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            ring: Mutex::new(Ring {
                slots: VecDeque::with_capacity(WINDOW_SECS),
                ..Ring::default()
            }),
            generation: AtomicU64::new(0),
        }
    }
}

/// The bucket of a latency in microseconds.
fn bucket_of(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros() as usize; // ≥ 2
    let sub = ((us >> (octave - 2)) & 3) as usize;
    (4 * (octave - 1) + sub).min(BUCKETS - 1)
}

/// `[lower, upper)` of a bucket, in microseconds.
fn bucket_bounds(b: usize) -> (u64, u64) {
    if b < 4 {
        return (b as u64, b as u64 + 1);
    }
    let octave = b / 4 + 1;
    let sub = (b % 4) as u64;
    ((4 + sub) << (octave - 2), (5 + sub) << (octave - 2))
}

/// The `p` quantile (0 < p ≤ 1) of the counts, in ms at its bucket's
/// middle, rounded to 0.01 ms; `None` for no observation.
fn quantile_ms(counts: &[u64; BUCKETS], p: f64) -> Option<f64> {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    // The rank of the p-quantile: the smallest k with k ≥ p·n (1-based).
    let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    for (b, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let (lo, hi) = bucket_bounds(b);
            let mid_ms = (lo + hi) as f64 / 2.0 / 1000.0;
            return Some((mid_ms * 100.0).round() / 100.0);
        }
    }
    None
}

impl Rates {
    /// One live delivery's latency (webhook received → frame written).
    pub fn observe_latency(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.latency[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Close the current second: `webhooks` and `deliveries` are the
    /// counters' totals now (their growth since the last roll is the
    /// second's figure; the first roll only takes their values, and the
    /// latency observed before it is dropped with it).
    pub fn roll(&self, webhooks: u64, deliveries: u64) {
        let mut counts = [0u64; BUCKETS];
        for (c, a) in counts.iter_mut().zip(&self.latency) {
            *c = a.swap(0, Ordering::Relaxed);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(last_webhooks), Some(last_deliveries)) =
            (ring.last_webhooks, ring.last_deliveries)
        else {
            // The first roll: a baseline, not a second.
            ring.last_webhooks = Some(webhooks);
            ring.last_deliveries = Some(deliveries);
            return;
        };
        let slot = Slot {
            webhooks: webhooks.saturating_sub(last_webhooks),
            deliveries: deliveries.saturating_sub(last_deliveries),
            p50_ms: quantile_ms(&counts, 0.50),
            p99_ms: quantile_ms(&counts, 0.99),
        };
        ring.last_webhooks = Some(webhooks);
        ring.last_deliveries = Some(deliveries);
        if ring.slots.len() == WINDOW_SECS {
            ring.slots.pop_front();
        }
        ring.slots.push_back(slot);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes with every roll.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn view(&self) -> RatesView {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let s = &ring.slots;
        RatesView {
            interval_secs: 1,
            webhooks: s.iter().map(|x| x.webhooks).collect(),
            deliveries: s.iter().map(|x| x.deliveries).collect(),
            delivery_p50_ms: s.iter().map(|x| x.p50_ms).collect(),
            delivery_p99_ms: s.iter().map(|x| x.p99_ms).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_at_most_a_quarter_wide() {
        let mut expected_lo = 0;
        for b in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(b);
            assert_eq!(
                lo,
                expected_lo,
                "bucket {b} starts where {} ends",
                b.max(1) - 1
            );
            assert!(hi > lo);
            if lo >= 4 {
                assert!((hi - lo) * 4 <= lo, "bucket {b}: [{lo}, {hi})");
            }
            assert_eq!(bucket_of(lo), b);
            assert_eq!(bucket_of(hi - 1), b);
            expected_lo = hi;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_bounds(BUCKETS - 1).1, 1 << 27);
    }

    #[test]
    fn percentiles_within_the_bucket_resolution() {
        let r = Rates::default();
        r.roll(0, 0);
        // 98 deliveries at 2 ms, 2 at 40 ms: p50 is 2 ms, p99 is 40 ms.
        for _ in 0..98 {
            r.observe_latency(Duration::from_micros(2000));
        }
        for _ in 0..2 {
            r.observe_latency(Duration::from_millis(40));
        }
        r.roll(0, 0);
        let v = r.view();
        let p50 = v.delivery_p50_ms[0].unwrap();
        let p99 = v.delivery_p99_ms[0].unwrap();
        assert!((p50 - 2.0).abs() <= 2.0 * 0.125, "p50 {p50}");
        assert!((p99 - 40.0).abs() <= 40.0 * 0.125, "p99 {p99}");
        // 100 spread evenly over 1..=100 ms: p50 ≈ 50, p99 ≈ 99.
        for ms in 1..=100 {
            r.observe_latency(Duration::from_millis(ms));
        }
        r.roll(0, 0);
        let v = r.view();
        let (p50, p99) = (v.delivery_p50_ms[1].unwrap(), v.delivery_p99_ms[1].unwrap());
        assert!((p50 - 50.0).abs() <= 50.0 * 0.125, "p50 {p50}");
        assert!((p99 - 99.0).abs() <= 99.0 * 0.125, "p99 {p99}");
    }

    #[test]
    fn roll_up_counts_growth_per_second_and_keeps_fifteen_minutes() {
        let r = Rates::default();
        let g0 = r.generation();
        // The first roll takes the counters as they are: nothing before
        // the ring started is attributed to a second.
        r.observe_latency(Duration::from_millis(3));
        r.roll(500, 7000);
        assert!(r.view().webhooks.is_empty());
        r.roll(510, 7030);
        r.roll(510, 7030);
        assert!(r.generation() > g0);
        let v = r.view();
        assert_eq!(v.interval_secs, 1);
        assert_eq!(v.webhooks, [10, 0]);
        assert_eq!(v.deliveries, [30, 0]);
        // A second without a delivery has no latency, not a zero.
        assert_eq!(v.delivery_p50_ms, [None, None]);
        assert_eq!(v.delivery_p99_ms, [None, None]);
        // Buckets are emptied by the roll: the next second starts clean.
        r.observe_latency(Duration::from_millis(3));
        r.roll(510, 7031);
        r.roll(510, 7031);
        let v = r.view();
        assert!(v.delivery_p50_ms[2].is_some());
        assert_eq!(v.delivery_p50_ms[3], None);
        // Oldest first, at most WINDOW_SECS slots.
        for i in 0..WINDOW_SECS as u64 {
            r.roll(1000 + i * 2, 7031);
        }
        let v = r.view();
        assert_eq!(v.webhooks.len(), WINDOW_SECS);
        assert_eq!(v.deliveries.len(), WINDOW_SECS);
        assert_eq!(v.delivery_p99_ms.len(), WINDOW_SECS);
        assert_eq!(*v.webhooks.last().unwrap(), 2);
        let json = serde_json::to_value(&v).unwrap();
        for key in [
            "intervalSecs",
            "webhooks",
            "deliveries",
            "deliveryP50Ms",
            "deliveryP99Ms",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }
}
