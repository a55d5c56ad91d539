//! The signer's side of several LSS providers (`quorum-v1`,
//! docs/protocol.md "Several providers behind the broker").
//!
//! The broker is the adversary a remote signer exists for, so the signer
//! checks everything itself: each provider's MACs under its own shared
//! secret, and each provider's signed per-namespace log (`lss-verify`)
//! against the last checkpoint of that provider the signer verified and
//! kept. A reply is released only when `W` providers returned verified
//! receipts for exactly its changes; a restore takes the newest of at least
//! `N − W + 1` verified states, so it meets the last acknowledged put even
//! if the broker hides the other providers. A provider that contradicts its
//! own signed log is left out, and the contradiction is written as an
//! evidence file anyone can check (`lss-cli verify-evidence`).
//!
//! The checkpoints live in `<store>/lss-checkpoints/<server key hex>`,
//! evidence in `<store>/lss-evidence/`; both are the only file I/O here.

use std::path::{Path, PathBuf};

use lss_core::KeyValue;
use lss_verify::{Expect, Rejected, StateLeaf, Trusted};
use sha2::{Digest, Sha256};
use sphinx_wire::lss::{
    Msg, Muts, ProviderAccount, ProviderPut, Providers, QuorumInit, QuorumMutations, Repair,
    Response, Seen,
};

/// Most puts a repair may take (one MAC of 32 bytes each travels with the
/// init answer). A provider further behind is left for the operator.
pub const MAX_REPAIR_STEPS: usize = 4096;

use crate::lss::{kvs, Credentials, LssError};

