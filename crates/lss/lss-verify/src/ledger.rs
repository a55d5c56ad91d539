//! The server's side: one namespace's log and state tree, and the rules for
//! keeping them in the namespace itself so that every backend commits them
//! atomically with the put they record.
//!
//! The log lives under reserved keys (never shown to clients, never
//! writable by them):
//! - `"\0lightkeeper/head"`: version `size − 1`; value the log's compact
//!   range and the *window*: the entries since the last multiple of
//!   [`CHUNK`], with the range where it starts. Every logged put rewrites
//!   it with the next version, so the store's own version check serialises
//!   logged puts, across processes too;
//! - `"\0lightkeeper/log/<slot>"`, one per [`CHUNK`] entries (`slot = chunk
//!   mod RING_CHUNKS`, version `chunk / RING_CHUNKS`): a full window, written
//!   by the put that completes it. The ring bounds the log's storage per
//!   namespace (1,024 entries, about 200 KB) and holds what a bundle may
//!   need ([`crate::bundle::MAX_ENTRIES`]).
//!
//! Why windows and chunks rather than a key per entry: a put then rewrites
//! one small key beside the head instead of inserting a new one elsewhere
//! in the tree; on redb that is one B-tree page less per commit. The
//! compact range at any entry is recomputed from its window's start.

use std::collections::VecDeque;

use lss_core::KeyValue;
use tlog_core::merkle::CompactRange;
use tlog_core::wire::{Reader, Writer};

use crate::bundle::{Answer, Bundle, MAX_ENTRIES};
use crate::entry::{writes_digest, Entry};
use crate::state::{StateLeaf, StateTree};
use crate::statement::{Seen, Statement};

/// Keys with this prefix belong to the log.
pub const RESERVED_PREFIX: &str = "\u{0}lightkeeper/";
/// The log's head.
pub const HEAD_KEY: &str = "\u{0}lightkeeper/head";
/// The ring's keys.
pub const RING_PREFIX: &str = "\u{0}lightkeeper/log/";
/// Entries per stored chunk (and at most in the head's window).
pub const CHUNK: u64 = 4;
/// Chunks in the ring.
pub const RING_CHUNKS: u64 = MAX_ENTRIES as u64 / CHUNK;
/// Complete chunks kept in memory (older ones are read from the ring).
const RECENT_CHUNKS: usize = 4;

/// How many reserved keys a namespace holds after `puts` logged puts (the
/// head and the ring's chunks), for tools that count stored entries.
pub fn log_key_count(puts: u64) -> u64 {
    if puts == 0 {
        0
    } else {
        1 + (puts / CHUNK).min(RING_CHUNKS)
    }
}

/// Whether `key` is the log's.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

fn chunk_key(chunk: u64) -> String {
    format!("{RING_PREFIX}{:04x}", chunk % RING_CHUNKS)
}

/// Why stored log keys do not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the namespace's log is corrupt: {0}")]
pub struct LedgerError(pub String);

fn corrupt(what: impl std::fmt::Display) -> LedgerError {
    LedgerError(what.to_string())
}

fn write_range(w: &mut Writer, range: &CompactRange) {
    w.u64(range.size());
    w.proof(range.hashes());
}

fn read_range(r: &mut Reader<'_>) -> Result<CompactRange, LedgerError> {
    let size = r.u64().map_err(corrupt)?;
    let hashes = r.proof(64).map_err(corrupt)?;
    CompactRange::from_parts(size, hashes).map_err(corrupt)
}

/// Consecutive entries and the log's range before the first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    start: CompactRange,
    entries: Vec<Entry>,
}

impl Window {
    fn empty(start: CompactRange) -> Self {
        Window {
            start,
            entries: Vec::new(),
        }
    }

    fn end(&self) -> u64 {
        self.start.size() + self.entries.len() as u64
    }

    fn write(&self, w: &mut Writer) {
        write_range(w, &self.start);
        w.u8(self.entries.len() as u8);
        for e in &self.entries {
            e.write(w);
        }
    }

