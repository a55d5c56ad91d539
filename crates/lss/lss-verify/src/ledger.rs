//! The server's side: one namespace's log and state tree, and the rules for
//! keeping them in the namespace itself so that every backend commits them
//! atomically with the put they record.
//!
//! The log lives under reserved keys (never shown to clients, never
//! writable by them):
//! - `"\0lightkeeper/head"`: version `size − 1`, value the log's compact
//!   range. Every logged put writes it with the next version, so the store's
//!   own version check serialises logged puts, across processes too;
//! - `"\0lightkeeper/log/<slot>"` for `slot = seq mod RING` (version
//!   `seq / RING`): the entry and the compact range before it. A ring
//!   bounds the log's storage per namespace (about 1,024 × 450 bytes) and is
//!   exactly what a bundle may need ([`crate::bundle::MAX_ENTRIES`]).

use std::collections::VecDeque;

use lss_core::KeyValue;
use tlog_core::merkle::CompactRange;
use tlog_core::wire::{Reader, Writer};

use crate::bundle::{Answer, Bundle, MAX_ENTRIES};
use crate::entry::{answer_digest, writes_digest, Entry};
use crate::state::{StateLeaf, StateTree};
use crate::statement::{Seen, Statement};

/// Keys with this prefix belong to the log.
pub const RESERVED_PREFIX: &str = "\u{0}lightkeeper/";
/// The log's head.
pub const HEAD_KEY: &str = "\u{0}lightkeeper/head";
/// The ring's keys.
pub const RING_PREFIX: &str = "\u{0}lightkeeper/log/";
/// Ring slots.
pub const RING: u64 = MAX_ENTRIES as u64;
/// Entries kept in memory (older ones are read from the ring).
const RECENT: usize = 32;

/// How many reserved keys a namespace holds after `puts` logged puts (the
/// head and the ring slots used), for tools that count stored entries.
pub fn log_key_count(puts: u64) -> u64 {
    if puts == 0 {
        0
    } else {
        1 + puts.min(RING)
    }
}

/// Whether `key` is the log's.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

fn ring_key(seq: u64) -> String {
    format!("{RING_PREFIX}{:04x}", seq % RING)
}

/// Why stored log keys do not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the namespace's log is corrupt: {0}")]
pub struct LedgerError(pub String);

fn corrupt(what: impl std::fmt::Display) -> LedgerError {
    LedgerError(what.to_string())
}

fn encode_range(range: &CompactRange) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(range.size());
    w.proof(range.hashes());
    w.into_inner()
}

fn read_range(r: &mut Reader<'_>) -> Result<CompactRange, LedgerError> {
    let size = r.u64().map_err(corrupt)?;
    let hashes = r.proof(64).map_err(corrupt)?;
    CompactRange::from_parts(size, hashes).map_err(corrupt)
}

/// One ring slot: an entry and the log's range before it.
#[derive(Debug, Clone)]
struct Slot {
    entry: Entry,
    before: CompactRange,
}

impl Slot {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = self.entry.encode();
        bytes.extend(encode_range(&self.before));
        bytes
    }

    fn decode(value: &[u8]) -> Result<Self, LedgerError> {
        let mut r = Reader::new(value);
        let entry = Entry::read(&mut r).map_err(corrupt)?;
        let before = read_range(&mut r)?;
        r.end().map_err(corrupt)?;
        if before.size() != entry.seq || before.root() != entry.prev_root {
            return Err(corrupt(
                "a ring slot's range is not the one before its entry",
            ));
        }
        Ok(Slot { entry, before })
    }
}

/// A namespace's log and state, as the server holds it between requests.
#[derive(Debug, Clone)]
pub struct NamespaceLog {
    tree: StateTree,
    range: CompactRange,
    recent: VecDeque<Slot>,
    diverged: bool,
}

/// A put's log entry, ready to commit with it.
#[derive(Debug)]
pub struct Prepared {
    /// The reserved kvs to write in the same put (head and ring slot).
    pub extra: Vec<KeyValue>,
    entry: Entry,
    written: Vec<StateLeaf>,
}

