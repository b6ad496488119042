//! One conformance suite for the `Store` trait, run against the embedded
//! store and against MongoDB (a real MongoDB-wire server: SecantusDB, started
//! by `scripts/test.sh`, URI in `CALLBRIDGE_TEST_MONGODB_URI`).
//!
//! In CI the MongoDB half fails when the URI is missing; it never skips there.

use std::sync::Arc;
use std::time::Duration;

use crate::common::mongo_required;
use callbridge::domain::{
    CallInfo, CallState, EventBody, Ingest, IngestOutcome, Role, Status, StoredEvent, Transition,
    User,
};
use callbridge::store::memory::MemoryStore;
use callbridge::store::mongo::MongoStore;
use callbridge::store::Store;
use serde_json::json;

const HISTORY: Duration = Duration::from_secs(24 * 3600);

/// The URI of the MongoDB half; `None`: not run (see `common::mongo`).
fn mongo_uri() -> Option<String> {
    mongo_required("the MongoDB half of the store conformance suite")
}

async fn mongo_store(db: &str) -> MongoStore {
    MongoStore::connect(
        &mongo_uri().unwrap(),
        db,
        HISTORY,
        Duration::from_secs(5),
        true,
    )
    .await
    .expect("MongoDB reachable")
}

fn fresh_db() -> String {
    format!("conf{}", uuid::Uuid::new_v4().simple())
}

/// Run `body` against both backends.
macro_rules! conformance {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let store: Arc<dyn Store> = Arc::new(MemoryStore::new(HISTORY));
                ($body)(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mongodb() {
                if mongo_uri().is_none() {
                    return;
                }
                let store: Arc<dyn Store> = Arc::new(mongo_store(&fresh_db()).await);
                ($body)(store).await;
            }
        }
    };
}

fn user(id: &str, role: Role, phones: &[&str], conns: &[&str]) -> User {
    User {
        id: id.into(),
        email: Some(format!("{id}@example.com")),
        name: None,
        role,
        phone_numbers: phones.iter().map(|s| s.to_string()).collect(),
        connection_ids: conns.iter().map(|s| s.to_string()).collect(),
        disabled: false,
        tokens_revoked_at: None,
    }
}

fn ingest(id: &str, targets: &[&str], control: &str, t: Transition, ms: i64) -> Ingest {
    named(id, "call-x", targets, control, t, ms)
}

/// An ingest whose event has the name `event` (the timeline shows it).
fn named(id: &str, event: &str, targets: &[&str], control: &str, t: Transition, ms: i64) -> Ingest {
    Ingest {
        body: Arc::new(EventBody::new(
            id.into(),
            event.into(),
            callbridge::clock::rfc3339_ms(ms),
            &json!({"n": id, "big": 12345678901234i64, "nested": {"a": [1, 2.5, null]}}),
        )),
        occurred_ms: ms,
        targets: targets.iter().map(|s| s.to_string()).collect(),
        call: CallInfo {
            call_control_id: Some(control.into()),
            call_session_id: Some(format!("s-{control}")),
            direction: Some("inbound".into()),
            from: Some("+15550001111".into()),
            to: Some("+15550002222".into()),
            start_time: None,
        },
        transition: t,
    }
}

fn stored(o: IngestOutcome) -> Vec<StoredEvent> {
    match o {
        IngestOutcome::Stored(v) => v,
        IngestOutcome::Duplicate => panic!("unexpected duplicate"),
    }
}

