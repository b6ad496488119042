//! The domain model, apart from any storage: users and their view, call
//! legs and the rules that move their state, stored events and the history
//! rules, and the admin actions every instance applies. Backends (`store`)
//! only read and write these; the rules live here, once.

mod call;
mod control;
mod endpoint;
mod event;
mod recovery;
mod user;

pub use call::{
    control_key, session_key, sort_active_calls, ActiveCall, CallInfo, CallRecord, CallState,
    LegEvent, TimelineEntry, Transition, MAX_TIMELINE,
};
pub use control::Control;
pub use endpoint::{
    after_attempt, Attempt, AttemptResult, Delivery, DeliveryStatus, Endpoint, EndpointStats,
};
pub use event::{history_gap, EventBody, EventsPage, Ingest, IngestOutcome, StoredEvent};
pub use recovery::{
    window_start, RecoveryBoard, RecoveryState, RecoveryView, RunFailure, RunReport, RunRequest,
};
pub use user::{Presence, Role, Status, User, UserSummary, UserView};
