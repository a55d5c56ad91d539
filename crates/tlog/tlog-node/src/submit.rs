//! Submitting a log's checkpoints to its witnesses (tlog.md §5.2) and the
//! publish policy (§6.3 step 5): after a checkpoint is stored, each
//! configured witness gets `add-checkpoint` with the size it last cosigned
//! and the proof from there, in parallel, each within `TIMEOUT`; a 409
//! naming a size this log has is adopted and retried once. Cosignatures
//! that verify under the witness's key are merged into the stored note, and
//! the note is published only when `quorum` witnesses cosigned it.
//!
//! Not yet: the freeze rule for a witness holding a larger or inconsistent
//! note signed by this log (it is logged), and refreshing cosignatures of an
//! idle log (`republish_interval`).

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
#[derive(Default)]
pub struct Publish {
    /// The witnesses.
    pub witnesses: Vec<WitnessTarget>,
    /// How many of them (0: publish once stored).
    pub quorum: usize,
}

/// What one witness answered.
enum Answer {
    Cosigned(SignatureLine),
    Holds(u64),
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
        409 => match reply.trim().parse() {
            Ok(size) => Answer::Holds(size),
            Err(_) => Answer::Refused(format!("{url}: 409 without a size")),
        },
        other => Answer::Refused(format!("{url}: {other} {}", reply.trim())),
    }
}

/// Submits `note` (of `size`) to every witness; `proof(old)` gives the
/// consistency proof from `old` to `size`. Returns the cosignature lines
/// that verified.
pub async fn cosign<F, Fut>(
    publish: &Publish,
    note: &Note,
    size: u64,
    proof: F,
) -> Vec<SignatureLine>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Option<Vec<Hash>>>,
{
    let text = note.text().to_string();
    let bytes = note.to_bytes();
    let mut lines = Vec::new();
    for target in &publish.witnesses {
        // Each witness in turn: at most TIMEOUT each (parallel submission
        // is the next step; a federation has a handful).
        let mut old = target.last().min(size);
        for attempt in 0..2 {
            let Some(p) = proof(old).await else { break };
            let request = body(old, &p, &bytes);
            let (key, url, text) = (target.key.clone(), target.url.clone(), text.clone());
            let answer = tokio::task::spawn_blocking(move || post(&key, &url, &text, request))
                .await
                .unwrap_or_else(|e| Answer::Refused(format!("submission task: {e}")));
            match answer {
                Answer::Cosigned(line) => {
                    target.set_last(size);
                    lines.push(line);
                    break;
                }
                Answer::Holds(held) if held <= size && attempt == 0 => old = held,
                Answer::Holds(held) => {
                    tracing::warn!(witness = %target.key.name(), held, size,
                        "the witness holds a size this log does not have: investigate (freeze rule not yet applied)");
                    break;
                }
                Answer::Refused(why) => {
                    tracing::warn!(witness = %target.key.name(), %why, "witness did not cosign");
                    break;
                }
            }
        }
    }
    lines
}
