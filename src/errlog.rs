//! The last warnings and errors this process logged, for the operator's
//! console (contract §12, `errors`). A `tracing` layer ([`ErrorLayer`],
//! added by the CLI's `init_tracing` through [`install`]) keeps every WARN
//! and ERROR event, its message followed by its fields (`error = …`), in
//! one bounded ring ([`global`]) that the console's stream reads. A leaf
//! module: it knows nothing of the daemon.
//!
//! Log lines never carry secrets, tokens or payloads (the daemon's rule,
//! held by tests); the ring keeps exactly what was logged, cut to
//! [`MAX_MESSAGE_CHARS`].

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

/// What the console shows (contract: the last 50).
pub const CAPACITY: usize = 50;
/// A log line is a sentence and a few fields; one that is longer (a driver
/// error quoting a whole server reply) is cut here, so the ring stays
/// under 50 × 500 characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// RFC 3339, ms.
    pub ts: String,
    /// `warn` or `error`.
    pub level: &'static str,
    pub message: String,
}

pub struct ErrorLog {
    entries: Mutex<VecDeque<LogEntry>>,
    /// Bumped by every entry: readers re-serialize only when it moved.
    generation: AtomicU64,
}

impl Default for ErrorLog {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorLog {
    pub const fn new() -> Self {
        ErrorLog {
            entries: Mutex::new(VecDeque::new()),
            generation: AtomicU64::new(0),
        }
    }

    pub fn push(&self, level: &'static str, message: String) {
        let entry = LogEntry {
            ts: crate::clock::now_rfc3339(),
            level,
            message: cut(message),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Oldest first.
    pub fn entries(&self) -> Vec<LogEntry> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().cloned().collect()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The ring of this process: one per process, as the subscriber is.
pub fn global() -> &'static ErrorLog {
    static LOG: ErrorLog = ErrorLog::new();
    &LOG
}

fn cut(mut s: String) -> String {
    if let Some((at, _)) = s.char_indices().nth(MAX_MESSAGE_CHARS) {
        s.truncate(at);
        s.push('…');
    }
    s
}

/// Keeps WARN and ERROR events in a ring (the [`global`] one by default).
pub struct ErrorLayer {
    log: &'static ErrorLog,
}

impl ErrorLayer {
    pub fn new(log: &'static ErrorLog) -> Self {
        ErrorLayer { log }
    }
}

impl Default for ErrorLayer {
    fn default() -> Self {
        Self::new(global())
    }
}

/// `message` first, then ` name=value` for every other field.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S> Layer<S> for ErrorLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            _ => return,
        };
        let mut line = Line::default();
        event.record(&mut line);
        line.message.push_str(&line.fields);
        self.log.push(level, line.message);
    }
}

/// Install `subscriber` with the [`ErrorLayer`] on top as the process's
/// global subscriber (what `init_tracing` does with its fmt subscriber).
pub fn install<S>(subscriber: S) -> Result<(), TryInitError>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    subscriber.with(ErrorLayer::default()).try_init()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn with_layer(log: &'static ErrorLog, f: impl FnOnce()) {
        let sub = tracing_subscriber::registry().with(ErrorLayer::new(log));
        tracing::subscriber::with_default(sub, f);
    }

    #[test]
    fn keeps_warnings_and_errors_with_their_fields() {
        static LOG: ErrorLog = ErrorLog::new();
        with_layer(&LOG, || {
            tracing::info!("not kept");
            tracing::debug!("not kept");
            tracing::warn!(error = %"store timed out", user = "u1", "status not saved");
            tracing::error!(code = 4013u16, "session closed");
        });
        let e = LOG.entries();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].level, "warn");
        assert_eq!(
            e[0].message,
            "status not saved error=store timed out user=u1"
        );
        assert_eq!(e[1].level, "error");
        assert_eq!(e[1].message, "session closed code=4013");
        assert!(e[0].ts.ends_with('Z'), "{}", e[0].ts);
    }

    #[test]
    fn bounded_in_count_and_length() {
        static LOG: ErrorLog = ErrorLog::new();
        let g0 = LOG.generation();
        with_layer(&LOG, || {
            for i in 0..CAPACITY + 20 {
                tracing::warn!("w{i}");
            }
        });
        let e = LOG.entries();
        assert_eq!(LOG.generation() - g0, (CAPACITY + 20) as u64);
        // The oldest went first: what is left is the last CAPACITY, in order.
        let kept: Vec<&str> = e.iter().map(|x| x.message.as_str()).collect();
        let want: Vec<String> = (20..CAPACITY + 20).map(|i| format!("w{i}")).collect();
        assert_eq!(kept, want);
        let long = "x".repeat(MAX_MESSAGE_CHARS * 3);
        with_layer(&LOG, || tracing::error!(detail = %long, "{long}"));
        let last = LOG.entries().pop().unwrap();
        assert_eq!(last.message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(last.message.ends_with('…'));
        // A multi-byte character at the cut is not split.
        let cut_e = cut("é".repeat(MAX_MESSAGE_CHARS + 5));
        assert_eq!(cut_e.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert_eq!(cut("short".into()), "short");
    }
}
