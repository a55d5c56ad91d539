//! Client policies (C2SP tlog-policy, tlog.md §5.4): which log keys sign a
//! checkpoint, which witnesses cosign it, and how many must, as a quorum of
//! groups; plus cosignature freshness.
//!
//! ```text
//! log <vkey> [url]                      several during a key rotation
//! witness <name> <vkey> [url]
//! group <name> <k|all|any> <members…>   members: witnesses or earlier groups
//! quorum <name|none>                    exactly one
//! ```

use std::collections::{HashMap, HashSet};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::cosignature::MAX_FUTURE;
use crate::note::{KeyType, Note, NoteError, VerifierKey};

/// Why a policy file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy line {line}: {why}")]
pub struct PolicyError {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

/// Why a checkpoint is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a signed note, or a configured key's line fails.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The note text is not a checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Not enough valid cosignatures.
    #[error("the witness quorum is not met")]
    PolicyNotMet,
    /// The quorum is met only by cosignatures older than `max_age`.
    #[error("the witness quorum is met only by cosignatures {age} s old (max age {max_age} s)")]
    Stale {
        /// Age of the youngest cosignature that would be needed.
        age: u64,
        /// The limit.
        max_age: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    Witness(usize),
    Group(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    threshold: usize,
    members: Vec<Member>,
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    logs: Vec<VerifierKey>,
    witnesses: Vec<(String, VerifierKey)>,
    groups: Vec<Group>,
    quorum: Option<Member>,
    max_age: Option<u64>,
}

/// An accepted checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The note with only verified signature lines (log first).
    pub note: Note,
    /// Its body.
    pub checkpoint: Checkpoint,
}

impl Policy {
    /// A policy of one log key and no witnesses (`quorum none`).
    pub fn single(log: VerifierKey) -> Policy {
        Policy {
            logs: vec![log],
            witnesses: Vec::new(),
            groups: Vec::new(),
            quorum: None,
            max_age: None,
        }
    }

    /// Parses a policy file.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let mut logs = Vec::new();
        let mut witnesses: Vec<(String, VerifierKey)> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut names: HashMap<String, Member> = HashMap::new();
        let mut quorum: Option<Option<Member>> = None;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let err = |why: &str| PolicyError {
                line: n,
                why: why.to_string(),
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[0] {
                "log" => {
                    if !(2..=3).contains(&words.len()) {
                        return Err(err("log takes a vkey and an optional URL"));
                    }
                    let key = VerifierKey::parse(words[1]).map_err(|e| err(&e.to_string()))?;
                    if key.key_type() != KeyType::Ed25519 {
                        return Err(err("a log key must be of type 0x01 (Ed25519)"));
                    }
                    logs.push(key);
                }
                "witness" => {
                    if !(3..=4).contains(&words.len()) {
                        return Err(err("witness takes a name, a vkey and an optional URL"));
                    }
                    if names.contains_key(words[1]) {
                        return Err(err("name defined twice"));
                    }
                    let key = VerifierKey::parse(words[2]).map_err(|e| err(&e.to_string()))?;
                    if key.key_type() != KeyType::Cosignature {
                        return Err(err("a witness key must be of type 0x04 (cosignature)"));
                    }
                    names.insert(words[1].to_string(), Member::Witness(witnesses.len()));
                    witnesses.push((words[1].to_string(), key));
                }
                "group" => {
                    if words.len() < 4 {
                        return Err(err("group takes a name, a threshold and members"));
                    }
                    if names.contains_key(words[1]) {
                        return Err(err("name defined twice"));
                    }
                    let mut members = Vec::new();
                    for name in &words[3..] {
                        let member = names
                            .get(*name)
                            .cloned()
                            .ok_or_else(|| err("member not defined before use"))?;
                        if members.contains(&member) {
                            return Err(err("a member appears twice in a group"));
                        }
                        members.push(member);
                    }
                    let threshold = match words[2] {
                        "all" => members.len(),
                        "any" => 1,
                        k => crate::checkpoint::parse_decimal(k)
                            .filter(|k| (1..=members.len() as u64).contains(k))
                            .ok_or_else(|| err("threshold must be all, any or 1..=members"))?
                            as usize,
                    };
                    names.insert(words[1].to_string(), Member::Group(groups.len()));
                    groups.push(Group { threshold, members });
                }
                "quorum" => {
                    if words.len() != 2 {
                        return Err(err("quorum takes one name"));
                    }
                    if quorum.is_some() {
                        return Err(err("a second quorum line"));
                    }
                    quorum = Some(match words[1] {
                        "none" => None,
                        name => Some(
                            names
                                .get(name)
                                .cloned()
                                .ok_or_else(|| err("quorum names nothing defined"))?,
                        ),
                    });
                }
                _ => return Err(err("unknown keyword")),
            }
        }
        let file = |why: &str| PolicyError {
            line: 0,
            why: why.to_string(),
        };
        if logs.is_empty() {
            return Err(file("no log key"));
        }
        let quorum = quorum.ok_or_else(|| file("no quorum line"))?;
        Ok(Policy {
            logs,
            witnesses,
            groups,
            quorum,
            max_age: None,
        })
    }

