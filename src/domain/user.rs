//! Dialer users, their presence and status, and the view of one user that
//! `GET /api/users/{id}` answers and `snapshot` is built from.

use serde::{Deserialize, Serialize};

use super::call::{sort_active_calls, ActiveCall, CallRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Agent,
    Supervisor,
    Admin,
}

/// A dialer user, as the admin API reads and writes it (camelCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub role: Role,
    /// E.164, normalized on the way in.
    #[serde(default)]
    pub phone_numbers: Vec<String>,
    /// Telnyx connection ids (rule 4 of routing).
    #[serde(default)]
    pub connection_ids: Vec<String>,
    #[serde(default)]
    pub disabled: bool,
    /// Unix seconds: tokens with `iat` at or before this are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Available,
    Away,
    Busy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub online: bool,
    pub connections: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

impl Presence {
    /// Online means at least one live connection, on any instance.
    pub fn new(connections: u32, last_seen: Option<String>) -> Self {
        Presence {
            online: connections > 0,
            connections,
            last_seen,
        }
    }
}

/// What `GET /api/users/{id}` answers and what `snapshot` is built from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    #[serde(flatten)]
    pub user: User,
    pub presence: Presence,
    pub status: Status,
    pub active_calls: Vec<ActiveCall>,
}

impl UserView {
    /// The view from what a backend read: `calls` are the records of the
    /// legs bound to the user (ended or not); only live ones are shown,
    /// oldest first.
    pub fn assemble<'a>(
        user: User,
        presence: Presence,
        status: Status,
        calls: impl IntoIterator<Item = &'a CallRecord>,
    ) -> Self {
        let mut active_calls: Vec<ActiveCall> = calls
            .into_iter()
            .filter_map(CallRecord::active_call)
            .collect();
        sort_active_calls(&mut active_calls);
        UserView {
            user,
            presence,
            status,
            active_calls,
        }
    }
}

/// A user with presence and status, without calls: one line of the
/// console's users table ([`crate::store::Store::list_user_summaries`]).
#[derive(Debug, Clone, PartialEq)]
pub struct UserSummary {
    pub user: User,
    pub presence: Presence,
    pub status: Status,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CallInfo, LegEvent, Transition};

    fn leg(id: &str, t: Transition, ms: i64) -> CallRecord {
        let call = CallInfo {
            call_control_id: Some(id.into()),
            ..Default::default()
        };
        let ts = crate::clock::rfc3339_ms(ms);
        let mut r = CallRecord::new(id);
        r.apply(LegEvent {
            call: &call,
            event: "call-x",
            transition: t,
            occurred_ms: ms,
            ts: &ts,
            targets: &["u1".to_string()],
        });
        r
    }

    #[test]
    fn user_view_shows_live_legs_oldest_first() {
        let user: User = serde_json::from_value(serde_json::json!({"id":"u1"})).unwrap();
        let calls = [
            leg("b", Transition::Initiated, 2000),
            leg("gone", Transition::Hangup, 500),
            leg("a", Transition::Initiated, 1000),
        ];
        let view = UserView::assemble(user, Presence::new(2, None), Status::Busy, &calls);
        let ids: Vec<_> = view
            .active_calls
            .iter()
            .map(|c| c.call_control_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(view.presence.online);
        assert!(!Presence::new(0, None).online);
    }
}