conformance!(users_and_lookups, |s: Arc<dyn Store>| async move {
    s.upsert_user(user("a", Role::Agent, &["+15550000001"], &["c1"]))
        .await
        .unwrap();
    s.upsert_user(user("b", Role::Supervisor, &["+15550000001"], &[]))
        .await
        .unwrap();
    s.upsert_user(user("c", Role::Admin, &[], &["c1", "c2"]))
        .await
        .unwrap();
    assert_eq!(
        s.get_user("a").await.unwrap().unwrap().email.as_deref(),
        Some("a@example.com")
    );
    assert!(s.get_user("zz").await.unwrap().is_none());
    assert_eq!(
        s.users_by_phone("+15550000001").await.unwrap(),
        vec!["a", "b"]
    );
    assert_eq!(s.users_by_connection("c1").await.unwrap(), vec!["a", "c"]);
    assert_eq!(
        s.users_by_roles(&[Role::Supervisor, Role::Admin])
            .await
            .unwrap(),
        vec!["b", "c"]
    );
    assert_eq!(s.all_user_ids().await.unwrap(), vec!["a", "b", "c"]);
    // Replace, not merge.
    s.upsert_user(user("a", Role::Agent, &[], &[]))
        .await
        .unwrap();
    assert_eq!(s.users_by_phone("+15550000001").await.unwrap(), vec!["b"]);
    // Revocation only moves forward.
    assert!(s.revoke_tokens("a", 1000).await.unwrap());
    assert!(s.revoke_tokens("a", 500).await.unwrap());
    assert_eq!(
        s.get_user("a").await.unwrap().unwrap().tokens_revoked_at,
        Some(1000)
    );
    assert!(!s.revoke_tokens("zz", 1).await.unwrap());
    assert!(s.delete_user("c").await.unwrap());
    assert!(!s.delete_user("c").await.unwrap());
    assert!(s.get_user("c").await.unwrap().is_none());
});

conformance!(seq_dedupe_and_history, |s: Arc<dyn Store>| async move {
    s.upsert_user(user("u1", Role::Agent, &[], &[]))
        .await
        .unwrap();
    s.upsert_user(user("u2", Role::Agent, &[], &[]))
        .await
        .unwrap();
    let e1 = stored(
        s.ingest(ingest(
            "e1",
            &["u1", "u2"],
            "cc1",
            Transition::Initiated,
            1000,
        ))
        .await
        .unwrap(),
    );
    assert_eq!(
        e1.iter()
            .map(|e| (e.user_id.as_str(), e.seq))
            .collect::<Vec<_>>(),
        vec![("u1", 1), ("u2", 1)]
    );
    let e2 = stored(
        s.ingest(ingest("e2", &["u1"], "cc1", Transition::Answered, 2000))
            .await
            .unwrap(),
    );
    assert_eq!(e2[0].seq, 2);
    assert_eq!(
        s.ingest(ingest("e1", &["u1"], "cc1", Transition::Initiated, 1000))
            .await
            .unwrap(),
        IngestOutcome::Duplicate
    );
    assert_eq!(s.last_seq("u1").await.unwrap(), 2);
    assert_eq!(s.last_seq("u2").await.unwrap(), 1);
    assert_eq!(s.last_seq("nobody").await.unwrap(), 0);

    let page = s.events_since("u1", 0, 100).await.unwrap();
    assert!(!page.gap);
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Data round-trips exactly.
    assert_eq!(page.events[0].body.data_json, e1[0].body.data_json);
    assert_eq!(page.events[0].body.data(), e1[0].body.data());
    assert_eq!(page.events[0].body.id, "e1");
    assert_eq!(page.events[0].body.ts, callbridge::clock::rfc3339_ms(1000));
    let page = s.events_since("u1", 1, 100).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2]
    );
    let page = s.events_since("u1", 2, 100).await.unwrap();
    assert!(page.events.is_empty() && !page.gap);
    let page = s.events_since("u1", 0, 1).await.unwrap();
    assert_eq!(page.events.len(), 1);
    // Targetless events (drop policy) store a receipt only.
    assert!(stored(
        s.ingest(ingest("e3", &[], "cc9", Transition::None, 3000))
            .await
            .unwrap()
    )
    .is_empty());
    assert_eq!(
        s.ingest(ingest("e3", &[], "cc9", Transition::None, 3000))
            .await
            .unwrap(),
        IngestOutcome::Duplicate
    );
    // Deleting a user drops their history.
    assert!(s.delete_user("u2").await.unwrap());
    assert!(s.events_since("u2", 0, 10).await.unwrap().events.is_empty());
});

conformance!(concurrent_ingest_allocates_contiguous_seq, |s: Arc<
    dyn Store,
>| async move {
    s.upsert_user(user("u1", Role::Agent, &[], &[]))
        .await
        .unwrap();
    let n = 40;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            stored(
                s.ingest(ingest(
                    &format!("p{i}"),
                    &["u1"],
                    &format!("call{i}"),
                    Transition::None,
                    i,
                ))
                .await
                .unwrap(),
            )
        }));
    }
    let mut seqs: Vec<u64> = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap().iter().map(|e| e.seq));
    }
    seqs.sort();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
    let page = s.events_since("u1", 0, 1000).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=n as u64).collect::<Vec<_>>()
    );
});

