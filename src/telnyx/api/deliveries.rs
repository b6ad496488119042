//! `GET /webhook_deliveries`: Telnyx's log of webhook deliveries and their
//! outcome (contract §13 reads the failed ones). The answer is read
//! leniently: a delivery whose `webhook` is missing or malformed is kept
//! as `None` (and skipped by the caller), not a reason to refuse the page.

use serde::Deserialize;
use serde_json::Value;
use warp::http::Method;

use super::{encode, Client, OnRateLimit, TelnyxError};
use crate::telnyx::{Envelope, EventData};

/// A 429 while reading the log is waited out this many times in a row.
const RATE_LIMIT_WAITS: u32 = 5;

/// One page of the log.
#[derive(Debug, Deserialize)]
pub struct DeliveriesPage {
    #[serde(default)]
    pub data: Vec<Delivery>,
    #[serde(default)]
    pub meta: PageMeta,
}

/// `meta` of a page (`DefaultFlatPagination` in the official SDKs).
#[derive(Debug, Default, Deserialize)]
pub struct PageMeta {
    #[serde(default)]
    pub page_number: Option<u32>,
    #[serde(default)]
    pub page_size: Option<u32>,
    #[serde(default)]
    pub total_pages: Option<u32>,
    #[serde(default)]
    pub total_results: Option<u64>,
}

/// A delivery, with what callbridge needs of it (attempts are not read).
#[derive(Debug, Deserialize)]
pub struct Delivery {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// ISO 8601; when the last attempt's answer (or failure) came.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// The original event: `id`, `event_type`, `occurred_at`, `payload`.
    #[serde(default)]
    pub webhook: Option<Value>,
}

impl Delivery {
    /// The delivery's event as a webhook's envelope, when it is one.
    pub fn envelope(&self) -> Option<Envelope> {
        let data: EventData = serde_json::from_value(self.webhook.clone()?).ok()?;
        let env = Envelope { data, meta: None };
        env.check().ok().map(|_| env)
    }
}

/// Which failed deliveries to list.
#[derive(Debug, Clone)]
pub struct FailedSince<'a> {
    /// `filter[finished_at][gte]`, RFC 3339.
    pub finished_gte: &'a str,
    /// 1-based.
    pub page_number: u32,
    pub page_size: u32,
}

impl FailedSince<'_> {
    fn path(&self) -> String {
        let pairs = [
            ("filter[status][eq]", "failed".to_string()),
            ("filter[finished_at][gte]", self.finished_gte.to_string()),
            ("page[number]", self.page_number.to_string()),
            ("page[size]", self.page_size.to_string()),
        ];
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        format!("/webhook_deliveries?{}", query.join("&"))
    }
}

impl Client {
    /// One page of failed deliveries; a 429 waits for `Retry-After`.
    pub async fn failed_deliveries(
        &self,
        q: &FailedSince<'_>,
    ) -> Result<DeliveriesPage, TelnyxError> {
        self.send(
            Method::GET,
            &q.path(),
            None,
            OnRateLimit::Wait(RATE_LIMIT_WAITS),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_uses_the_apis_names() {
        let q = FailedSince {
            finished_gte: "2026-12-07T09:50:00.000Z",
            page_number: 2,
            page_size: 100,
        };
        assert_eq!(
            q.path(),
            "/webhook_deliveries?filter%5Bstatus%5D%5Beq%5D=failed\
             &filter%5Bfinished_at%5D%5Bgte%5D=2026-12-07T09%3A50%3A00.000Z\
             &page%5Bnumber%5D=2&page%5Bsize%5D=100"
        );
    }

    #[test]
    fn a_page_is_read_leniently() {
        let page: DeliveriesPage = serde_json::from_str(
            r#"{"data":[
                {"id":"d1","status":"failed","finished_at":"2026-12-07T10:00:00Z",
                 "attempts":[{"status":"failed"}],
                 "webhook":{"id":"e1","record_type":"event","event_type":"call.hangup",
                            "occurred_at":"2026-12-07T09:59:00Z","payload":{"call_control_id":"v3:1"}}},
                {"id":"d2","status":"failed","webhook":{"event_type":"call.answered"}},
                {"id":"d3"}
            ],"meta":{"page_number":1,"page_size":100,"total_pages":1,"total_results":3}}"#,
        )
        .unwrap();
        assert_eq!(page.data.len(), 3);
        assert_eq!(page.meta.total_pages, Some(1));
        let env = page.data[0].envelope().unwrap();
        assert_eq!(env.data.id, "e1");
        assert!(page.data[1].envelope().is_none(), "no id");
        assert!(page.data[2].envelope().is_none(), "no webhook");
    }
}