impl NamespaceLog {
    /// From every kv of the namespace (reserved ones included), in key order.
    pub fn load(kvs: &[KeyValue]) -> Result<Self, LedgerError> {
        let mut leaves = Vec::with_capacity(kvs.len());
        let mut head: Option<&KeyValue> = None;
        let mut slots = Vec::new();
        for kv in kvs {
            if kv.key == HEAD_KEY {
                head = Some(kv);
            } else if kv.key.starts_with(RING_PREFIX) {
                slots.push(kv);
            } else if !is_reserved(&kv.key) {
                leaves.push(StateLeaf::of(&kv.key, kv.version, &kv.value));
            }
        }
        let tree = StateTree::from_sorted(leaves).map_err(corrupt)?;
        let range = match head {
            None => CompactRange::new(),
            Some(kv) => {
                let mut r = Reader::new(&kv.value);
                let range = read_range(&mut r)?;
                r.end().map_err(corrupt)?;
                if range.size() == 0 || kv.version != range.size() as i64 - 1 {
                    return Err(corrupt("the head's version is not its size − 1"));
                }
                range
            }
        };
        let size = range.size();
        let mut recent: Vec<Slot> = Vec::new();
        for kv in slots {
            let slot = Slot::decode(&kv.value)?;
            let seq = slot.entry.seq;
            if ring_key(seq) != kv.key || kv.version as u64 != seq / RING {
                return Err(corrupt(
                    "a ring slot is not where its sequence number puts it",
                ));
            }
            if seq < size && size - seq <= RECENT as u64 {
                recent.push(slot);
            }
        }
        recent.sort_by_key(|s| s.entry.seq);
        let mut log = NamespaceLog {
            tree,
            range,
            recent: recent.into(),
            diverged: false,
        };
        if size > 0 {
            let last = log
                .recent
                .back()
                .filter(|s| s.entry.seq == size - 1)
                .ok_or_else(|| corrupt("the last entry is missing"))?;
            let mut check = last.before.clone();
            check.push(last.entry.leaf());
            if check != log.range {
                return Err(corrupt("the last entry does not lead to the head"));
            }
            log.diverged = (last.entry.state_count, last.entry.state_root)
                != (log.tree.count(), log.tree.root());
        }
        Ok(log)
    }

    /// Approximate heap bytes this log holds (for a cache's budget).
    pub fn memory(&self) -> usize {
        self.tree.memory() + self.recent.len() * (crate::entry::ENTRY_LEN + 64 * 32)
    }

    /// Log size.
    pub fn size(&self) -> u64 {
        self.range.size()
    }

    /// True when the stored state is not the state the last entry records:
    /// the data changed without the log (restored, edited or damaged).
    /// The server still signs what it holds; clients will see the
    /// contradiction.
    pub fn diverged(&self) -> bool {
        self.diverged
    }

    /// The version the store holds for `key`, as this log knows it.
    pub fn version(&self, key: &str) -> Option<i64> {
        self.tree.version(key)
    }

    /// Records `kvs` (a valid put, already checked against the versions)
    /// in the state tree and returns the log keys to commit with it. If the
    /// commit fails, drop this log and load it again.
    pub fn prepare(&mut self, kvs: &[KeyValue]) -> Prepared {
        let written: Vec<StateLeaf> = kvs
            .iter()
            .map(|kv| StateLeaf::of(&kv.key, kv.version, &kv.value))
            .collect();
        for leaf in &written {
            self.tree.upsert(leaf);
        }
        let seq = self.range.size();
        let entry = Entry {
            seq,
            prev_root: self.range.root(),
            writes: writes_digest(&written),
            state_count: self.tree.count(),
            state_root: self.tree.root(),
        };
        let slot = Slot {
            entry,
            before: self.range.clone(),
        };
        let mut after = self.range.clone();
        after.push(entry.leaf());
        let extra = vec![
            KeyValue {
                key: HEAD_KEY.to_owned(),
                version: seq as i64,
                value: encode_range(&after),
            },
            KeyValue {
                key: ring_key(seq),
                version: (seq / RING) as i64,
                value: slot.encode(),
            },
        ];
        Prepared {
            extra,
            entry,
            written,
        }
    }

    /// The put committed: append its entry.
    pub fn commit(&mut self, prepared: Prepared) {
        let Prepared { entry, .. } = prepared;
        self.recent.push_back(Slot {
            entry,
            before: self.range.clone(),
        });
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        self.range.push(entry.leaf());
        self.diverged = false;
    }

    /// The index the bundle for `seen` starts at.
    pub fn bundle_start(&self, seen: Option<Seen>) -> u64 {
        let size = self.size();
        if size == 0 {
            return 0;
        }
        let last = size - 1;
        match seen {
            Some(s) if s.size <= last && last - s.size < MAX_ENTRIES as u64 => s.size,
            _ => last,
        }
    }

    /// Whether [`NamespaceLog::attest`] needs the ring read from the store
    /// to start at `from`.
    pub fn needs_ring(&self, from: u64) -> bool {
        from < self.size() && self.recent.front().is_none_or(|s| s.entry.seq > from)
    }