conformance!(
    concurrent_duplicates_store_once,
    |s: Arc<dyn Store>| async move {
        s.upsert_user(user("u1", Role::Agent, &[], &[]))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.ingest(ingest("same", &["u1"], "cc", Transition::Initiated, 1))
                    .await
                    .unwrap()
            }));
        }
        let mut stored_count = 0;
        for t in tasks {
            if let IngestOutcome::Stored(v) = t.await.unwrap() {
                stored_count += 1;
                assert_eq!(v[0].seq, 1);
            }
        }
        assert_eq!(stored_count, 1);
        assert_eq!(s.last_seq("u1").await.unwrap(), 1);
    }
);

conformance!(call_state_and_bindings, |s: Arc<dyn Store>| async move {
    s.upsert_user(user("u1", Role::Agent, &[], &[]))
        .await
        .unwrap();
    s.upsert_user(user("u2", Role::Agent, &[], &[]))
        .await
        .unwrap();
    s.ingest(ingest("i", &["u1"], "cc", Transition::Initiated, 1000))
        .await
        .unwrap();
    let keys = vec!["s:s-cc".to_string(), "c:cc".to_string()];
    assert_eq!(
        s.call_binding(&keys).await.unwrap(),
        Some(vec!["u1".to_string()])
    );
    assert_eq!(
        s.call_binding(&["c:cc".to_string()]).await.unwrap(),
        Some(vec!["u1".to_string()])
    );
    assert_eq!(
        s.call_binding(&["c:other".to_string()]).await.unwrap(),
        None
    );
    let v = s.user_view("u1").await.unwrap().unwrap();
    assert_eq!(v.active_calls.len(), 1);
    assert_eq!(v.active_calls[0].state, CallState::Ringing);
    assert_eq!(v.active_calls[0].call_session_id.as_deref(), Some("s-cc"));
    s.ingest(ingest("a", &["u1"], "cc", Transition::Answered, 2000))
        .await
        .unwrap();
    s.ingest(ingest("b", &["u1"], "cc", Transition::Bridged, 3000))
        .await
        .unwrap();
    let v = s.user_view("u1").await.unwrap().unwrap();
    assert_eq!(v.active_calls[0].state, CallState::Bridged);
    assert!(v.active_calls[0].answered_at.is_some());
    assert!(s
        .user_view("u2")
        .await
        .unwrap()
        .unwrap()
        .active_calls
        .is_empty());
    s.ingest(ingest("h", &["u1"], "cc", Transition::Hangup, 5000))
        .await
        .unwrap();
    assert!(s
        .user_view("u1")
        .await
        .unwrap()
        .unwrap()
        .active_calls
        .is_empty());
    // Late and repeated events never revive the call.
    s.ingest(ingest("late", &["u1"], "cc", Transition::Answered, 4000))
        .await
        .unwrap();
    s.ingest(ingest("later", &["u1"], "cc", Transition::Initiated, 6000))
        .await
        .unwrap();
    assert!(s
        .user_view("u1")
        .await
        .unwrap()
        .unwrap()
        .active_calls
        .is_empty());
    // A call routed to other users moves with them.
    s.ingest(ingest("i2", &["u1"], "cc2", Transition::Initiated, 1000))
        .await
        .unwrap();
    s.ingest(ingest("t2", &["u2"], "cc2", Transition::Answered, 2000))
        .await
        .unwrap();
    assert!(s
        .user_view("u1")
        .await
        .unwrap()
        .unwrap()
        .active_calls
        .is_empty());
    assert_eq!(
        s.user_view("u2").await.unwrap().unwrap().active_calls.len(),
        1
    );
});

