//! The hub: which sessions are open for which user, and fan-out to them.
//!
//! Each session owns a bounded queue. Fan-out never waits on a socket: it
//! `try_send`s, and a session whose queue is full is closed with 4013 (slow
//! consumer) — its events stay in history, so it resumes with `since`. One
//! slow laptop therefore never delays the webhook answer or other users.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::domain::{Control, EventBody, StoredEvent};
use crate::protocol::close;
use crate::protocol::EventFrame;
use crate::store::FeedItem;

/// Frames a session may have queued before it counts as a slow consumer.
/// A dialer sees a handful of events per call; 1024 covers a burst of
/// hundreds of calls while bounding memory to ~1024 × (frame ≈ 1–2 KB) per
/// connection, and the frames are shared (reference-counted `Utf8Bytes`)
/// across a user's sessions: no copy per session.
pub const SESSION_QUEUE: usize = 1024;

/// What the hub hands a session. One pointer wide (16 bytes with the
/// tag): every session's queue allocates its first block of 32 slots when
/// it is created, so the slot size is paid by every idle connection —
/// 32 × 56 bytes with the fields inline, 32 × 16 this way (~1.3 KiB less
/// per connection). The pointed-to values are shared: one per user and
/// event, or one per message, whatever the number of sessions.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A stored call event; `seq` lets the session keep order and fill gaps.
    Event(Arc<LiveEvent>),
    /// A message without `seq` (custom broadcast, status-changed).
    Message(Arc<Utf8Bytes>),
    /// Catch up from the store: the multi-instance feed lost its place.
    Resync,
}

/// A stored event as one user's sessions get it live.
#[derive(Debug)]
pub struct LiveEvent {
    pub seq: u64,
    /// The user's frame: the shared body around this user's `seq`.
    pub frame: Utf8Bytes,
    /// When its webhook arrived (delivery latency); `None` from the feed.
    pub received: Option<Instant>,
}

/// A request to close one session, shared by the hub and the session task.
#[derive(Debug, Default)]
pub struct CloseSignal {
    code: AtomicU16,
    notify: Notify,
    reason: Mutex<String>,
}

impl CloseSignal {
    /// Ask the session to close. The first code wins.
    pub fn close(&self, code: u16, reason: &str) {
        if self
            .code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_string();
            self.notify.notify_one();
        }
    }

    /// Resolves once `close` was called; yields code and reason.
    pub async fn wait(&self) -> (u16, String) {
        loop {
            let notified = self.notify.notified();
            let code = self.code.load(Ordering::SeqCst);
            if code != 0 {
                let reason = self
                    .reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                return (code, reason);
            }
            notified.await;
        }
    }
}

struct Entry {
    conn_id: String,
    tx: mpsc::Sender<Outbound>,
    close: Arc<CloseSignal>,
}

#[derive(Default)]
pub struct Hub {
    users: RwLock<HashMap<String, Vec<Entry>>>,
    total: AtomicU64,
}

/// Too many connections for this user already (close 4008).
#[derive(Debug, thiserror::Error)]
#[error("too many connections for this user")]
pub struct TooManyConnections;

