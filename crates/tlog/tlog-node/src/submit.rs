//! Submitting a log's checkpoints to its witnesses (tlog.md §5.2) and the
//! publish policy (§6.3 step 5): after a checkpoint is stored, each
//! configured witness gets `add-checkpoint` with the size it last cosigned
//! and the proof from there, in parallel, each within `TIMEOUT`; a 409
//! naming a size this log has is adopted and retried once. Cosignatures
//! that verify under the witness's key are merged into the stored note, and
//! the note is published only when `quorum` witnesses cosigned it.
//!
//! A witness that holds a note of this log's key that the store lacks
//! (larger, or another tree) proves the store lost signed history: the log
//! freezes. An idle log resubmits its latest checkpoint every
//! `republish` so cosignature timestamps stay fresh for clients' `max_age`.

use std::sync::Mutex;
use std::time::Duration;

use tlog_core::merkle::Hash;
use tlog_core::note::{b64encode, Note, SignatureLine, VerifierKey};

/// How long one witness may take.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// A witness this log submits to.
pub struct WitnessTarget {
    /// Its cosignature key.
    pub key: VerifierKey,
    /// Its submission prefix (`…/add-checkpoint` is appended).
    pub url: String,
    /// The size it last cosigned for us (0 at first).
    last: Mutex<u64>,
}

impl WitnessTarget {
    /// A witness at `url` with `key`.
    pub fn new(key: VerifierKey, url: String) -> Self {
        WitnessTarget {
            key,
            url,
            last: Mutex::new(0),
        }
    }

    fn last(&self) -> u64 {
        self.last.lock().map(|l| *l).unwrap_or(0)
    }

    fn set_last(&self, size: u64) {
        if let Ok(mut l) = self.last.lock() {
            *l = size;
        }
    }
}

/// Who must cosign before a checkpoint is published.
pub struct Publish {
    /// The witnesses.
    pub witnesses: Vec<WitnessTarget>,
    /// How many of them (0: publish once stored).
    pub quorum: usize,
    /// How long an idle log waits before resubmitting its latest
    /// checkpoint to refresh the cosignatures' timestamps.
    pub republish: Duration,
    /// Federation cosigners (tlog.md §5.3: mirror or validating cosigners
    /// of the peers), whose cosignatures reach the log over LKTL/1.
    pub cosigners: Vec<VerifierKey>,
    /// How many of them must cosign before a checkpoint is published (0:
    /// none). Until then peers get the signed checkpoint (to verify,
    /// store and cosign it) and HTTP clients keep the previous one.
    pub cosigner_quorum: usize,
}

impl Publish {
    /// Whether a note carries the cosignatures this policy needs
    /// (tlog.md §6.3 step 5). Lines are counted by key name and ID; the
    /// caller stores only verified lines.
    pub fn is_met(&self, note: &Note) -> bool {
        let count = |keys: &mut dyn Iterator<Item = &VerifierKey>| {
            keys.filter(|k| {
                note.signatures()
                    .iter()
                    .any(|l| l.name == k.name() && l.id == k.id())
            })
            .count()
        };
        count(&mut self.witnesses.iter().map(|w| &w.key)) >= self.quorum
            && count(&mut self.cosigners.iter()) >= self.cosigner_quorum
    }
}

/// Why `--submit-to` targets or a quorum are refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not `<vkey>@<url>`.
    #[error("--submit-to {0:?} must be <witness vkey>@<url prefix>")]
    Syntax(String),
    /// The vkey does not parse.
    #[error("--submit-to {target:?}: {problem}")]
    Key {
        /// The target.
        target: String,
        /// What is wrong with its key.
        problem: String,
    },
    /// More required than given.
    #[error("--publish-quorum {quorum} is more than the {count} witnesses given")]
    Quorum {
        /// Asked.
        quorum: usize,
        /// Given.
        count: usize,
    },
}