    /// Requires the quorum's cosignatures to be at most `secs` old.
    pub fn max_age(mut self, secs: u64) -> Policy {
        self.max_age = Some(secs);
        self
    }

    /// The log keys.
    pub fn log_keys(&self) -> &[VerifierKey] {
        &self.logs
    }

    /// The same policy with other log keys (a key schedule kept in the log).
    pub fn with_log_keys(mut self, keys: Vec<VerifierKey>) -> Policy {
        self.logs = keys;
        self
    }

    /// Whether `note` is acceptable at `now` (Unix seconds).
    pub fn verify(&self, note: &[u8], now: u64) -> Result<Verified, VerifyError> {
        let keys: Vec<VerifierKey> = self
            .logs
            .iter()
            .chain(self.witnesses.iter().map(|(_, k)| k))
            .cloned()
            .collect();
        let note = Note::parse(note)?.verify(&keys)?;
        let checkpoint = Checkpoint::parse(note.text())?;
        let Some(quorum) = &self.quorum else {
            return Ok(Verified { note, checkpoint });
        };
        // Each witness's cosignature time, if it verified and is not from
        // the future; a key shared by two names counts once.
        let mut times: Vec<Option<u64>> = vec![None; self.witnesses.len()];
        let mut seen = HashSet::new();
        for (i, (_, key)) in self.witnesses.iter().enumerate() {
            let line = note
                .signatures()
                .iter()
                .find(|l| l.name == key.name() && l.id == key.id());
            if let Some(time) = line.and_then(|l| l.cosignature_time()) {
                if time <= now.saturating_add(MAX_FUTURE) && seen.insert(*key.key().as_bytes()) {
                    times[i] = Some(time);
                }
            }
        }
        if !self.met(quorum, &times, 0) {
            return Err(VerifyError::PolicyNotMet);
        }
        if let Some(max_age) = self.max_age {
            let oldest = now.saturating_sub(max_age);
            if !self.met(quorum, &times, oldest) {
                // The youngest time that still fails: how stale it is.
                let age = times
                    .iter()
                    .flatten()
                    .map(|t| now.saturating_sub(*t))
                    .min()
                    .unwrap_or(0);
                return Err(VerifyError::Stale { age, max_age });
            }
        }
        Ok(Verified { note, checkpoint })
    }

    fn met(&self, member: &Member, times: &[Option<u64>], oldest: u64) -> bool {
        match member {
            Member::Witness(i) => times
                .get(*i)
                .copied()
                .flatten()
                .is_some_and(|t| t >= oldest),
            Member::Group(g) => self.groups.get(*g).is_some_and(|group| {
                group
                    .members
                    .iter()
                    .filter(|m| self.met(m, times, oldest))
                    .count()
                    >= group.threshold
            }),
        }
    }
}