    /// Reads a window, checking that its entries chain from its start.
    fn read(r: &mut Reader<'_>) -> Result<Self, LedgerError> {
        let start = read_range(r)?;
        let n = r.u8().map_err(corrupt)? as u64;
        if n > CHUNK || start.size() % CHUNK != 0 {
            return Err(corrupt("a window is not within one chunk"));
        }
        let mut range = start.clone();
        let mut entries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let e = Entry::read(r).map_err(corrupt)?;
            if e.seq != range.size() || e.prev_root != range.root() {
                return Err(corrupt("a window's entries do not chain"));
            }
            range.push(e.leaf());
            entries.push(e);
        }
        Ok(Window { start, entries })
    }

    /// The range after its entries.
    fn range_after(&self) -> CompactRange {
        let mut range = self.start.clone();
        for e in &self.entries {
            range.push(e.leaf());
        }
        range
    }
}

/// A namespace's log and state, as the server holds it between requests.
#[derive(Debug, Clone)]
pub struct NamespaceLog {
    tree: StateTree,
    range: CompactRange,
    /// Entries since the last chunk boundary (stored in the head).
    window: Window,
    /// The last complete chunks, oldest first.
    recent: VecDeque<Window>,
    diverged: bool,
}

/// A put's log entry, ready to commit with it.
#[derive(Debug)]
pub struct Prepared {
    /// The reserved kvs to write in the same put (the head, and the chunk
    /// it completes).
    pub extra: Vec<KeyValue>,
    entry: Entry,
    written: Vec<StateLeaf>,
}

impl NamespaceLog {
    /// From every kv of the namespace (reserved ones included), in key order.
    pub fn load(kvs: &[KeyValue]) -> Result<Self, LedgerError> {
        let mut leaves = Vec::with_capacity(kvs.len());
        let mut head: Option<&KeyValue> = None;
        let mut chunks = Vec::new();
        for kv in kvs {
            if kv.key == HEAD_KEY {
                head = Some(kv);
            } else if kv.key.starts_with(RING_PREFIX) {
                chunks.push(kv);
            } else if !is_reserved(&kv.key) {
                leaves.push(StateLeaf::of(&kv.key, kv.version, &kv.value));
            }
        }
        let tree = StateTree::from_sorted(leaves).map_err(corrupt)?;
        let (range, window) = match head {
            None => (CompactRange::new(), Window::empty(CompactRange::new())),
            Some(kv) => {
                let mut r = Reader::new(&kv.value);
                let range = read_range(&mut r)?;
                let window = Window::read(&mut r)?;
                r.end().map_err(corrupt)?;
                if range.size() == 0 || kv.version != range.size() as i64 - 1 {
                    return Err(corrupt("the head's version is not its size − 1"));
                }
                if window.range_after() != range {
                    return Err(corrupt("the head's window does not lead to its range"));
                }
                (range, window)
            }
        };
        let mut recent: Vec<Window> = Vec::new();
        for kv in chunks {
            let mut r = Reader::new(&kv.value);
            let chunk = Window::read(&mut r)?;
            r.end().map_err(corrupt)?;
            let c = chunk.start.size() / CHUNK;
            if chunk.entries.len() as u64 != CHUNK
                || chunk_key(c) != kv.key
                || kv.version as u64 != c / RING_CHUNKS
            {
                return Err(corrupt("a ring chunk is not where its entries put it"));
            }
            if chunk.end() <= window.start.size()
                && window.start.size() - chunk.end() < RECENT_CHUNKS as u64 * CHUNK
            {
                recent.push(chunk);
            }
        }
        recent.sort_by_key(|c| c.start.size());
        let mut log = NamespaceLog {
            tree,
            range,
            window,
            recent: recent.into(),
            diverged: false,
        };
        if log.size() > 0 {
            let last = log
                .window
                .entries
                .last()
                .or_else(|| log.recent.back().and_then(|c| c.entries.last()))
                .filter(|e| e.seq == log.size() - 1)
                .copied()
                .ok_or_else(|| corrupt("the last entry is missing"))?;
            if log.window.entries.is_empty()
                && log.recent.back().map(Window::range_after) != Some(log.range.clone())
            {
                return Err(corrupt("the last chunk does not lead to the head"));
            }
            log.diverged =
                (last.state_count, last.state_root) != (log.tree.count(), log.tree.root());
        }
        Ok(log)
    }