/// The witnesses of `--submit-to <witness vkey>@<url prefix>` (each
/// daemon's flag of that name) and how many must cosign (default: all).
pub fn witness_targets(
    targets: &[String],
    quorum: Option<usize>,
) -> Result<(Vec<WitnessTarget>, usize), TargetError> {
    let mut witnesses = Vec::with_capacity(targets.len());
    for target in targets {
        let (key, url) = target
            .split_once('@')
            .ok_or_else(|| TargetError::Syntax(target.clone()))?;
        let key = VerifierKey::parse(key).map_err(|e| TargetError::Key {
            target: target.clone(),
            problem: e.to_string(),
        })?;
        witnesses.push(WitnessTarget::new(key, url.to_string()));
    }
    let quorum = quorum.unwrap_or(witnesses.len());
    if quorum > witnesses.len() {
        return Err(TargetError::Quorum {
            quorum,
            count: witnesses.len(),
        });
    }
    Ok((witnesses, quorum))
}

/// tlog.md §5.2's `republish_interval`.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(600);

impl Default for Publish {
    fn default() -> Self {
        Publish {
            witnesses: Vec::new(),
            quorum: 0,
            republish: REPUBLISH_INTERVAL,
            cosigners: Vec::new(),
            cosigner_quorum: 0,
        }
    }
}

/// What one witness answered.
enum Answer {
    Cosigned(SignatureLine),
    /// 409: the size it holds.
    Holds(u64),
    /// 422: refused as inconsistent.
    Inconsistent(String),
    Refused(String),
}

