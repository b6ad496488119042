//! Admin actions that every instance applies to its own sessions.

/// An admin action every instance applies to its own sessions: the
/// instance that took the request applies it and publishes it through the
/// store; the others receive it on their feed.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Close the user's sockets (revoke, delete, disable).
    CloseUser {
        user: String,
        code: u16,
        reason: String,
    },
    /// A custom message to some users (`None`: everyone).
    Broadcast {
        users: Option<Vec<String>>,
        frame: String,
    },
}
