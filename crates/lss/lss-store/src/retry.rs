//! Retrying a remote backend's operation: one loop for every backend, so
//! PostgreSQL and etcd retry, back off, track a commit in doubt and give up
//! the same way.

use std::future::Future;
use std::time::Duration;

use crate::StoreError;

/// How one attempt ended, when it did not produce a result.
#[derive(Debug)]
pub enum Failure {
    /// Worth another attempt (a dropped connection, a serialization failure,
    /// a leader election). `in_doubt` when the failure hit a commit, which may
    /// have been applied.
    Retry {
        /// What happened, for logs and the final error.
        error: String,
        /// Whether a write may have been applied.
        in_doubt: bool,
    },
    /// Final: retrying cannot help.
    Fail(StoreError),
}

/// Attempts and backoff of one backend.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Name in errors ("PostgreSQL", "etcd").
    pub engine: &'static str,
    /// Attempts before giving up with [`StoreError::Unavailable`].
    pub attempts: u32,
    /// First backoff; it doubles each time (up to 64×), plus up to as much
    /// again of jitter.
    pub base: Duration,
}

impl Retry {
    /// Runs `attempt` until it succeeds, fails for good, or the attempts are
    /// spent. `attempt` is told whether an earlier attempt's write is in doubt.
    pub async fn run<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut in_doubt = false;
        let mut last = String::new();
        for n in 0..self.attempts {
            match attempt(in_doubt).await {
                Ok(value) => return Ok(value),
                Err(Failure::Fail(e)) => return Err(e),
                Err(Failure::Retry {
                    error,
                    in_doubt: doubt,
                }) => {
                    tracing::debug!(engine = self.engine, what, attempt = n, %error, doubt, "retrying");
                    crate::metrics::retried(self.engine, what);
                    in_doubt |= doubt;
                    last = error;
                    tokio::time::sleep(self.backoff(n)).await;
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "{}: {what} gave up after {} attempts: {last}",
            self.engine, self.attempts
        )))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.base * (1u32 << attempt.min(6));
        // Jitter from the clock's low bits: enough to keep racing retries
        // apart, without a random source.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = base.mul_f64(f64::from(nanos % 1_000) / 1_000.0);
        base + jitter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Retry = Retry {
        engine: "test",
        attempts: 3,
        base: Duration::from_millis(1),
    };

    #[tokio::test]
    async fn retries_then_succeeds_remembering_doubt() {
        let mut seen = Vec::new();
        let result = FAST
            .run("op", |doubt| {
                seen.push(doubt);
                let n = seen.len();
                async move {
                    match n {
                        1 => Err(Failure::Retry {
                            error: "cut".into(),
                            in_doubt: true,
                        }),
                        2 => Err(Failure::Retry {
                            error: "again".into(),
                            in_doubt: false,
                        }),
                        _ => Ok(n),
                    }
                }
            })
            .await;
        assert_eq!(result.expect("third attempt"), 3);
        assert_eq!(seen, [false, true, true], "doubt, once raised, stays");
    }

    #[tokio::test]
    async fn gives_up_or_fails_at_once() {
        let mut calls = 0;
        let err = FAST
            .run::<(), _, _>("op", |_| {
                calls += 1;
                async {
                    Err(Failure::Retry {
                        error: "down".into(),
                        in_doubt: false,
                    })
                }
            })
            .await
            .expect_err("gives up");
        assert_eq!(calls, 3);
        assert!(
            matches!(err, StoreError::Unavailable(ref m) if m.contains("gave up after 3 attempts: down")),
            "{err}"
        );
        let mut calls = 0;
        let err = FAST
            .run::<(), _, _>("op", |_| {
                calls += 1;
                async { Err(Failure::Fail(StoreError::Corrupt("bad".into()))) }
            })
            .await
            .expect_err("fails");
        assert_eq!(calls, 1);
        assert!(matches!(err, StoreError::Corrupt(_)));
    }
}
