//! Crash points for the crash suite (statechain.md §9.7), compiled only
//! with the `danger-test-hooks` feature, which release builds never enable.
//! `STATECHAIND_DANGER_ABORT=before-commit` (or `after-commit`) aborts the
//! process at that point of the first batch that holds a log entry,
//! simulating a power cut just before or just after the durable commit.

/// Where to abort.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks {
    #[cfg(feature = "danger-test-hooks")]
    abort: Option<Point>,
}

#[cfg(feature = "danger-test-hooks")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    Before,
    After,
}

impl Hooks {
    /// From the environment (no-op without the feature).
    pub fn from_env() -> Hooks {
        #[cfg(feature = "danger-test-hooks")]
        {
            let abort = match std::env::var("STATECHAIND_DANGER_ABORT").as_deref() {
                Ok("before-commit") => Some(Point::Before),
                Ok("after-commit") => Some(Point::After),
                _ => None,
            };
            if abort.is_some() {
                tracing::warn!("danger-test-hooks: this process will abort at a commit");
            }
            Hooks { abort }
        }
        #[cfg(not(feature = "danger-test-hooks"))]
        Hooks::default()
    }

    /// Called with the batch's transaction about to commit.
    pub fn before_commit(&self, has_entries: bool) {
        #[cfg(feature = "danger-test-hooks")]
        if has_entries && self.abort == Some(Point::Before) {
            std::process::abort();
        }
        let _ = has_entries;
    }

    /// Called once the batch is durable, before any reply is sent.
    pub fn after_commit(&self, has_entries: bool) {
        #[cfg(feature = "danger-test-hooks")]
        if has_entries && self.abort == Some(Point::After) {
            std::process::abort();
        }
        let _ = has_entries;
    }
}