    /// Approximate heap bytes this log holds (for a cache's budget).
    pub fn memory(&self) -> usize {
        let chunk = CHUNK as usize * crate::entry::ENTRY_LEN + 64 * 32;
        self.tree.memory() + (self.recent.len() + 1) * chunk
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
    /// in the state tree and returns the log keys to commit with it;
    /// `client_sig` is the client's signature of the put, if it sent one
    /// (the caller has checked it: [`crate::entry::verify_put`]). If the
    /// commit fails, drop this log and load it again.
    pub fn prepare(&mut self, kvs: &[KeyValue], client_sig: Option<[u8; 64]>) -> Prepared {
        let written = kvs
            .iter()
            .map(|kv| StateLeaf::of(&kv.key, kv.version, &kv.value))
            .collect();
        self.prepare_leaves(written, client_sig)
    }

    /// [`NamespaceLog::prepare`] with the put's leaves already computed
    /// (`StateLeaf::of` each kv, in order), for a server that needed them
    /// first to check the client's signature: values are hashed once.
    pub fn prepare_leaves(
        &mut self,
        written: Vec<StateLeaf>,
        client_sig: Option<[u8; 64]>,
    ) -> Prepared {
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
            client_sig,
        };
        let mut after = self.range.clone();
        after.push(entry.leaf());
        let mut window = self.window.clone();
        window.entries.push(entry);
        let mut extra = Vec::with_capacity(2);
        let completes = window.entries.len() as u64 == CHUNK;
        let mut head = Writer::default();
        write_range(&mut head, &after);
        if completes {
            Window::empty(after.clone()).write(&mut head);
        } else {
            window.write(&mut head);
        }
        extra.push(KeyValue {
            key: HEAD_KEY.to_owned(),
            version: seq as i64,
            value: head.into_inner(),
        });
        if completes {
            let c = window.start.size() / CHUNK;
            let mut chunk = Writer::default();
            window.write(&mut chunk);
            extra.push(KeyValue {
                key: chunk_key(c),
                version: (c / RING_CHUNKS) as i64,
                value: chunk.into_inner(),
            });
        }
        // Server kvs go in key order.
        extra.sort_by(|a, b| a.key.cmp(&b.key));
        Prepared {
            extra,
            entry,
            written,
        }
    }

    /// The put committed: append its entry.
    pub fn commit(&mut self, prepared: Prepared) {
        let Prepared { entry, .. } = prepared;
        self.range.push(entry.leaf());
        self.window.entries.push(entry);
        if self.window.entries.len() as u64 == CHUNK {
            let full = std::mem::replace(&mut self.window, Window::empty(self.range.clone()));
            self.recent.push_back(full);
            if self.recent.len() > RECENT_CHUNKS {
                self.recent.pop_front();
            }
        }
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
        let first = self
            .recent
            .front()
            .map_or(self.window.start.size(), |c| c.start.size());
        from < first
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
        Ok(self.unsigned(client, seen, nonce, answer, ring)?.sign(key))
    }

    /// [`NamespaceLog::attest`] without the signature, for a server that
    /// signs several at once ([`crate::statement::sign_batch`]).
    pub fn unsigned(
        &self,
        client: &[u8; 33],
        seen: Option<Seen>,
        nonce: Option<Vec<u8>>,
        answer: Option<(&str, &[KeyValue])>,
        ring: Option<&[KeyValue]>,
    ) -> Result<Unsigned, LedgerError> {
        let pending = self.pending(client, seen, nonce, answer.map(|(p, _)| p), ring)?;
        let digest = answer.map(|(_, kvs)| {
            let mut digest = AnswerDigest::default();
            for kv in kvs {
                digest.update(kv);
            }
            digest
        });
        Ok(pending.finish(digest))
    }