conformance!(presence_and_status, |s: Arc<dyn Store>| async move {
    s.upsert_user(user("u1", Role::Agent, &[], &[]))
        .await
        .unwrap();
    let v = s.user_view("u1").await.unwrap().unwrap();
    assert!(!v.presence.online);
    assert_eq!(v.status, Status::Available);
    s.connection_opened("u1", "k1").await.unwrap();
    s.connection_opened("u1", "k2").await.unwrap();
    let v = s.user_view("u1").await.unwrap().unwrap();
    assert!(v.presence.online);
    assert_eq!(v.presence.connections, 2);
    s.heartbeat().await.unwrap();
    s.connection_closed("u1", "k1").await.unwrap();
    s.connection_closed("u1", "k2").await.unwrap();
    let v = s.user_view("u1").await.unwrap().unwrap();
    assert!(!v.presence.online);
    assert!(v.presence.last_seen.is_some());
    s.set_status("u1", Status::Away).await.unwrap();
    assert_eq!(
        s.user_view("u1").await.unwrap().unwrap().status,
        Status::Away
    );
    assert!(s.user_view("zz").await.unwrap().is_none());
    s.ping().await.unwrap();
});

conformance!(
    console_users_and_live_calls,
    |s: Arc<dyn Store>| async move {
        let mut ann = user("a", Role::Supervisor, &[], &[]);
        ann.name = Some("Ann".into());
        s.upsert_user(ann).await.unwrap();
        s.upsert_user(user("c", Role::Agent, &[], &[]))
            .await
            .unwrap();
        s.upsert_user(user("b", Role::Agent, &[], &[]))
            .await
            .unwrap();
        assert!(s.active_call_records(10).await.unwrap().is_empty());
        s.connection_opened("a", "k1").await.unwrap();
        s.connection_opened("a", "k2").await.unwrap();
        s.connection_opened("b", "k3").await.unwrap();
        s.set_status("b", Status::Busy).await.unwrap();
        let all = s.list_user_summaries(10).await.unwrap();
        type Row<'a> = (&'a str, Option<&'a str>, Role, bool, u32, Status);
        let rows: Vec<Row> = all
            .iter()
            .map(|u| {
                (
                    u.user.id.as_str(),
                    u.user.name.as_deref(),
                    u.user.role,
                    u.presence.online,
                    u.presence.connections,
                    u.status,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "a",
                    Some("Ann"),
                    Role::Supervisor,
                    true,
                    2,
                    Status::Available
                ),
                ("b", None, Role::Agent, true, 1, Status::Busy),
                ("c", None, Role::Agent, false, 0, Status::Available),
            ]
        );
        let first: Vec<String> = s
            .list_user_summaries(2)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.user.id)
            .collect();
        assert_eq!(first, ["a", "b"]);

        // Three legs: one hung up, two live; newest start first.
        let steps = [
            (
                "1",
                "call-initiated",
                "a",
                "c1",
                Transition::Initiated,
                1000,
            ),
            (
                "2",
                "call-initiated",
                "b",
                "c2",
                Transition::Initiated,
                2000,
            ),
            (
                "3",
                "call-initiated",
                "a",
                "c3",
                Transition::Initiated,
                1500,
            ),
            ("4", "call-answered", "b", "c2", Transition::Answered, 3000),
            ("5", "call-hangup", "a", "c3", Transition::Hangup, 4000),
            // Late: goes on the timeline where it happened.
            ("6", "dtmf-received", "b", "c2", Transition::None, 2500),
        ];
        for (id, event, to, call, t, ms) in steps {
            s.ingest(named(id, event, &[to], call, t, ms))
                .await
                .unwrap();
        }
        let live = s.active_call_records(10).await.unwrap();
        let ids: Vec<&str> = live.iter().map(|c| c.call_control_id.as_str()).collect();
        assert_eq!(ids, ["c2", "c1"]);
        let c2 = &live[0];
        assert_eq!(c2.users, ["b"]);
        assert_eq!(c2.state, Some(CallState::Answered));
        let timeline: Vec<(&str, &str)> = c2
            .timeline
            .iter()
            .map(|e| (e.event.as_str(), e.ts.as_str()))
            .collect();
        let ts = callbridge::clock::rfc3339_ms;
        assert_eq!(
            timeline,
            [
                ("call-initiated", ts(2000).as_str()),
                ("dtmf-received", ts(2500).as_str()),
                ("call-answered", ts(3000).as_str()),
            ]
        );
        assert_eq!(live[1].users, ["a"]);
        assert_eq!(live[1].timeline.len(), 1);
        let newest: Vec<String> = s
            .active_call_records(1)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.call_control_id)
            .collect();
        assert_eq!(newest, ["c2"]);
    }
);

