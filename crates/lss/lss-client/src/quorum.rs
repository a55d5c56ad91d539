//! Several providers with a write quorum (issue 17): a signer's state
//! survives a provider that is down, lost its data, or lies.
//!
//! Each provider is a verifying [`PrivClient`] with its own signed log and
//! trusted checkpoint. A put succeeds when `W` of the `N` providers return
//! verified receipts for it. A read asks every provider, keeps the answers
//! that verify, and takes the one that is at least as new as every other
//! key by key (LSS versions only grow); a provider that is behind is brought
//! up to date from it, one version at a time, and one that contradicts its
//! own log is reported with its evidence and left out.

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::{GetError, PrivClient, PutError, RpcError};
use lss_core::KeyValue;

/// One provider: a name for reports and its verifying client.
pub struct Provider {
    /// How reports name it (its URL, usually).
    pub name: String,
    /// The verifying client.
    pub client: PrivClient,
}

/// What went wrong at one provider.
#[derive(Debug, Clone)]
pub struct ProviderFailure {
    /// The provider's name.
    pub provider: String,
    /// Why.
    pub error: String,
    /// Evidence, if it lied.
    pub evidence: Option<Box<lss_verify::Evidence>>,
}

/// Why a quorum operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// Fewer than the quorum answered well.
    #[error("{ok} of {needed} providers needed succeeded; failures: {}", describe(.failures))]
    NotEnough {
        /// Providers that succeeded.
        ok: usize,
        /// The quorum.
        needed: usize,
        /// The others.
        failures: Vec<ProviderFailure>,
    },
    /// A version conflict the providers agree on (the caller's versions are
    /// stale): nothing to repair.
    #[error("version conflict on {} key(s)", .0.len())]
    Conflict(Vec<KeyValue>),
    /// No answer is at least as new as every other: the providers hold
    /// histories that cannot both be right.
    #[error("the providers' answers diverge: {0}")]
    Diverged(String),
}