    /// Everything a checkpoint states about the log and state as they are
    /// now (with, for a read of `prefix`, the proof that a run of keys is
    /// all of it), to be signed once the answer's digest is known: a reply
    /// streamed from a snapshot taken with this log is signed over exactly
    /// the entries sent, after the log may have moved on.
    pub fn pending(
        &self,
        client: &[u8; 33],
        seen: Option<Seen>,
        nonce: Option<Vec<u8>>,
        prefix: Option<&str>,
        ring: Option<&[KeyValue]>,
    ) -> Result<PendingAttestation, LedgerError> {
        let from = self.bundle_start(seen);
        let stored: Vec<Window>;
        let mut windows: Vec<&Window> = if self.needs_ring(from) {
            let mut chunks = Vec::new();
            for kv in ring.unwrap_or_default() {
                if kv.key.starts_with(RING_PREFIX) {
                    let mut r = Reader::new(&kv.value);
                    chunks.push(Window::read(&mut r)?);
                }
            }
            stored = chunks;
            stored.iter().collect()
        } else {
            self.recent.iter().collect()
        };
        windows.push(&self.window);
        windows.retain(|w| w.end() > from || w.start.size() == self.size());
        windows.sort_by_key(|w| w.start.size());
        // The range at `from` (recomputed from its window's start), then
        // every entry from it to the end.
        let first = windows
            .first()
            .filter(|w| w.start.size() <= from)
            .ok_or_else(|| corrupt("the ring lacks an entry a bundle needs"))?;
        let mut start = first.start.clone();
        let mut entries = Vec::with_capacity((self.size() - from) as usize);
        for w in &windows {
            for e in &w.entries {
                if e.seq < from {
                    start.push(e.leaf());
                } else {
                    entries.push(*e);
                }
            }
        }
        if start.size() != from
            || entries.len() as u64 != self.size() - from
            || entries.iter().zip(from..).any(|(e, seq)| e.seq != seq)
        {
            return Err(corrupt("the stored entries do not cover the bundle"));
        }
        Ok(PendingAttestation {
            from: start,
            entries,
            proof: prefix.map(|p| (p.to_owned(), self.tree.prefix_proof(p).1)),
            statement: Statement {
                client: *client,
                size: self.size(),
                root: self.range.root(),
                state_count: self.tree.count(),
                state_root: self.tree.root(),
                bundle: [0; 32],
                seen,
                nonce,
            },
        })
    }

    /// The leaves of a put, for the client's receipt check.
    pub fn written(prepared: &Prepared) -> &[StateLeaf] {
        &prepared.written
    }
}

/// A checkpoint waiting for its read's answer ([`NamespaceLog::pending`]).
#[derive(Debug, Clone)]
pub struct PendingAttestation {
    from: CompactRange,
    entries: Vec<Entry>,
    proof: Option<(String, crate::state::PrefixProof)>,
    statement: Statement,
}

impl PendingAttestation {
    /// Signs it, with `answer` the digest of the entries sent (a read's;
    /// `None` for a put's receipt). Returns (note, bundle).
    pub fn sign(
        self,
        key: &lss_core::ServerKey,
        answer: Option<AnswerDigest>,
    ) -> (Vec<u8>, Vec<u8>) {
        self.finish(answer).sign(key)
    }

    /// Completes it with `answer`, ready to sign.
    pub fn finish(self, answer: Option<AnswerDigest>) -> Unsigned {
        let answer = match (self.proof, answer) {
            (Some((prefix, proof)), Some(digest)) => Some(Answer {
                prefix,
                digest: digest.finish(),
                proof,
            }),
            _ => None,
        };
        let bundle = Bundle {
            from: self.from,
            entries: self.entries,
            answer,
        }
        .encode();
        let mut statement = self.statement;
        statement.bundle =
            sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), &bundle))
                .into();
        Unsigned { statement, bundle }
    }
}

/// A checkpoint and its bundle, complete but for the signature.
#[derive(Debug, Clone)]
pub struct Unsigned {
    /// What will be signed (its `bundle` line already set).
    pub statement: Statement,
    /// The bundle.
    pub bundle: Vec<u8>,
}

impl Unsigned {
    /// Signs it alone. Returns (note, bundle).
    pub fn sign(self, key: &lss_core::ServerKey) -> (Vec<u8>, Vec<u8>) {
        (self.statement.sign(key), self.bundle)
    }
}

/// [`crate::entry::answer_digest`] computed as the entries go by.
#[derive(Debug, Clone)]
pub struct AnswerDigest(sha2::Sha256);