// ---- MongoDB only: what only a persistent store can show.

#[tokio::test]
async fn mongodb_restart_keeps_seq_users_calls_and_history() {
    if mongo_uri().is_none() {
        return;
    }
    let db = fresh_db();
    {
        let s = mongo_store(&db).await;
        s.upsert_user(user("u1", Role::Agent, &["+15550000001"], &[]))
            .await
            .unwrap();
        s.ingest(ingest("r1", &["u1"], "cc", Transition::Initiated, 1000))
            .await
            .unwrap();
        s.ingest(ingest("r2", &["u1"], "cc", Transition::Answered, 2000))
            .await
            .unwrap();
        s.set_status("u1", Status::Busy).await.unwrap();
    }
    let s = mongo_store(&db).await;
    assert_eq!(s.last_seq("u1").await.unwrap(), 2);
    let e = stored(
        s.ingest(ingest("r3", &["u1"], "cc", Transition::Bridged, 3000))
            .await
            .unwrap(),
    );
    assert_eq!(e[0].seq, 3);
    assert_eq!(
        s.ingest(ingest("r1", &["u1"], "cc", Transition::Initiated, 1000))
            .await
            .unwrap(),
        IngestOutcome::Duplicate
    );
    let v = s.user_view("u1").await.unwrap().unwrap();
    assert_eq!(v.status, Status::Busy);
    assert_eq!(v.active_calls[0].state, CallState::Bridged);
    assert_eq!(s.users_by_phone("+15550000001").await.unwrap(), vec!["u1"]);
    let seqs: Vec<u64> = s
        .events_since("u1", 0, 10)
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

#[tokio::test]
async fn mongodb_hand_edited_user_of_wrong_shape_is_skipped_not_fatal() {
    let Some(uri) = mongo_uri() else { return };
    let db = fresh_db();
    let s = mongo_store(&db).await;
    s.upsert_user(user("ok", Role::Agent, &["+15550000009"], &[]))
        .await
        .unwrap();
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let users = client
        .database(&db)
        .collection::<mongodb::bson::Document>("users");
    users
        .insert_one(mongodb::bson::doc! {"_id": "bad", "role": 42, "phoneNumbers": "+15550000009", "disabled": "no"})
        .await
        .unwrap();
    users
        .insert_one(mongodb::bson::doc! {"_id": 7})
        .await
        .unwrap();
    assert!(s.get_user("bad").await.unwrap().is_none());
    assert!(s.user_view("bad").await.unwrap().is_none());
    assert_eq!(s.get_user("ok").await.unwrap().unwrap().id, "ok");
    // Lookups still answer.
    assert!(s
        .users_by_phone("+15550000009")
        .await
        .unwrap()
        .contains(&"ok".to_string()));
}

#[tokio::test]
async fn mongodb_indexes_are_created_idempotently() {
    if mongo_uri().is_none() {
        return;
    }
    let db = fresh_db();
    let s = mongo_store(&db).await;
    s.ensure_indexes().await.unwrap();
    let idx = s.index_names().await.unwrap();
    let events = &idx.iter().find(|(c, _)| c == "events").unwrap().1;
    assert!(events.contains(&"userId_seq".to_string()), "{events:?}");
    assert!(events.contains(&"storedAt_ttl".to_string()), "{events:?}");
    // A different history length replaces the TTL index instead of failing.
    let s2 = MongoStore::connect(
        &mongo_uri().unwrap(),
        &db,
        Duration::from_secs(3600),
        Duration::from_secs(5),
        false,
    )
    .await
    .unwrap();
    s2.ensure_indexes().await.unwrap();
}

#[tokio::test]
async fn mongodb_presence_of_a_crashed_run_is_cleared_at_restart() {
    if mongo_uri().is_none() {
        return;
    }
    let db = fresh_db();
    {
        let mut s = mongo_store(&db).await;
        s.claim_instance("host-a:443").await.unwrap();
        s.upsert_user(user("u1", Role::Agent, &[], &[]))
            .await
            .unwrap();
        s.connection_opened("u1", "k1").await.unwrap();
        assert!(s.user_view("u1").await.unwrap().unwrap().presence.online);
        // Dropped without closing the connection: a crash.
    }
    let mut other = mongo_store(&db).await;
    other.claim_instance("host-b:443").await.unwrap();
    // Another instance does not touch it: it is still within its heartbeat.
    assert!(
        other
            .user_view("u1")
            .await
            .unwrap()
            .unwrap()
            .presence
            .online
    );
    let mut s = mongo_store(&db).await;
    s.claim_instance("host-a:443").await.unwrap();
    let v = s.user_view("u1").await.unwrap().unwrap();
    assert!(!v.presence.online);
    assert_eq!(v.presence.connections, 0);
}

conformance!(
    one_event_for_200_users_takes_each_their_next_seq,
    |s: Arc<dyn Store>| async move {
        let users: Vec<String> = (0..200).map(|i| format!("m{i:03}")).collect();
        for (k, u) in users.iter().enumerate() {
            s.upsert_user(user(u, Role::Agent, &[], &[])).await.unwrap();
            // User k has k % 3 events before the shared one.
            for i in 0..k % 3 {
                let own = ingest(
                    &format!("own-{u}-{i}"),
                    &[u],
                    "c-own",
                    Transition::None,
                    1000,
                );
                stored(s.ingest(own).await.unwrap());
            }
        }
        let targets: Vec<&str> = users.iter().map(String::as_str).collect();
        let shared = stored(
            s.ingest(ingest("shared", &targets, "c-all", Transition::None, 2000))
                .await
                .unwrap(),
        );
        assert_eq!(shared.len(), 200);
        for (k, (ev, u)) in shared.iter().zip(&users).enumerate() {
            assert_eq!(
                (ev.user_id.as_str(), ev.seq),
                (u.as_str(), (k % 3) as u64 + 1)
            );
            let page = s.events_since(u, (k % 3) as u64, 10).await.unwrap();
            assert_eq!(page.events.len(), 1, "{u}");
            assert_eq!(page.events[0].seq, (k % 3) as u64 + 1);
            assert_eq!(page.events[0].body, shared[0].body, "one body for all");
            assert_eq!(s.last_seq(u).await.unwrap(), (k % 3) as u64 + 1);
        }
        // A repeat of the same Telnyx id stores nothing for anyone.
        let again = s
            .ingest(ingest("shared", &targets, "c-all", Transition::None, 2000))
            .await
            .unwrap();
        assert_eq!(again, IngestOutcome::Duplicate);
        assert_eq!(s.last_seq("m001").await.unwrap(), 2);
    }
);

/// Round trips per webhook do not grow with its recipients: the driver's
/// command monitoring counts the same number of commands for an event to
/// one user and for one to 200.
#[tokio::test]
async fn mongodb_commands_per_ingest_do_not_depend_on_recipients() {
    if mongo_uri().is_none() {
        return;
    }
    let s = mongo_store(&fresh_db()).await;
    let users: Vec<String> = (0..200).map(|i| format!("r{i:03}")).collect();
    for u in &users {
        s.upsert_user(user(u, Role::Agent, &[], &[])).await.unwrap();
    }
    let counter = s.command_counter().expect("MongoDB counts its commands");
    let mut per_ingest = Vec::new();
    for (i, n) in [1usize, 200, 1, 200].into_iter().enumerate() {
        let targets: Vec<&str> = users[..n].iter().map(String::as_str).collect();
        let before = counter.get();
        let ev = ingest(
            &format!("cmd{i}"),
            &targets,
            &format!("c-cmd{i}"),
            Transition::None,
            1000,
        );
        assert_eq!(stored(s.ingest(ev).await.unwrap()).len(), n);
        per_ingest.push((n, counter.get() - before));
    }
    println!("commands per ingest (recipients, commands): {per_ingest:?}");
    let one = per_ingest[0].1;
    assert!(one > 0);
    assert!(
        per_ingest.iter().all(|(_, c)| *c == one),
        "commands per ingest (recipients, commands): {per_ingest:?}"
    );
}

/// The console's users list: the same three commands for 1 user or 300
/// online ones (never one query per user).
#[tokio::test]
async fn mongodb_commands_per_user_list_do_not_depend_on_users() {
    if mongo_uri().is_none() {
        return;
    }
    let s = mongo_store(&fresh_db()).await;
    let counter = s.command_counter().expect("MongoDB counts its commands");
    let mut per_list = Vec::new();
    for n in [1usize, 300] {
        for i in per_list.len()..n {
            let id = format!("v{i:03}");
            s.upsert_user(user(&id, Role::Agent, &[], &[]))
                .await
                .unwrap();
            s.connection_opened(&id, &format!("k{i}")).await.unwrap();
            s.set_status(&id, Status::Away).await.unwrap();
        }
        let before = counter.get();
        let all = s.list_user_summaries(1000).await.unwrap();
        assert_eq!(all.len(), n);
        assert!(all
            .iter()
            .all(|u| u.presence.connections == 1 && u.status == Status::Away));
        per_list.push((n, counter.get() - before));
    }
    println!("commands per users list (users, commands): {per_list:?}");
    assert_eq!(per_list[0].1, 3, "{per_list:?}");
    assert_eq!(per_list[1].1, 3, "{per_list:?}");
}

/// History written before bodies were shared (`events` documents carrying
/// the event inline) still replays after an upgrade, in order with new events.
#[tokio::test]
async fn mongodb_history_from_before_shared_bodies_still_replays() {
    let Some(uri) = mongo_uri() else { return };
    let db = fresh_db();
    let s = mongo_store(&db).await;
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let d = client.database(&db);
    d.collection::<mongodb::bson::Document>("events")
        .insert_one(mongodb::bson::doc! {
            "userId": "old", "seq": 1i64, "eventId": "legacy-1", "event": "call-initiated",
            "ts": "2026-11-01T10:00:00.000Z", "dataJson": "{\"n\":1}",
            "storedAt": mongodb::bson::DateTime::now(), "origin": "older",
        })
        .await
        .unwrap();
    d.collection::<mongodb::bson::Document>("seqs")
        .insert_one(mongodb::bson::doc! {"_id": "old", "seq": 1i64})
        .await
        .unwrap();
    let new = stored(
        s.ingest(ingest("after", &["old"], "c-old", Transition::None, 1000))
            .await
            .unwrap(),
    );
    assert_eq!(new[0].seq, 2);
    let page = s.events_since("old", 0, 10).await.unwrap();
    let got: Vec<(u64, &str)> = page
        .events
        .iter()
        .map(|e| (e.seq, e.body.id.as_str()))
        .collect();
    assert_eq!(got, vec![(1, "legacy-1"), (2, "after")]);
    assert_eq!(page.events[0].body.data(), json!({"n": 1}));
}

// Recovery of missed webhooks (contract §13): one lease holder at a time,
// a checkpoint that only its holder moves, and never backwards.
conformance!(
    recovery_lease_and_checkpoint,
    |s: Arc<dyn Store>| async move {
        let now = 1_800_000_000_000;
        assert_eq!(s.recovery_checkpoint().await.unwrap(), None);
        assert!(s.claim_recovery("a", now, now + 60_000).await.unwrap());
        assert!(
            !s.claim_recovery("b", now + 1, now + 60_001).await.unwrap(),
            "a holds it"
        );
        // The holder extends it.
        assert!(s.claim_recovery("a", now + 2, now + 120_000).await.unwrap());
        // Someone else's finish moves nothing and releases nothing.
        s.finish_recovery("b", Some(now)).await.unwrap();
        assert_eq!(s.recovery_checkpoint().await.unwrap(), None);
        assert!(!s.claim_recovery("b", now + 3, now + 60_000).await.unwrap());
        s.finish_recovery("a", Some(now - 5_000)).await.unwrap();
        assert_eq!(s.recovery_checkpoint().await.unwrap(), Some(now - 5_000));
        // Released: b may run; a failed run of b stores no checkpoint.
        assert!(s.claim_recovery("b", now + 4, now + 60_000).await.unwrap());
        s.finish_recovery("b", None).await.unwrap();
        assert_eq!(s.recovery_checkpoint().await.unwrap(), Some(now - 5_000));
        // Never backwards.
        assert!(s.claim_recovery("a", now + 5, now + 60_000).await.unwrap());
        s.finish_recovery("a", Some(now - 60_000)).await.unwrap();
        assert_eq!(s.recovery_checkpoint().await.unwrap(), Some(now - 5_000));
        // A lease that ran out is anyone's.
        assert!(s.claim_recovery("c", now + 6, now + 10).await.unwrap());
        assert!(s.claim_recovery("d", now + 11, now + 60_000).await.unwrap());
    }
);