/// Removes the session from the hub when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    user: String,
    conn_id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(&self.user, &self.conn_id);
    }
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Hub::default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<Entry>>> {
        self.users.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<Entry>>> {
        self.users.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        self: &Arc<Self>,
        user: &str,
        conn_id: &str,
        tx: mpsc::Sender<Outbound>,
        close: Arc<CloseSignal>,
        max_per_user: usize,
    ) -> Result<Registration, TooManyConnections> {
        let mut users = self.write();
        let list = users.entry(user.to_string()).or_default();
        if list.len() >= max_per_user {
            return Err(TooManyConnections);
        }
        list.push(Entry {
            conn_id: conn_id.to_string(),
            tx,
            close,
        });
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Registration {
            hub: self.clone(),
            user: user.to_string(),
            conn_id: conn_id.to_string(),
        })
    }

    fn unregister(&self, user: &str, conn_id: &str) {
        let mut users = self.write();
        if let Some(list) = users.get_mut(user) {
            let before = list.len();
            list.retain(|e| e.conn_id != conn_id);
            if list.len() < before {
                self.total.fetch_sub(1, Ordering::Relaxed);
            }
            if list.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Queue stored events to their users' sessions. Returns how many
    /// (event, session) pairs were queued.
    pub fn deliver(&self, events: &[StoredEvent], received: Option<Instant>) -> usize {
        let users = self.read();
        let mut queued = 0;
        // The events of one ingest share one body: its frame around `seq`
        // is built once, not once per user.
        let mut template: Option<(&Arc<EventBody>, EventFrame)> = None;
        for ev in events {
            let Some(list) = users.get(&ev.user_id) else {
                continue;
            };
            if !template
                .as_ref()
                .is_some_and(|(b, _)| Arc::ptr_eq(b, &ev.body))
            {
                template = Some((&ev.body, EventFrame::new(&ev.body)));
            }
            let (_, t) = template.as_ref().expect("set just above");
            let frame = t.with_seq(ev.seq);
            // One frame per user; the user's sessions share it.
            let live = Arc::new(LiveEvent {
                seq: ev.seq,
                frame: Utf8Bytes::from(frame),
                received,
            });
            for e in list {
                queued += push(e, Outbound::Event(live.clone())) as usize;
            }
        }
        queued
    }

    /// Queue a message without `seq` to every session of `user` except `except`.
    pub fn send_to_user(&self, user: &str, frame: Utf8Bytes, except: Option<&str>) -> usize {
        let frame = Arc::new(frame);
        let users = self.read();
        let Some(list) = users.get(user) else {
            return 0;
        };
        list.iter()
            .filter(|e| Some(e.conn_id.as_str()) != except)
            .map(|e| push(e, Outbound::Message(frame.clone())) as usize)
            .sum()
    }

    /// Queue a message to one connection of `user` (the answer to its own
    /// request); false when it is gone.
    pub fn send_to_conn(&self, user: &str, conn_id: &str, frame: Utf8Bytes) -> bool {
        let users = self.read();
        users
            .get(user)
            .and_then(|list| list.iter().find(|e| e.conn_id == conn_id))
            .is_some_and(|e| push(e, Outbound::Message(Arc::new(frame))))
    }

    /// Queue a message to the sessions of `users`, or of everyone when
    /// `None`, but the connection `except`.
    pub fn broadcast(
        &self,
        users: Option<&[String]>,
        frame: Utf8Bytes,
        except: Option<&str>,
    ) -> usize {
        let frame = Arc::new(frame);
        let map = self.read();
        let send_list = |list: &Vec<Entry>| -> usize {
            list.iter()
                .filter(|e| Some(e.conn_id.as_str()) != except)
                .map(|e| push(e, Outbound::Message(frame.clone())) as usize)
                .sum()
        };
        match users {
            None => map.values().map(send_list).sum(),
            Some(ids) => {
                let mut ids: Vec<&String> = ids.iter().collect();
                ids.sort();
                ids.dedup();
                ids.into_iter()
                    .filter_map(|u| map.get(u))
                    .map(send_list)
                    .sum()
            }
        }
    }

    /// Ask every session to catch up from the store.
    pub fn resync_all(&self) -> usize {
        self.read()
            .values()
            .flatten()
            .map(|e| push(e, Outbound::Resync) as usize)
            .sum()
    }

    /// Ask the sessions of `users` to catch up from the store.
    pub fn resync_users(&self, users: &[String]) -> usize {
        let map = self.read();
        users
            .iter()
            .filter_map(|u| map.get(u))
            .flatten()
            .map(|e| push(e, Outbound::Resync) as usize)
            .sum()
    }

    /// Apply what another instance stored or asked for.
    pub fn apply_feed(&self, item: FeedItem) {
        match item {
            FeedItem::Events(events) => {
                self.deliver(&events, None);
            }
            FeedItem::Control(control) => {
                self.apply_control(&control);
            }
            FeedItem::Resync => {
                self.resync_all();
            }
        }
    }

    /// Apply an admin action to this instance's sessions, whether it came
    /// from this instance's admin API or from another's. Returns how many
    /// sessions it reached (closed, or queued the message).
    pub fn apply_control(&self, control: &Control) -> usize {
        match control {
            Control::CloseUser { user, code, reason } => self.close_user(user, *code, reason),
            Control::Broadcast {
                users,
                frame,
                except_conn,
            } => self.broadcast(
                users.as_deref(),
                Utf8Bytes::from(frame.clone()),
                except_conn.as_deref(),
            ),
        }
    }

    /// Close every session of `user` (revocation, deletion).
    pub fn close_user(&self, user: &str, code: u16, reason: &str) -> usize {
        let users = self.read();
        users.get(user).map_or(0, |list| {
            list.iter().for_each(|e| e.close.close(code, reason));
            list.len()
        })
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn per_user(&self) -> HashMap<String, usize> {
        self.read()
            .iter()
            .map(|(u, l)| (u.clone(), l.len()))
            .collect()
    }
}

/// Queue without waiting; a full queue marks the session a slow consumer.
fn push(e: &Entry, out: Outbound) -> bool {
    match e.tx.try_send(out) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            e.close
                .close(close::SLOW_CONSUMER, "slow consumer: reconnect with since");
            false
        }
        // The session is on its way out; its registration drops soon.
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ev(user: &str, seq: u64) -> StoredEvent {
        StoredEvent {
            user_id: user.into(),
            seq,
            body: Arc::new(crate::domain::EventBody::new(
                format!("e{seq}"),
                "call-initiated".into(),
                "2026-11-22T10:15:30Z".into(),
                &Value::Null,
            )),
        }
    }

    #[tokio::test]
    async fn full_queue_closes_with_4013_and_others_keep_receiving() {
        let hub = Hub::new();
        let (slow_tx, _slow_rx) = mpsc::channel(2);
        let slow_close = Arc::new(CloseSignal::default());
        let _r1 = hub
            .register("slow", "c1", slow_tx, slow_close.clone(), 5)
            .unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let _r2 = hub
            .register("fast", "c2", tx, Arc::new(CloseSignal::default()), 5)
            .unwrap();
        for seq in 1..=3 {
            hub.deliver(&[ev("slow", seq), ev("fast", seq)], None);
        }
        assert_eq!(slow_close.wait().await.0, close::SLOW_CONSUMER);
        for want in 1..=3 {
            match rx.recv().await.unwrap() {
                Outbound::Event(live) => assert_eq!(live.seq, want),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn resync_users_reaches_only_their_sessions() {
        let hub = Hub::new();
        let (tx1, mut rx1) = mpsc::channel(4);
        let _a = hub
            .register("u1", "a", tx1, Arc::new(CloseSignal::default()), 5)
            .unwrap();
        let (tx2, mut rx2) = mpsc::channel(4);
        let _b = hub
            .register("u2", "b", tx2, Arc::new(CloseSignal::default()), 5)
            .unwrap();
        assert_eq!(hub.resync_users(&["u1".into(), "gone".into()]), 1);
        assert!(matches!(rx1.recv().await, Some(Outbound::Resync)));
        assert!(rx2.try_recv().is_err(), "u2 was not asked");
    }

    #[test]
    fn a_queue_slot_is_two_words() {
        assert_eq!(std::mem::size_of::<Outbound>(), 16);
    }

    #[tokio::test]
    async fn registration_limit_and_cleanup() {
        let hub = Hub::new();
        let mk = || mpsc::channel::<Outbound>(1).0;
        let a = hub
            .register("u", "a", mk(), Arc::new(CloseSignal::default()), 2)
            .unwrap();
        let _b = hub
            .register("u", "b", mk(), Arc::new(CloseSignal::default()), 2)
            .unwrap();
        assert!(hub
            .register("u", "c", mk(), Arc::new(CloseSignal::default()), 2)
            .is_err());
        assert_eq!(hub.total(), 2);
        drop(a);
        assert_eq!(hub.total(), 1);
        assert_eq!(hub.per_user().get("u"), Some(&1));
    }

    #[tokio::test]
    async fn apply_control_closes_and_broadcasts() {
        let hub = Hub::new();
        let (tx1, mut rx1) = mpsc::channel(4);
        let close1 = Arc::new(CloseSignal::default());
        let _a = hub.register("u1", "a", tx1, close1.clone(), 5).unwrap();
        let (tx2, mut rx2) = mpsc::channel(4);
        let _b = hub
            .register("u2", "b", tx2, Arc::new(CloseSignal::default()), 5)
            .unwrap();

        let to_u2 = Control::Broadcast {
            users: Some(vec!["u2".into(), "u2".into(), "nobody".into()]),
            frame: "hello".into(),
            except_conn: None,
        };
        assert_eq!(hub.apply_control(&to_u2), 1, "u2 once, despite the repeat");
        match rx2.recv().await.unwrap() {
            Outbound::Message(f) => assert_eq!(f.as_str(), "hello"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(rx1.try_recv().is_err(), "u1 was not addressed");

        let everyone = Control::Broadcast {
            users: None,
            frame: "all".into(),
            except_conn: Some("b".into()),
        };
        assert_eq!(hub.apply_control(&everyone), 1, "everyone but connection b");

        let close = Control::CloseUser {
            user: "u1".into(),
            code: close::REVOKED,
            reason: "tokens revoked".into(),
        };
        assert_eq!(hub.apply_control(&close), 1);
        assert_eq!(
            close1.wait().await,
            (close::REVOKED, "tokens revoked".into())
        );
        // The same control arriving on the feed does the same.
        hub.apply_feed(FeedItem::Control(Control::CloseUser {
            user: "u2".into(),
            code: close::REVOKED,
            reason: "user deleted".into(),
        }));
    }
}
