//! Who an event belongs to (contract §6). The first rule that yields users wins:
//! 1. `clientState` JSON naming an existing user (`userId` or `user_id`);
//! 2. the users the call is already bound to;
//! 3. phone number ownership (`to` for inbound, `from` for outbound);
//! 4. the Telnyx `connection_id`;
//! 5. the `CALLBRIDGE_UNROUTED` policy.

use crate::config::UnroutedPolicy;
use crate::domain::Role;
use crate::normalize::Normalized;
use crate::store::{Store, StoreResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    ClientState,
    CallBinding,
    PhoneNumber,
    ConnectionId,
    Unrouted,
}

impl Rule {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rule::ClientState => "client-state",
            Rule::CallBinding => "call-binding",
            Rule::PhoneNumber => "phone-number",
            Rule::ConnectionId => "connection-id",
            Rule::Unrouted => "unrouted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Sorted, without duplicates.
    pub targets: Vec<String>,
    pub rule: Rule,
}

pub async fn route(
    store: &dyn Store,
    ev: &Normalized,
    policy: UnroutedPolicy,
) -> StoreResult<Route> {
    let found = |targets: Vec<String>, rule| Route { targets, rule };

    if let Some(user) = client_state_user(ev) {
        if store.get_user(&user).await?.is_some() {
            return Ok(found(vec![user], Rule::ClientState));
        }
    }

    let keys = ev.call.binding_keys();
    if !keys.is_empty() {
        if let Some(users) = store.call_binding(&keys).await? {
            if !users.is_empty() {
                return Ok(found(users, Rule::CallBinding));
            }
        }
    }

    let owned = match ev.call.direction.as_deref() {
        Some("inbound") => ev.call.to.as_deref(),
        Some("outbound") => ev.call.from.as_deref(),
        _ => None,
    };
    if let Some(number) = owned.and_then(normalize_phone) {
        let users = store.users_by_phone(&number).await?;
        if !users.is_empty() {
            return Ok(found(users, Rule::PhoneNumber));
        }
    }

    if let Some(conn) = &ev.connection_id {
        let users = store.users_by_connection(conn).await?;
        if !users.is_empty() {
            return Ok(found(users, Rule::ConnectionId));
        }
    }

    let users = match policy {
        UnroutedPolicy::Supervisors => {
            store
                .users_by_roles(&[Role::Supervisor, Role::Admin])
                .await?
        }
        UnroutedPolicy::Broadcast => store.all_user_ids().await?,
        UnroutedPolicy::Drop => Vec::new(),
    };
    Ok(found(users, Rule::Unrouted))
}

/// `userId` (or `user_id`) from a JSON-object client state.
fn client_state_user(ev: &Normalized) -> Option<String> {
    let obj = ev.client_state.as_ref()?.as_object()?;
    let v = obj.get("userId").or_else(|| obj.get("user_id"))?;
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// E.164 form of a phone number: spaces, dashes, dots and parentheses are
/// ignored, a leading `00` reads as `+`; the result must be `+` and 8–15 digits.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = compact
        .strip_prefix('+')
        .or_else(|| compact.strip_prefix("00"))?;
    if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Some(format!("+{digits}"))
    } else {
        None
    }
}

/// Phone number for logs: all but the last four digits masked.
pub fn mask_phone(raw: &str) -> String {
    let n = raw.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    raw.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if n - seen >= 4 {
                    return '*';
                }
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_forms() {
        assert_eq!(
            normalize_phone("+1 (555) 123-0001").as_deref(),
            Some("+15551230001")
        );
        assert_eq!(
            normalize_phone("0044.20.7946.0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(normalize_phone("+1555"), None);
        assert_eq!(normalize_phone("5551230001"), None);
        assert_eq!(normalize_phone("+1234567890123456"), None);
        assert_eq!(normalize_phone("+1555abc0001"), None);
        assert_eq!(normalize_phone("sip:alice@example.com"), None);
        assert_eq!(normalize_phone("+12345678").as_deref(), Some("+12345678"));
    }

    #[test]
    fn masking_keeps_last_four() {
        assert_eq!(mask_phone("+15551230001"), "+*******0001");
        assert_eq!(mask_phone("123"), "123");
        assert_eq!(mask_phone("sip:bob@x"), "sip:bob@x");
    }
}