/// Why a quorum step failed.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// Fewer verified answers or receipts than needed.
    #[error("{ok} verified LSS provider(s) of the {needed} needed ({why})")]
    NotEnough {
        /// How many verified.
        ok: usize,
        /// How many were needed.
        needed: usize,
        /// What went wrong with the others.
        why: String,
    },
    /// The verified states are not one history.
    #[error("the LSS providers' verified states diverge: none is at least as new as every other, key by key; refusing to choose")]
    Diverged,
    /// The broker's provider list is not acceptable.
    #[error("LSS providers: {0}")]
    Providers(String),
    /// A checkpoint or evidence file cannot be read or written.
    #[error("LSS checkpoint store: {0}")]
    Store(String),
    /// A message that is not what this step expects.
    #[error("unexpected LSS message: {0}")]
    Protocol(&'static str),
    /// Malformed bytes.
    #[error(transparent)]
    Wire(#[from] sphinx_wire::WireError),
    /// A version out of range.
    #[error(transparent)]
    Lss(#[from] LssError),
}

/// One provider as the signer knows it.
struct Provider {
    server: [u8; 33],
    creds: Credentials,
    trusted: Option<Trusted>,
}

/// The signer's view of its providers during one session.
pub struct Quorum {
    client_id: [u8; 33],
    providers: Vec<Provider>,
    write_quorum: usize,
    nonce: [u8; 32],
    dir: PathBuf,
    /// Repairs decided at restore, sent with the init answer.
    repairs: Vec<Repair>,
    /// Providers caught contradicting their own signed log this session.
    liars: std::collections::BTreeSet<usize>,
}

/// What acknowledges a put: each provider's expected MAC and the leaves
/// written.
pub struct Awaited {
    macs: Vec<[u8; 32]>,
    written: Vec<StateLeaf>,
}

impl Quorum {
    /// From the broker's `Providers` (init step 1): credentials for each
    /// provider (`creds_for` derives them from its key), their last
    /// checkpoints from `store`, and `nonce` for the reads of step 2.
    /// Returns the `Accounts` answer too.
    pub fn open(
        providers: &Providers,
        nonce: [u8; 32],
        store: &Path,
        min_write_quorum: usize,
        creds_for: impl Fn(&[u8; 33]) -> Result<Credentials, QuorumError>,
    ) -> Result<(Quorum, Vec<u8>), QuorumError> {
        let n = providers.server_pubkeys.len();
        let w = usize::try_from(providers.write_quorum).unwrap_or(usize::MAX);
        if w < min_write_quorum.min(n) {
            return Err(QuorumError::Providers(format!(
                "the broker asks for a write quorum of {w} of {n}; this signer requires {min_write_quorum}"
            )));
        }
        let mut seen_keys = std::collections::HashSet::new();
        if !providers
            .server_pubkeys
            .iter()
            .all(|k| seen_keys.insert(*k))
        {
            return Err(QuorumError::Providers(
                "the same provider is named twice (one server would count as several)".into(),
            ));
        }
        let dir = store.to_path_buf();
        std::fs::create_dir_all(dir.join("lss-checkpoints"))
            .map_err(|e| QuorumError::Store(format!("{}: {e}", dir.display())))?;
        let mut list = Vec::with_capacity(n);
        for server in &providers.server_pubkeys {
            let creds = creds_for(server)?;
            let path = checkpoint_path(&dir, server);
            let trusted = durable_file::read(&path)
                .map_err(|e| QuorumError::Store(format!("{}: {e}", path.display())))?
                .map(|bytes| Trusted::decode(&bytes, server))
                .transpose()
                .map_err(|e| QuorumError::Store(format!("{}: {e}", path.display())))?;
            list.push(Provider {
                server: *server,
                creds,
                trusted,
            });
        }
        let client_id = list
            .first()
            .map(|p| p.creds.client_id)
            .ok_or_else(|| QuorumError::Providers("no provider".into()))?;
        let accounts = list
            .iter()
            .map(|p| ProviderAccount {
                auth_token: p.creds.token,
                seen: p.trusted.as_ref().map(seen_of),
            })
            .collect();
        let response = Response::Accounts(QuorumInit {
            client_id,
            nonce,
            accounts,
        })
        .encode();
        Ok((
            Quorum {
                client_id,
                providers: list,
                write_quorum: w,
                nonce,
                dir,
                repairs: Vec::new(),
                liars: Default::default(),
            },
            response,
        ))
    }

    /// Init step 2: the providers' states. Keeps those whose MAC and signed
    /// checkpoint verify, needs `N − W + 1` of them, and returns the newest.
    pub fn restore(&mut self, payload: &[u8]) -> Result<Muts, QuorumError> {
        let Msg::States(states) = Msg::decode(payload)? else {
            return Err(QuorumError::Protocol("expected States on init-2-msg"));
        };
        let needed = lss_verify::quorum::read_quorum(self.providers.len(), self.write_quorum);
        let mut verified: Vec<(usize, Vec<KeyValue>, Muts, Trusted)> = Vec::new();
        let mut why = Vec::new();
        for state in states {
            let i = match self.index(state.provider, verified.iter().map(|v| v.0)) {
                Ok(i) => i,
                Err(e) => {
                    why.push(e);
                    continue;
                }
            };
            let p = &self.providers[i];
            if let Err(e) = p
                .creds
                .check_read(&self.nonce, &state.muts, Some(&state.server_hmac))
            {
                why.push(format!("provider {i}: {e}"));
                continue;
            }
            let kvs = kvs(&state.muts)?;
            let answer: Vec<StateLeaf> = kvs.iter().map(leaf).collect();
            let nonce = self.nonce;
            let expect = Expect::Read {
                prefix: "",
                nonce: &nonce,
                answer: &answer,
            };
            match self.check(i, &state.checkpoint, &state.bundle, expect) {
                Ok(trusted) => verified.push((i, kvs, state.muts, trusted)),
                Err(e) => why.push(e),
            }
        }
        self.repairs.clear();
        if verified.len() < needed {
            return Err(QuorumError::NotEnough {
                ok: verified.len(),
                needed,
                why: why.join("; "),
            });
        }
        let views: Vec<&[KeyValue]> = verified.iter().map(|v| v.1.as_slice()).collect();
        let best = lss_verify::quorum::newest(&views).ok_or(QuorumError::Diverged)?;
        let (source, newest) = (verified[best].0, &verified[best].1);
        for (i, kvs, _, _) in &verified {
            if lss_verify::quorum::dominates(kvs, newest) {
                continue;
            }
            let steps =
                lss_verify::quorum::repair_steps(&lss_verify::quorum::repair_plan(kvs, newest));
            if steps.len() > MAX_REPAIR_STEPS {
                tracing::warn!(
                    provider = i,
                    steps = steps.len(),
                    "this LSS provider is too far behind to repair through the broker; its puts conflict until the operator restores it"
                );
                continue;
            }
            let macs = steps
                .iter()
                .map(|step| self.providers[*i].creds.client_mac(&muts_of(step)))
                .collect::<Result<Vec<_>, _>>()?;
            tracing::info!(
                provider = i,
                steps = steps.len(),
                "this LSS provider is behind the newest verified state; asking the broker to repair it"
            );
            self.repairs.push(Repair {
                provider: *i as u64,
                source: source as u64,
                macs,
            });
        }
        let muts = verified[best].2.clone();
        for (i, _, _, trusted) in verified {
            self.keep(i, trusted)?;
        }
        Ok(muts)
    }

    /// The `QuorumMuts` to send for `muts` (with the repairs decided at
    /// restore, once), and what will acknowledge it.
    pub fn prepare(&mut self, muts: &Muts) -> Result<(Vec<u8>, Awaited), QuorumError> {
        let mut puts = Vec::with_capacity(self.providers.len());
        let mut macs = Vec::with_capacity(self.providers.len());
        for p in &self.providers {
            puts.push(ProviderPut {
                client_hmac: p.creds.client_mac(muts)?,
                seen: p.trusted.as_ref().map(seen_of),
            });
            macs.push(p.creds.server_put_mac(muts)?);
        }
        let written = kvs(muts)?.iter().map(leaf).collect();
        let payload = Response::QuorumMuts(QuorumMutations {
            muts: muts.clone(),
            puts,
            repairs: std::mem::take(&mut self.repairs),
        })
        .encode();
        Ok((payload, Awaited { macs, written }))
    }

    /// The broker's `Receipts`: `Ok` once `W` providers' receipts carry the
    /// MAC for exactly the changes and a signed checkpoint whose last entry
    /// is this put; `Ok(true)` when the broker says an honest provider is
    /// behind (a resync repairs it).
    pub fn acknowledge(&mut self, payload: &[u8], awaited: &Awaited) -> Result<bool, QuorumError> {
        let Msg::Receipts(receipts) = Msg::decode(payload)? else {
            return Err(QuorumError::Protocol("expected Receipts on lss-msg"));
        };
        let repair = receipts.behind.iter().any(|i| {
            usize::from(*i) < self.providers.len() && !self.liars.contains(&usize::from(*i))
        });
        let receipts = receipts.receipts;
        let mut verified: Vec<(usize, Trusted)> = Vec::new();
        let mut why = Vec::new();
        for receipt in receipts {
            let i = match self.index(receipt.provider, verified.iter().map(|v| v.0)) {
                Ok(i) => i,
                Err(e) => {
                    why.push(e);
                    continue;
                }
            };
            if !lss_core::Mac(awaited.macs[i]).verify(&receipt.server_hmac) {
                why.push(format!("provider {i}: {}", LssError::BadMac));
                continue;
            }
            // No client signature: VLS keeps the persistence secret key to
            // itself (it exposes only the public key and the ECDH secret).
            let expect = Expect::Put {
                written: &awaited.written,
                client_sig: None,
            };
            match self.check(i, &receipt.checkpoint, &receipt.bundle, expect) {
                Ok(trusted) => verified.push((i, trusted)),
                Err(e) => why.push(e),
            }
        }
        if verified.len() < self.write_quorum {
            return Err(QuorumError::NotEnough {
                ok: verified.len(),
                needed: self.write_quorum,
                why: why.join("; "),
            });
        }
        for (i, trusted) in verified {
            self.keep(i, trusted)?;
        }
        Ok(repair)
    }

    /// A provider index that is in range and not yet used in this message.
    fn index(&self, provider: u64, mut used: impl Iterator<Item = usize>) -> Result<usize, String> {
        match usize::try_from(provider) {
            Ok(i) if i < self.providers.len() && !used.any(|u| u == i) => Ok(i),
            _ => Err(format!("provider {provider}: unknown or repeated")),
        }
    }

    /// Checks provider `i`'s checkpoint; a contradiction of its own signed
    /// log is written as evidence.
    fn check(
        &mut self,
        i: usize,
        checkpoint: &[u8],
        bundle: &[u8],
        expect: Expect<'_>,
    ) -> Result<Trusted, String> {
        let p = &self.providers[i];
        match lss_verify::check(
            &p.server,
            &self.client_id,
            p.trusted.as_ref(),
            checkpoint,
            bundle,
            expect,
        ) {
            Ok(trusted) => Ok(trusted),
            Err(Rejected::Unverifiable(why)) => Err(format!("provider {i}: {why}")),
            Err(Rejected::Violation(violation)) => {
                let answer = match expect {
                    Expect::Read { answer, .. } => Some(answer),
                    Expect::Put { .. } => None,
                };
                let evidence = lss_verify::Evidence::new(
                    &p.server,
                    &violation,
                    p.trusted.as_ref(),
                    checkpoint,
                    bundle,
                    answer,
                );
                let server = p.server;
                self.liars.insert(i);
                let saved = self.save_evidence(&server, &evidence.to_json());
                tracing::error!(
                    provider = i,
                    %violation,
                    evidence = %saved.as_deref().map_or("not saved".into(), |p| p.display().to_string()),
                    "an LSS provider contradicted its own signed log; it is left out"
                );
                Err(format!("provider {i}: {violation}"))
            }
        }
    }

    fn keep(&mut self, i: usize, trusted: Trusted) -> Result<(), QuorumError> {
        let path = checkpoint_path(&self.dir, &self.providers[i].server);
        // Atomic but not synced (no fsync per provider per request): an
        // older checkpoint after a power loss is safe, the provider's next
        // statement must still extend it; only a rollback to between the
        // two would go unseen.
        durable_file::replace_unsynced(&path, &trusted.encode(), 0o600)
            .map_err(|e| QuorumError::Store(format!("{}: {e}", path.display())))?;
        self.providers[i].trusted = Some(trusted);
        Ok(())
    }

    fn save_evidence(&self, server: &[u8; 33], json: &str) -> Option<PathBuf> {
        let dir = self.dir.join("lss-evidence");
        let digest = hex::encode(&Sha256::digest(json.as_bytes())[..8]);
        let path = dir.join(format!("{}-{digest}.json", hex::encode(&server[..8])));
        let written = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                durable_file::replace(&path, json.as_bytes(), 0o644).map_err(|e| e.to_string())
            });
        match written {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::error!(error = %e, "cannot save LSS evidence");
                None
            }
        }
    }
}

fn checkpoint_path(dir: &Path, server: &[u8; 33]) -> PathBuf {
    dir.join("lss-checkpoints").join(hex::encode(server))
}

fn seen_of(trusted: &Trusted) -> Seen {
    let seen = trusted.seen();
    Seen {
        size: seen.size,
        note: seen.note,
    }
}

fn muts_of(kvs: &[KeyValue]) -> Muts {
    kvs.iter()
        .map(|kv| (kv.key.clone(), (kv.version as u64, kv.value.clone())))
        .collect()
}

fn leaf(kv: &KeyValue) -> StateLeaf {
    StateLeaf::of(&kv.key, kv.version, &kv.value)
}
