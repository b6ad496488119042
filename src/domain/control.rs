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
    /// A message without `seq` to some users' sessions (`None`: everyone):
    /// a custom broadcast, or a signal (contract §14), which skips the
    /// connection that sent it (`except_conn`).
    Broadcast {
        users: Option<Vec<String>>,
        frame: String,
        except_conn: Option<String>,
    },
}