fn body(old: u64, proof: &[Hash], note: &[u8]) -> Vec<u8> {
    let mut out = format!("old {old}\n").into_bytes();
    for h in proof {
        out.extend_from_slice(b64encode(h).as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(note);
    out
}

/// One submission, blocking (run on the blocking pool).
fn post(key: &VerifierKey, base: &str, text: &str, body: Vec<u8>) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    let url = format!("{}/add-checkpoint", base.trim_end_matches('/'));
    let mut response = match agent.post(&url).send(&body[..]) {
        Ok(r) => r,
        Err(e) => return Answer::Refused(format!("{url}: {e}")),
    };
    let status = response.status().as_u16();
    let reply = response.body_mut().read_to_string().unwrap_or_default();
    match status {
        200 => {
            // A cosignature line of this witness over our text, or nothing.
            let note = format!("{text}\n{reply}");
            let line = Note::parse(note.as_bytes()).ok().and_then(|n| {
                n.signatures()
                    .iter()
                    .find(|l| key.verify_line(text, l))
                    .cloned()
            });
            match line {
                Some(line) => Answer::Cosigned(line),
                None => Answer::Refused(format!("{url}: 200 without a valid cosignature")),
            }
        }
        422 => Answer::Inconsistent(reply.trim().to_string()),
        409 => match reply.trim().parse() {
            Ok(size) => Answer::Holds(size),
            Err(_) => Answer::Refused(format!("{url}: 409 without a size")),
        },
        other => Answer::Refused(format!("{url}: {other} {}", reply.trim())),
    }
}

/// What submitting a checkpoint to the witnesses came to.
pub enum Submitted {
    /// The cosignature lines that verified.
    Cosigned(Vec<SignatureLine>),
    /// A witness holds a note signed by this log's key that the store does
    /// not have (larger, or another tree): signed history was lost. The
    /// caller freezes the log (tlog.md §5.2).
    LostHistory(String),
}

fn submit(
    target: &WitnessTarget,
    text: &str,
    note: &[u8],
    old: u64,
    proof: &[Hash],
) -> tokio::task::JoinHandle<Answer> {
    let request = body(old, proof, note);
    let (key, url, text) = (target.key.clone(), target.url.clone(), text.to_string());
    tokio::task::spawn_blocking(move || post(&key, &url, &text, request))
}

async fn answer(task: tokio::task::JoinHandle<Answer>) -> Answer {
    task.await
        .unwrap_or_else(|e| Answer::Refused(format!("submission task: {e}")))
}

/// Submits `note` (of `size`) to every witness in parallel. A 409 naming a
/// size this log has (not the one sent) is adopted and retried once. A 409
/// naming a larger size or the size sent, or any 422, makes the log fetch
/// the witness's monitoring checkpoint: a note of this log's key that the
/// store does not hold means lost history; anything else marks the witness
/// faulty for this round (an unsigned claim never freezes a log).
pub async fn cosign<S: tlog_store::LogStore>(
    node: &crate::LogNode<S>,
    log_key: &VerifierKey,
    note: &Note,
    size: u64,
) -> Submitted {
    let publish = node.publisher();
    let text = note.text().to_string();
    let bytes = note.to_bytes();
    let (store, log) = (node.store(), node.log_id());
    let mut pending = Vec::new();
    for target in &publish.witnesses {
        let old = target.last().min(size);
        let Ok(proof) = store.consistency_proof(log, old, size).await else {
            continue;
        };
        pending.push((target, old, submit(target, &text, &bytes, old, &proof)));
    }
    let mut lines = Vec::new();
    for (target, old, task) in pending {
        let mut got = answer(task).await;
        if let Answer::Holds(held) = got {
            if held <= size && held != old {
                if let Ok(proof) = store.consistency_proof(log, held, size).await {
                    target.set_last(held);
                    got = answer(submit(target, &text, &bytes, held, &proof)).await;
                }
            }
        }
        match got {
            Answer::Cosigned(line) => {
                target.set_last(size);
                lines.push(line);
            }
            Answer::Holds(_) | Answer::Inconsistent(_) => {
                if let Answer::Inconsistent(why) = &got {
                    tracing::info!(witness = %target.key.name(), %why,
                        "refused as inconsistent; fetching what the witness holds");
                }
                if let Some(why) = investigate(node, log_key, target).await {
                    return Submitted::LostHistory(why);
                }
            }
            Answer::Refused(why) => {
                tracing::warn!(witness = %target.key.name(), %why, "witness did not cosign");
            }
        }
    }
    Submitted::Cosigned(lines)
}

/// A witness refused as inconsistent: what does it hold?
async fn investigate<S: tlog_store::LogStore>(
    node: &crate::LogNode<S>,
    log_key: &VerifierKey,
    target: &WitnessTarget,
) -> Option<String> {
    let name = target.key.name().to_string();
    let url = format!(
        "{}/{}/checkpoint",
        target.url.trim_end_matches('/'),
        crate::hex(&node.log_id())
    );
    let fetched = tokio::task::spawn_blocking(move || fetch(&url))
        .await
        .ok()
        .flatten();
    let held = fetched.and_then(|bytes| {
        let note = Note::parse(&bytes)
            .ok()?
            .verify(std::slice::from_ref(log_key))
            .ok()?;
        let checkpoint = tlog_core::Checkpoint::parse(note.text()).ok()?;
        (checkpoint.origin == node.origin()).then_some((note, checkpoint))
    });
    let Some((note, checkpoint)) = held else {
        tracing::warn!(witness = %name,
            "the witness refused our checkpoint and shows no note of this log's: faulty, skipped");
        return None;
    };
    let tree = node.store().state(node.log_id()).await.ok()?.size;
    if checkpoint.size > tree {
        return Some(format!(
            "witness {name} holds a checkpoint of size {} signed by this log's key; the store has {tree}: {}",
            checkpoint.size,
            b64encode(&note.to_bytes())
        ));
    }
    let ours = node.root_at(checkpoint.size).await.ok()?;
    if ours != checkpoint.root {
        if let Ok(Some(evidence)) = node.evidence_against(log_key, &note, &checkpoint).await {
            let _ = node
                .store()
                .put_evidence(node.log_id(), crate::now_secs(), evidence)
                .await;
        }
        return Some(format!(
            "witness {name} holds a checkpoint of size {} signed by this log's key with another root",
            checkpoint.size
        ));
    }
    tracing::warn!(witness = %name, size = checkpoint.size,
        "the witness refused a consistent checkpoint: faulty, skipped this round");
    None
}

/// GET of a monitoring checkpoint, blocking.
fn fetch(url: &str) -> Option<Vec<u8>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    let mut response = agent.get(url).call().ok()?;
    response.body_mut().read_to_vec().ok()
}