fn describe(failures: &[ProviderFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{}: {}", f.provider, f.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a successful operation saw.
#[derive(Debug, Default)]
pub struct QuorumReport {
    /// Providers that acknowledged (put) or whose answer was taken or
    /// matched it (get).
    pub ok: Vec<String>,
    /// Providers brought up to date.
    pub repaired: Vec<String>,
    /// Providers that failed or lied.
    pub failures: Vec<ProviderFailure>,
}

/// N verifying providers and a write quorum W.
pub struct QuorumClient {
    providers: Vec<Provider>,
    write_quorum: usize,
}

fn failure(provider: &str, error: &RpcError) -> ProviderFailure {
    ProviderFailure {
        provider: provider.to_owned(),
        error: error.to_string(),
        evidence: match error {
            RpcError::Violation(e) => Some(e.clone()),
            _ => None,
        },
    }
}

fn rpc_of_put(e: PutError) -> RpcError {
    match e {
        PutError::Rpc(rpc) => rpc,
        other => RpcError::Unverified(other.to_string()),
    }
}

fn rpc_of_get(e: GetError) -> RpcError {
    match e {
        GetError::Rpc(rpc) => rpc,
        other => RpcError::Unverified(other.to_string()),
    }
}

impl QuorumClient {
    /// `providers` (each verifying: see [`PrivClient::verifying`]) with a
    /// write quorum of `write_quorum` (1 ≤ W ≤ N).
    pub fn new(providers: Vec<Provider>, write_quorum: usize) -> Result<Self, String> {
        if write_quorum == 0 || write_quorum > providers.len() {
            return Err(format!(
                "write quorum {write_quorum} is not between 1 and the {} providers",
                providers.len()
            ));
        }
        Ok(QuorumClient {
            providers,
            write_quorum,
        })
    }

    /// The providers.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// Writes `kvs` to every provider; succeeds as soon as `W` verified
    /// receipts are in.
    /// A provider that is behind on a key (it conflicts with an older
    /// version) is brought up to the version before, then written.
    pub async fn put(&mut self, kvs: Vec<KeyValue>) -> Result<QuorumReport, QuorumError> {
        let needed = self.write_quorum;
        let mut pending: FuturesUnordered<_> = self
            .providers
            .iter_mut()
            .map(|p| {
                let kvs = kvs.clone();
                async move {
                    let result = match p.client.put(kvs.clone()).await {
                        Err(PutError::Conflict(current)) if behind(&current, &kvs) => {
                            repair(&mut p.client, &current, &kvs).await.map(|()| true)
                        }
                        other => other.map(|()| false),
                    };
                    (p.name.clone(), result)
                }
            })
            .collect();
        let mut report = QuorumReport::default();
        let mut conflicts = None;
        // Done as soon as W have acknowledged: the others' puts are
        // cancelled (each commits or not; a provider left behind is
        // repaired by the next read or put).
        while let Some((name, result)) = pending.next().await {
            match result {
                Ok(repaired) => {
                    if repaired {
                        report.repaired.push(name.clone());
                    }
                    report.ok.push(name);
                    if report.ok.len() >= needed {
                        break;
                    }
                }
                Err(PutError::Conflict(current)) => {
                    conflicts = Some(current.clone());
                    report.failures.push(ProviderFailure {
                        provider: name,
                        error: format!("version conflict on {} key(s)", current.len()),
                        evidence: None,
                    });
                }
                Err(e) => report.failures.push(failure(&name, &rpc_of_put(e))),
            }
        }
        drop(pending);
        if report.ok.len() >= self.write_quorum {
            return Ok(report);
        }
        match conflicts {
            Some(current) if report.ok.is_empty() => Err(QuorumError::Conflict(current)),
            _ => Err(QuorumError::NotEnough {
                ok: report.ok.len(),
                needed: self.write_quorum,
                failures: report.failures,
            }),
        }
    }

    /// Reads `prefix` from every provider and returns the newest verified
    /// answer; needs `N − W + 1` verified answers (so it meets every
    /// acknowledged write), and repairs providers that are behind.
    pub async fn get(
        &mut self,
        prefix: &str,
        nonce: &[u8],
    ) -> Result<(Vec<KeyValue>, QuorumReport), QuorumError> {
        let results = join_all(
            self.providers
                .iter_mut()
                .map(|p| async move { (p.name.clone(), p.client.get(prefix, nonce).await) }),
        )
        .await;
        let mut report = QuorumReport::default();
        let mut answers: Vec<(usize, Vec<KeyValue>)> = Vec::new();
        for (i, (name, result)) in results.into_iter().enumerate() {
            match result {
                Ok(kvs) => answers.push((i, kvs)),
                Err(e) => report.failures.push(failure(&name, &rpc_of_get(e))),
            }
        }
        let needed = lss_verify::quorum::read_quorum(self.providers.len(), self.write_quorum);
        if answers.len() < needed {
            return Err(QuorumError::NotEnough {
                ok: answers.len(),
                needed,
                failures: report.failures,
            });
        }
        let views: Vec<&[KeyValue]> = answers.iter().map(|(_, kvs)| kvs.as_slice()).collect();
        let best = lss_verify::quorum::newest(&views)
            .map(|j| (answers[j].0, answers[j].1.clone()))
            .ok_or_else(|| {
                QuorumError::Diverged(
                    "no provider's answer is at least as new as every other, key by key".into(),
                )
            })?;
        for (i, answer) in &answers {
            let name = self.providers[*i].name.clone();
            if answer == &best.1 {
                report.ok.push(name);
                continue;
            }
            // Behind: write what it lacks, version by version.
            let client = &mut self.providers[*i].client;
            let current: Vec<KeyValue> = best
                .1
                .iter()
                .map(|kv| {
                    answer
                        .iter()
                        .find(|a| a.key == kv.key)
                        .cloned()
                        .unwrap_or_else(|| KeyValue::new(kv.key.clone(), -1, Vec::new()))
                })
                .collect();
            match repair(client, &current, &best.1).await {
                Ok(()) => {
                    report.repaired.push(name.clone());
                    report.ok.push(name);
                }
                Err(e) => report.failures.push(failure(&name, &rpc_of_put(e))),
            }
        }
        Ok((best.1, report))
    }
}

/// Whether a conflict only says the provider is behind `wanted` (each
/// conflicting key is older there than the version before the one put).
fn behind(current: &[KeyValue], wanted: &[KeyValue]) -> bool {
    current.iter().all(|c| {
        wanted
            .iter()
            .find(|w| w.key == c.key)
            .is_some_and(|w| c.version < w.version - 1 || (c.version < 0 && w.version > 0))
    })
}

/// Brings a provider holding `current` up to `wanted`: each key written at
/// every version after its current one, up to its wanted version, with the
/// wanted value (the intermediate values are superseded anyway). Only keys
/// in `wanted` are written; keys already there are left alone.
async fn repair(
    client: &mut PrivClient,
    current: &[KeyValue],
    wanted: &[KeyValue],
) -> Result<(), PutError> {
    let next: Vec<(KeyValue, i64)> = wanted
        .iter()
        .map(|w| {
            let at = current
                .iter()
                .find(|c| c.key == w.key)
                .map_or(w.version, |c| c.version);
            // A key not reported as conflicting is one version behind at most.
            let from = if current.iter().any(|c| c.key == w.key) {
                at + 1
            } else {
                w.version
            };
            (w.clone(), from)
        })
        .collect();
    for step in lss_verify::quorum::repair_steps(&next) {
        client.put(step).await?;
    }
    Ok(())
}