    /// Signs the namespace's current checkpoint with its bundle. `ring` is
    /// the ring's kvs when [`NamespaceLog::needs_ring`] said so; `answer`
    /// the prefix and entries of a read. Returns (note, bundle).
    pub fn attest(
        &self,
        key: &lss_core::ServerKey,
        client: &[u8; 33],
        seen: Option<Seen>,
        nonce: Option<Vec<u8>>,
        answer: Option<(&str, &[KeyValue])>,
        ring: Option<&[KeyValue]>,
    ) -> Result<(Vec<u8>, Vec<u8>), LedgerError> {
        let from = self.bundle_start(seen);
        let slots: Vec<Slot> = if self.needs_ring(from) {
            let mut slots: Vec<Slot> = ring
                .unwrap_or_default()
                .iter()
                .filter(|kv| kv.key.starts_with(RING_PREFIX))
                .map(|kv| Slot::decode(&kv.value))
                .collect::<Result<_, _>>()?;
            slots.retain(|s| s.entry.seq >= from && s.entry.seq < self.size());
            slots.sort_by_key(|s| s.entry.seq);
            slots
        } else {
            self.recent
                .iter()
                .filter(|s| s.entry.seq >= from)
                .cloned()
                .collect()
        };
        let start = match slots.first() {
            Some(s) if s.entry.seq == from => s.before.clone(),
            None if self.size() == 0 => CompactRange::new(),
            _ => return Err(corrupt("the ring lacks an entry a bundle needs")),
        };
        let answer = answer.map(|(prefix, kvs)| {
            let leaves: Vec<StateLeaf> = kvs
                .iter()
                .map(|kv| StateLeaf::of(&kv.key, kv.version, &kv.value))
                .collect();
            Answer {
                prefix: prefix.to_owned(),
                digest: answer_digest(&leaves),
                proof: self.tree.prefix_proof(prefix).1,
            }
        });
        let bundle = Bundle {
            from: start,
            entries: slots.iter().map(|s| s.entry).collect(),
            answer,
        }
        .encode();
        let statement = Statement {
            client: *client,
            size: self.size(),
            root: self.range.root(),
            state_count: self.tree.count(),
            state_root: self.tree.root(),
            bundle: sha2::Digest::finalize(sha2::Digest::chain_update(
                sha2::Sha256::default(),
                &bundle,
            ))
            .into(),
            seen,
            nonce,
        };
        Ok((statement.sign(key), bundle))
    }

    /// The leaves of a put, for the client's receipt check.
    pub fn written(prepared: &Prepared) -> &[StateLeaf] {
        &prepared.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{check, Expect, Rejected, Violation};
    use lss_core::ServerKey;

    fn key() -> ServerKey {
        ServerKey::from_hex(&"11".repeat(32)).unwrap()
    }

    fn kv(key: &str, version: i64, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            version,
            value: value.into(),
        }
    }

    /// A namespace as a store would hold it: client kvs and log kvs.
    #[derive(Default)]
    struct Ns(std::collections::BTreeMap<String, KeyValue>);

    impl Ns {
        fn put(&mut self, log: &mut NamespaceLog, kvs: &[KeyValue]) {
            let prepared = log.prepare(kvs);
            for kv in kvs.iter().chain(&prepared.extra) {
                self.0.insert(kv.key.clone(), kv.clone());
            }
            log.commit(prepared);
        }
        fn all(&self) -> Vec<KeyValue> {
            self.0.values().cloned().collect()
        }
        fn prefix(&self, p: &str) -> Vec<KeyValue> {
            self.0
                .values()
                .filter(|kv| kv.key.starts_with(p) && !is_reserved(&kv.key))
                .cloned()
                .collect()
        }
    }

    fn leaves(kvs: &[KeyValue]) -> Vec<StateLeaf> {
        kvs.iter()
            .map(|kv| StateLeaf::of(&kv.key, kv.version, &kv.value))
            .collect()
    }