impl Default for AnswerDigest {
    fn default() -> Self {
        AnswerDigest(sha2::Digest::chain_update(
            sha2::Sha256::default(),
            crate::entry::ANSWER_TAG,
        ))
    }
}

impl AnswerDigest {
    /// The next entry of the answer, in order.
    pub fn update(&mut self, kv: &KeyValue) {
        sha2::Digest::update(
            &mut self.0,
            StateLeaf::of(&kv.key, kv.version, &kv.value).hash(),
        );
    }

    /// The digest.
    pub fn finish(self) -> tlog_core::Hash {
        sha2::Digest::finalize(self.0).into()
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
            let prepared = log.prepare(kvs, None);
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
        for i in 0..(MAX_ENTRIES as u64 + 40) {
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
                    client_sig: None,
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
            Expect::Put {
                written: &[],
                client_sig: None,
            },
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

    /// A streamed read: the checkpoint is taken with the snapshot, the
    /// answer's digest computed as the entries go by, and the result is
    /// what signing the entries at snapshot time gives, even after the log
    /// moved on in between.
    #[test]
    fn a_pending_attestation_signs_what_attest_would_have_at_the_snapshot() {
        let key = key();
        let client = [2u8; 33];
        let mut ns = Ns(Default::default());
        let mut log = NamespaceLog::load(&[]).unwrap();
        ns.put(
            &mut log,
            &[kv("a/1", 0, "x"), kv("a/2", 0, "y"), kv("b", 0, "z")],
        );
        ns.put(&mut log, &[kv("a/2", 1, "w")]);
        for prefix in ["", "a/", "a/2", "b", "c", "a/3"] {
            let answer = ns.prefix(prefix);
            let direct = log
                .attest(
                    &key,
                    &client,
                    None,
                    Some(vec![7; 32]),
                    Some((prefix, &answer)),
                    None,
                )
                .unwrap();
            let mut moving = log.clone();
            let pending = moving
                .pending(&client, None, Some(vec![7; 32]), Some(prefix), None)
                .unwrap();
            let prepared = moving.prepare(&[kv("a/1", 1, "moved on")], None);
            moving.commit(prepared);
            let mut digest = AnswerDigest::default();
            for kv in &answer {
                digest.update(kv);
            }
            assert_eq!(pending.sign(&key, Some(digest)), direct, "{prefix:?}");
        }
    }

    #[test]
    fn a_client_far_behind_is_served_from_the_ring() {
        let (key, client) = (key(), [3u8; 33]);
        let id = key.server_id();
        let mut ns = Ns::default();
        let mut log = NamespaceLog::load(&[]).unwrap();
        for v in 0..301 {
            ns.put(&mut log, &[kv("a", v, "x")]);
        }
        let (note, bundle) = log.attest(&key, &client, None, None, None, None).unwrap();
        let put = |v: i64, value: &str| Expect::Put {
            written: Box::leak(leaves(&[kv("a", v, value)]).into_boxed_slice()),
            client_sig: None,
        };
        let t = check(&id, &client, None, &note, &bundle, put(300, "x")).unwrap();
        // 950 puts later the ring has wrapped; the client's point is still in it.
        for v in 301..1251 {
            ns.put(&mut log, &[kv("a", v, "y")]);
        }
        let from = log.bundle_start(Some(t.seen()));
        assert_eq!(from, 301);
        assert!(log.needs_ring(from));
        assert!(log
            .attest(&key, &client, Some(t.seen()), None, None, None)
            .is_err());
        let ring = ns.all();
        let (note, bundle) = log
            .attest(&key, &client, Some(t.seen()), None, None, Some(&ring))
            .unwrap();
        check(&id, &client, Some(&t), &note, &bundle, put(1250, "y")).unwrap();
        // Reloaded from the store, the same.
        let reloaded = NamespaceLog::load(&ring).unwrap();
        let (note, bundle) = reloaded
            .attest(&key, &client, Some(t.seen()), None, None, Some(&ring))
            .unwrap();
        check(&id, &client, Some(&t), &note, &bundle, put(1250, "y")).unwrap();
        // Further behind than the ring: only the last entry can be shown.
        let gone = Seen {
            size: 100,
            note: [0; 32],
        };
        assert_eq!(log.bundle_start(Some(gone)), log.size() - 1);
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
