//! Crash points for the crash suite (statechain.md §9.7), compiled only
//! with the `danger-test-hooks` feature, which release builds never enable.
//! `STATECHAIND_DANGER_ABORT=before-commit:g` (or `after-commit:x`, …)
//! aborts the process at that point of the first batch holding a log entry
//! of that kind (`g` sign/second, `x` transfer/sender, `t`
//! transfer/receiver, …), simulating a power cut just before or just after
//! the durable commit.

/// `STATECHAIND_DANGER_LIE=omit-newest`: the read API leaves each coin's
/// newest entry out (and reports the coin as it was before it), as an SE
/// under-reporting a count would (statechain.md §9.6). Always false
/// without the feature.
pub fn omit_newest() -> bool {
    #[cfg(feature = "danger-test-hooks")]
    {
        static LIE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *LIE.get_or_init(|| {
            let lie = std::env::var("STATECHAIND_DANGER_LIE").as_deref() == Ok("omit-newest");
            if lie {
                tracing::warn!("danger-test-hooks: the read API omits each coin's newest entry");
            }
            lie
        })
    }
    #[cfg(not(feature = "danger-test-hooks"))]
    false
}

/// Where to abort.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks {
    #[cfg(feature = "danger-test-hooks")]
    abort: Option<(Point, u8)>,
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
            let var = std::env::var("STATECHAIND_DANGER_ABORT").unwrap_or_default();
            let abort = match var.split_once(':') {
                Some(("before-commit", k)) if k.len() == 1 => {
                    Some((Point::Before, k.as_bytes()[0]))
                }
                Some(("after-commit", k)) if k.len() == 1 => Some((Point::After, k.as_bytes()[0])),
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

    /// Called with the batch's transaction about to commit; `kinds` are
    /// the kinds of its log entries.
    pub fn before_commit(&self, kinds: &[u8]) {
        #[cfg(feature = "danger-test-hooks")]
        if let Some((Point::Before, k)) = self.abort {
            if kinds.contains(&k) {
                std::process::abort();
            }
        }
        let _ = kinds;
    }

    /// Called once the batch is durable, before any reply is sent.
    pub fn after_commit(&self, kinds: &[u8]) {
        #[cfg(feature = "danger-test-hooks")]
        if let Some((Point::After, k)) = self.abort {
            if kinds.contains(&k) {
                std::process::abort();
            }
        }
        let _ = kinds;
    }
}