    #[test]
    fn a_client_follows_puts_and_reads_and_catches_a_rollback() {
        let (key, client) = (key(), [2u8; 33]);
        let id = key.server_id();
        let mut ns = Ns::default();
        let mut log = NamespaceLog::load(&[]).unwrap();
        let mut trusted: Option<crate::Trusted> = None;
        let mut snapshot = None;
        for i in 0..(RING + 40) {
            let k = format!("k{}", i % 7);
            let v = log.version(&k).map_or(0, |v| v + 1);
            let put = [kv(&k, v, &format!("v{i}"))];
            ns.put(&mut log, &put);
            let seen = trusted.as_ref().map(|t| t.seen());
            let (note, bundle) = log.attest(&key, &client, seen, None, None, None).unwrap();
            let t = check(
                &id,
                &client,
                trusted.as_ref(),
                &note,
                &bundle,
                Expect::Put {
                    written: &leaves(&put),
                },
            )
            .unwrap();
            trusted = Some(t);
            if i == 5 {
                snapshot = Some(ns.all());
            }
        }
        // A reload from the store gives the same log.
        let reloaded = NamespaceLog::load(&ns.all()).unwrap();
        assert_eq!(reloaded.size(), log.size());
        assert!(!reloaded.diverged());
        let answer = ns.prefix("k");
        let (note, bundle) = reloaded
            .attest(
                &key,
                &client,
                trusted.as_ref().map(|t| t.seen()),
                Some(b"n".to_vec()),
                Some(("k", &answer)),
                None,
            )
            .unwrap();
        check(
            &id,
            &client,
            trusted.as_ref(),
            &note,
            &bundle,
            Expect::Read {
                prefix: "k",
                nonce: b"n",
                answer: &leaves(&answer),
            },
        )
        .unwrap();
        // Leaving a key out is a provable false answer.
        let short = &answer[1..];
        let (note, bundle) = reloaded
            .attest(
                &key,
                &client,
                trusted.as_ref().map(|t| t.seen()),
                Some(b"n".to_vec()),
                Some(("k", short)),
                None,
            )
            .unwrap();
        let got = check(
            &id,
            &client,
            trusted.as_ref(),
            &note,
            &bundle,
            Expect::Read {
                prefix: "k",
                nonce: b"n",
                answer: &leaves(short),
            },
        );
        assert!(
            matches!(got, Err(Rejected::Violation(Violation::FalseAnswer(_)))),
            "{got:?}"
        );
        // The provider restores an old snapshot: a signed rollback.
        let old = NamespaceLog::load(&snapshot.unwrap()).unwrap();
        let (note, bundle) = old
            .attest(
                &key,
                &client,
                trusted.as_ref().map(|t| t.seen()),
                None,
                None,
                None,
            )
            .unwrap();
        let got = check(
            &id,
            &client,
            trusted.as_ref(),
            &note,
            &bundle,
            Expect::Put { written: &[] },
        );
        assert!(
            matches!(got, Err(Rejected::Violation(Violation::Rollback { .. }))),
            "{got:?}"
        );
        let evidence = crate::Evidence::new(
            &id,
            &Violation::Rollback {
                earlier: 0,
                later: 0,
            },
            trusted.as_ref(),
            &note,
            &bundle,
            None,
        );
        let (_, proven) = crate::Evidence::verify(evidence.to_json().as_bytes()).unwrap();
        assert!(matches!(proven, Violation::Rollback { .. }));
    }

    #[test]
    fn a_client_far_behind_is_served_from_the_ring() {
        let (key, client) = (key(), [3u8; 33]);
        let id = key.server_id();
        let mut ns = Ns::default();
        let mut log = NamespaceLog::load(&[]).unwrap();
        ns.put(&mut log, &[kv("a", 0, "x")]);
        let (note, bundle) = log.attest(&key, &client, None, None, None, None).unwrap();
        let t = check(
            &id,
            &client,
            None,
            &note,
            &bundle,
            Expect::Put {
                written: &leaves(&[kv("a", 0, "x")]),
            },
        )
        .unwrap();
        for v in 1..200 {
            ns.put(&mut log, &[kv("a", v, "y")]);
        }
        let from = log.bundle_start(Some(t.seen()));
        assert_eq!(from, 1);
        assert!(log.needs_ring(from));
        assert!(log
            .attest(&key, &client, Some(t.seen()), None, None, None)
            .is_err());
        let ring = ns.all();
        let (note, bundle) = log
            .attest(&key, &client, Some(t.seen()), None, None, Some(&ring))
            .unwrap();
        check(
            &id,
            &client,
            Some(&t),
            &note,
            &bundle,
            Expect::Put {
                written: &leaves(&[kv("a", 199, "y")]),
            },
        )
        .unwrap();
    }

    #[test]
    fn editing_the_store_under_the_log_is_seen() {
        let mut ns = Ns::default();
        let mut log = NamespaceLog::load(&[]).unwrap();
        ns.put(&mut log, &[kv("a", 0, "x"), kv("b", 0, "y")]);
        ns.0.remove("b");
        assert!(NamespaceLog::load(&ns.all()).unwrap().diverged());
        let mut bad = ns.all();
        for kv in &mut bad {
            if kv.key == HEAD_KEY {
                kv.version += 1;
            }
        }
        assert!(NamespaceLog::load(&bad).is_err());
    }
}
