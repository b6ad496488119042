//! Reading `text/event-stream` responses (the console's stream) as they
//! arrive: `data:` messages as JSON, `:` comments, the end of the stream.
#![allow(dead_code)]

use std::time::Duration;

use callbridge::client::{ClientError, Https, Streaming};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A message's `data:` as JSON.
    Data(Value),
    /// A comment line, without its `:`.
    Comment(String),
}

pub struct Sse {
    pub resp: Streaming,
    buf: String,
    /// The connection lives as long as the stream is read.
    _conn: Https,
}

impl Sse {
    /// GET `path` on a fresh connection; `Err` carries the status and body
    /// of an answer that is not 200.
    pub async fn open(
        base: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
        path: &str,
        auth: Option<&str>,
    ) -> Result<Sse, (u16, String)> {
        let mut conn = Https::connect(base, tls).await.expect("connect");
        let mut headers = vec![("accept", "text/event-stream")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let mut resp = conn
            .request_streaming("GET", path, &headers, "")
            .await
            .expect("request");
        if resp.status != 200 {
            let mut body = Vec::new();
            while let Ok(Some(c)) = resp.chunk().await {
                body.extend_from_slice(&c);
            }
            return Err((resp.status, String::from_utf8_lossy(&body).into_owned()));
        }
        Ok(Sse {
            resp,
            buf: String::new(),
            _conn: conn,
        })
    }

    /// The next message or comment; `Ok(None)` when the stream ended,
    /// `Err(())` when nothing came within `wait`.
    pub async fn next_item(&mut self, wait: Duration) -> Result<Option<Item>, ()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(item) = self.take_item() {
                return Ok(Some(item));
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .map_err(|_| ())?;
            match chunk {
                Ok(Some(c)) => self.buf.push_str(std::str::from_utf8(&c).expect("UTF-8")),
                Ok(None) | Err(ClientError::Http(_)) => return Ok(None),
                Err(e) => panic!("stream: {e}"),
            }
        }
    }

    /// One complete block (up to a blank line) from the buffer, parsed.
    fn take_item(&mut self) -> Option<Item> {
        let end = self.buf.find("\n\n")?;
        let block: String = self.buf.drain(..end + 2).collect();
        let mut data = String::new();
        let mut comment = None;
        for line in block.lines() {
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if let Some(c) = line.strip_prefix(':') {
                comment = Some(c.trim().to_string());
            }
        }
        if !data.is_empty() {
            Some(Item::Data(
                serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("data is JSON ({e}): {data}")),
            ))
        } else {
            comment.map(Item::Comment)
        }
    }

    /// The next `data:` message (comments skipped); panics after `wait`
    /// or at the end of the stream.
    pub async fn next_data(&mut self, wait: Duration) -> Value {
        loop {
            match self.next_item(wait).await {
                Ok(Some(Item::Data(v))) => return v,
                Ok(Some(Item::Comment(_))) => continue,
                Ok(None) => panic!("the stream ended"),
                Err(()) => panic!("no message within {wait:?}"),
            }
        }
    }
}

/// The console's state as a page holds it: the first message, then each
/// later one's keys replacing the held ones.
#[derive(Default)]
pub struct ConsoleState {
    pub keys: Map<String, Value>,
}

impl ConsoleState {
    pub fn apply(&mut self, msg: &Value) {
        for (k, v) in msg.as_object().expect("a message is a JSON object") {
            self.keys.insert(k.clone(), v.clone());
        }
    }

    pub fn get(&self, key: &str) -> &Value {
        self.keys.get(key).unwrap_or(&Value::Null)
    }

    /// Read messages into the state until `pred` holds (panics after `wait`).
    pub async fn until(
        &mut self,
        sse: &mut Sse,
        wait: Duration,
        what: &str,
        pred: impl Fn(&ConsoleState) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        while !pred(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match sse.next_item(left).await {
                Ok(Some(Item::Data(v))) => self.apply(&v),
                Ok(Some(Item::Comment(_))) => {}
                Ok(None) => panic!("the stream ended while waiting for: {what}"),
                Err(()) => panic!(
                    "timed out waiting for: {what}; state: {}",
                    Value::Object(self.keys.clone())
                ),
            }
        }
    }
}
