//! `GET /webhook_deliveries`: Telnyx's log of webhook deliveries and their
//! outcome (contract §13 reads the failed ones). The answer is read
//! leniently: a delivery whose `webhook` is missing or malformed is kept
//! as `None` (and skipped by the caller), not a reason to refuse the page.

use serde::Deserialize;
use serde_json::value::RawValue;
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
    /// The original event (`id`, `event_type`, `occurred_at`, `payload`),
    /// kept as its JSON text: ~1 KB a delivery, where a parsed tree would
    /// take several times that while a run holds a batch of them.
    #[serde(default)]
    pub webhook: Option<Box<RawValue>>,
}

/// What a run needs of a held webhook before ingesting it.
#[derive(Debug, Deserialize)]
pub struct WebhookHead {
    #[serde(default)]
    pub occurred_at: Option<String>,
    #[serde(default)]
    payload: Option<PayloadHead>,
}

#[derive(Debug, Deserialize)]
struct PayloadHead {
    #[serde(default)]
    call_control_id: Option<serde::de::IgnoredAny>,
}

impl WebhookHead {
    /// A call event names its `call_control_id`.
    pub fn is_call_event(&self) -> bool {
        self.payload
            .as_ref()
            .is_some_and(|p| p.call_control_id.is_some())
    }
}

impl Delivery {
    /// The few fields of the webhook a run sorts and filters by.
    pub fn head(&self) -> Option<WebhookHead> {
        serde_json::from_str(self.webhook.as_ref()?.get()).ok()
    }
}

/// A held webhook's text as an envelope, when it is one.
pub fn envelope(webhook: &RawValue) -> Option<Envelope> {
    let data: EventData = serde_json::from_str(webhook.get()).ok()?;
    let env = Envelope { data, meta: None };
    env.check().ok().map(|_| env)
}

/// Which failed deliveries to list.
#[derive(Debug, Clone)]
pub struct FailedSince<'a> {
    /// `filter[finished_at][gte]`, RFC 3339.
    pub finished_gte: &'a str,
    /// `filter[finished_at][lte]`, RFC 3339: only to read a large backlog
    /// window by window.
    pub finished_lte: Option<&'a str>,
    /// 1-based.
    pub page_number: u32,
    pub page_size: u32,
}

impl FailedSince<'_> {
    fn path(&self) -> String {
        let mut pairs = vec![
            ("filter[status][eq]", "failed".to_string()),
            ("filter[finished_at][gte]", self.finished_gte.to_string()),
        ];
        if let Some(lte) = self.finished_lte {
            pairs.push(("filter[finished_at][lte]", lte.to_string()));
        }
        pairs.push(("page[number]", self.page_number.to_string()));
        pairs.push(("page[size]", self.page_size.to_string()));
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
            finished_lte: None,
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
        let first = page.data[0].webhook.as_deref().unwrap();
        assert_eq!(envelope(first).unwrap().data.id, "e1");
        let head = page.data[0].head().unwrap();
        assert!(head.is_call_event());
        assert_eq!(head.occurred_at.as_deref(), Some("2026-12-07T09:59:00Z"));
        assert!(
            envelope(page.data[1].webhook.as_deref().unwrap()).is_none(),
            "no id"
        );
        assert!(!page.data[1].head().unwrap().is_call_event());
        assert!(page.data[2].head().is_none(), "no webhook");
    }
}
