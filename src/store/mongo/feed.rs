//! Several instances on one database: each follows, with change streams,
//! what the others insert into `eventBodies` (stored call events, one
//! document per event with every recipient's `seq`) and `control`
//! (admin actions), and publishes its own admin actions to `control`.
//! Every document carries its writer's `origin`, so an instance skips its own.

use std::time::Duration;

use futures_util::StreamExt;
use mongodb::bson::{doc, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::Collection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::docs::{control_from_doc, control_to_doc, events_from_body_doc};
use super::MongoStore;
use crate::clock::now_ms;
use crate::domain::Control;
use crate::store::{FeedItem, StoreResult};

/// Items between the watchers and the hub. The hub side never blocks
/// (it `try_send`s to sessions), so this fills only if the process is
/// starved; then the watcher waits.
const FEED_QUEUE: usize = 4096;
/// Retry delays for a stream that cannot be opened: 100 ms doubling to 5 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq)]
enum Watched {
    Events,
    Control,
}

/// One collection's watcher: where it is, and where its items go.
struct Watcher {
    coll: Collection<Document>,
    me: String,
    tx: mpsc::Sender<FeedItem>,
    shutdown: CancellationToken,
    what: Watched,
    token: Option<ResumeToken>,
    backoff: Duration,
}

/// The watcher stops: shutdown, or nobody reads the feed any more.
struct Stop;

impl MongoStore {
    pub(super) async fn publish(&self, control: &Control) -> StoreResult<()> {
        let d = control_to_doc(control, &self.instance, now_ms());
        self.coll("control").insert_one(d).await?;
        Ok(())
    }

    pub(super) fn start_feed(&self, shutdown: CancellationToken) -> mpsc::Receiver<FeedItem> {
        let (tx, rx) = mpsc::channel(FEED_QUEUE);
        for (name, what) in [
            ("eventBodies", Watched::Events),
            ("control", Watched::Control),
        ] {
            let w = Watcher {
                coll: self.coll(name),
                me: self.instance.clone(),
                tx: tx.clone(),
                shutdown: shutdown.clone(),
                what,
                token: None,
                backoff: FIRST_BACKOFF,
            };
            tokio::spawn(w.run());
        }
        rx
    }
}

impl Watcher {
    /// Follow inserts by other instances, resuming from the last resume
    /// token after an error; when that is impossible, start afresh and ask
    /// every session to catch up from the store (`Resync`).
    async fn run(mut self) {
        loop {
            let Ok(stream) = self.open().await else {
                return;
            };
            if self.follow(stream).await.is_err() {
                return;
            }
        }
    }

    async fn send(&self, item: FeedItem) -> Result<(), Stop> {
        self.tx.send(item).await.map_err(|_| Stop)
    }

    async fn open(&mut self) -> Result<ChangeStream<ChangeStreamEvent<Document>>, Stop> {
        loop {
            let pipeline = vec![doc! {"$match": {
                "operationType": "insert",
                "fullDocument.origin": {"$ne": &self.me},
            }}];
            let opened = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop),
                r = self.coll.watch().pipeline(pipeline).resume_after(self.token.clone()) => r,
            };
            match opened {
                Ok(stream) => return self.opened(stream).await,
                Err(e) => self.open_failed(e).await?,
            }
        }
    }

    async fn opened(
        &mut self,
        stream: ChangeStream<ChangeStreamEvent<Document>>,
    ) -> Result<ChangeStream<ChangeStreamEvent<Document>>, Stop> {
        if self.token.is_none() && self.what == Watched::Events {
            // Opened without a position: whatever was stored before now is
            // fetched by the sessions themselves.
            self.send(FeedItem::Resync).await?;
        }
        self.backoff = FIRST_BACKOFF;
        tracing::debug!(collection = self.coll.name(), "change stream open");
        Ok(stream)
    }

    async fn open_failed(&mut self, e: mongodb::error::Error) -> Result<(), Stop> {
        if self.token.is_some() {
            // The token may be past the oplog window: start afresh and have
            // sessions catch up from the store.
            tracing::warn!(error = %e, "change stream cannot resume; starting afresh with a resync");
            self.token = None;
            if self.what == Watched::Events {
                self.send(FeedItem::Resync).await?;
            }
        } else {
            tracing::warn!(error = %e, "change stream unavailable; retrying");
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Stop),
            _ = tokio::time::sleep(self.backoff) => {}
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    /// Forward changes until the stream ends or errors (then the caller
    /// reopens it from the last token).
    async fn follow(
        &mut self,
        mut stream: ChangeStream<ChangeStreamEvent<Document>>,
    ) -> Result<(), Stop> {
        loop {
            let next = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stop),
                n = stream.next() => n,
            };
            let change = match next {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "change stream error; resuming");
                    return Ok(());
                }
                None => return Ok(()),
            };
            tracing::debug!(collection = self.coll.name(), "change received");
            self.token = Some(change.id.clone());
            if let Some(item) = change.full_document.as_ref().and_then(|d| self.item(d)) {
                self.send(item).await?;
            }
        }
    }

    fn item(&self, doc: &Document) -> Option<FeedItem> {
        match self.what {
            Watched::Events => match events_from_body_doc(doc) {
                Ok(events) => Some(FeedItem::Events(events)),
                Err(e) => {
                    tracing::error!(error = %e, "events change skipped");
                    None
                }
            },
            Watched::Control => {
                let c = control_from_doc(doc);
                if c.is_none() {
                    tracing::error!("control change of an unknown shape skipped");
                }
                c.map(FeedItem::Control)
            }
        }
    }
}
