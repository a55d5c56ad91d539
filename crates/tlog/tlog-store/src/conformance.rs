//! The [`LogStore`] contract as tests, for any backend:
//! `tlog_conformance_tests!(module, async_constructor)` expands to one
//! `#[tokio::test]` per case. The constructor gets a fresh temporary
//! directory (kept alive by the test) and returns a store in it.

use std::future::Future;
use std::sync::Arc;

use tlog_core::merkle::{self, MemoryTree, NodeSource};
use tlog_core::note::{KeyType, Note, SignerKey};
use tlog_core::tile;
use tlog_core::Checkpoint;

use crate::{LogOptions, LogStore, PutCheckpoint, Status, StoreError};

const ORIGIN: &str = "log.example/conformance";

fn entry(i: u64) -> Vec<u8> {
    format!("entry {i}").into_bytes()
}

fn note(tree: &MemoryTree, origin: &str, seed: u8, witness_time: Option<u64>) -> Vec<u8> {
    let key = SignerKey::from_seed(origin, KeyType::Ed25519, &[seed; 32]).expect("key");
    let mut note =
        Note::new(&Checkpoint::new(origin, tree.size(), tree.root()).to_text()).expect("text");
    note.add(key.sign(note.text(), 0));
    if let Some(time) = witness_time {
        let w = SignerKey::from_seed("w.example", KeyType::Cosignature, &[9; 32]).expect("key");
        note.add(w.sign(note.text(), time));
    }
    note.to_bytes()
}

/// Concurrent appends get contiguous indices, in batch order, with their
/// exact bytes; tiles and root equal an in-memory tree's.
pub async fn appends_are_atomic_contiguous_and_exact<S: LogStore>(store: S) {
    let store = Arc::new(store);
    let log = store
        .create_log(ORIGIN, LogOptions::default())
        .await
        .expect("create");
    assert_eq!(
        store.create_log(ORIGIN, LogOptions::default()).await,
        Ok(log),
        "idempotent"
    );
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for b in 0..20u64 {
                let batch: Vec<Vec<u8>> = (0..5).map(|i| entry(t * 1000 + b * 10 + i)).collect();
                let appended = store.append(log, batch.clone()).await.expect("append");
                let first = appended[0].index;
                assert!(appended
                    .iter()
                    .enumerate()
                    .all(|(i, a)| a.index == first + i as u64 && !a.duplicate));
                got.push((first, batch));
            }
            got
        }));
    }
    let mut by_index = std::collections::BTreeMap::new();
    for task in tasks {
        for (first, batch) in task.await.expect("task") {
            for (i, e) in batch.into_iter().enumerate() {
                assert!(
                    by_index.insert(first + i as u64, e).is_none(),
                    "index given twice"
                );
            }
        }
    }
    let state = store.state(log).await.expect("state");
    assert_eq!(state.size, 1600);
    assert_eq!(by_index.len(), 1600);
    let mut tree = MemoryTree::new();
    for (i, (index, e)) in by_index.iter().enumerate() {
        assert_eq!(*index, i as u64, "contiguous");
        tree.push(e);
    }
    assert_eq!(state.root, tree.root());
    let stored = store.entries(log, 1000, 1600).await.expect("entries");
    assert_eq!(stored.len(), 600);
    assert!(stored
        .iter()
        .zip(1000u64..)
        .all(|(e, i)| by_index[&i] == *e));
    assert!(store
        .entries(log, 1600, 2000)
        .await
        .expect("entries")
        .is_empty());
    assert_eq!(
        store.entries(log, 0, 5000).await.expect("entries").len(),
        1024,
        "capped"
    );
    for level in 0..2u8 {
        let (full, width) = tile::tiles_at(1600, level);
        for n in 0..=full {
            let want_width = if n < full { 256 } else { u64::from(width) };
            let got = store.tile(log, level, n).await.expect("tile");
            if want_width == 0 {
                assert_eq!(got, None);
                continue;
            }
            let want: Vec<_> = (0..want_width)
                .map(|i| tree.node(8 * level, n * 256 + i).expect("node"))
                .collect();
            assert_eq!(got, Some(want), "tile {level}/{n}");
        }
    }
    // Proofs from stored tiles equal the in-memory tree's.
    for (index, size) in [
        (0u64, 1600u64),
        (777, 1600),
        (255, 256),
        (1599, 1600),
        (5, 1000),
    ] {
        let want = merkle::inclusion_proof(&tree, index, size)
            .expect("ok")
            .expect("ok");
        assert_eq!(
            store.inclusion_proof(log, index, size).await,
            Ok(want),
            "{index}/{size}"
        );
    }
    for (old, new) in [(1u64, 1600u64), (256, 1600), (1000, 1537), (1600, 1600)] {
        let want = merkle::consistency_proof(&tree, old, new)
            .expect("ok")
            .expect("ok");
        assert_eq!(
            store.consistency_proof(log, old, new).await,
            Ok(want),
            "{old}→{new}"
        );
    }
    assert!(matches!(
        store.inclusion_proof(log, 0, 1601).await,
        Err(StoreError::OutOfRange(_))
    ));
    assert!(matches!(
        store.inclusion_proof(log, 1600, 1600).await,
        Err(StoreError::OutOfRange(_))
    ));
    // Too large entries: nothing appended.
    assert!(matches!(
        store.append(log, vec![entry(1), vec![0; 65_536]]).await,
        Err(StoreError::TooLarge(_))
    ));
    assert_eq!(store.state(log).await.expect("state").size, 1600);
    assert_eq!(
        store.append([7; 32], vec![entry(1)]).await,
        Err(StoreError::UnknownLog)
    );
}

/// With dedup, an entry present (or earlier in the batch) gets its index.
pub async fn dedup_within_and_across_batches<S: LogStore>(store: S) {
    let options = LogOptions {
        dedup: true,
        index_leaves: false,
    };
    let log = store.create_log(ORIGIN, options).await.expect("create");
    let first = store
        .append(log, vec![entry(1), entry(2), entry(1)])
        .await
        .expect("append");
    assert_eq!(
        first
            .iter()
            .map(|a| (a.index, a.duplicate))
            .collect::<Vec<_>>(),
        [(0, false), (1, false), (0, true)]
    );
    let second = store
        .append(log, vec![entry(2), entry(3)])
        .await
        .expect("append");
    assert_eq!(
        second
            .iter()
            .map(|a| (a.index, a.duplicate))
            .collect::<Vec<_>>(),
        [(1, true), (2, false)]
    );
    assert_eq!(store.state(log).await.expect("state").size, 3);
    assert_eq!(
        store.leaf_index(log, merkle::leaf_hash(&entry(3))).await,
        Ok(Some(2))
    );
    // Without dedup, repeats are new entries.
    let plain = store
        .create_log("log.example/plain", LogOptions::default())
        .await
        .expect("create");
    let again = store
        .append(plain, vec![entry(1), entry(1)])
        .await
        .expect("append");
    assert_eq!(again[1].index, 1);
}

/// Callers that go away mid-append (a dropped future: a client that
/// disconnected, a timeout) never cancel the appends of others sharing
/// their group commit, and never leave half a batch: every acknowledged
/// append is at its index with its bytes, every other batch is wholly in
/// or wholly out, and the tree is exactly the stored entries'.
pub async fn cancelled_appends_never_break_others<S: LogStore>(store: S) {
    let store = Arc::new(store);
    let log = store
        .create_log(ORIGIN, LogOptions::default())
        .await
        .expect("create");
    // Rounds of 16 callers; in each, once appends are flowing, the odd
    // ones are cut off at once, so the caller leading the group commit in
    // flight is cut off in about half the rounds.
    let mut acked = Vec::new();
    for round in 0..12u64 {
        let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let (store, progress) = (store.clone(), progress.clone());
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for b in 0..6u64 {
                    let first = round * 100_000 + t * 1000 + b * 10;
                    let batch: Vec<Vec<u8>> = (0..3).map(|i| entry(first + i)).collect();
                    let appended = store.append(log, batch.clone()).await.expect("append");
                    acked.push((appended[0].index, batch));
                    progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                acked
            }));
        }
        while progress.load(std::sync::atomic::Ordering::SeqCst) < 8 {
            tokio::task::yield_now().await;
        }
        for task in tasks.iter().skip(1).step_by(2) {
            task.abort();
        }
        for (t, task) in tasks.into_iter().enumerate() {
            match task.await {
                Ok(mine) => acked.extend(mine),
                Err(e) if t % 2 == 1 && e.is_cancelled() => {}
                Err(e) => panic!("round {round}: caller {t} was not answered: {e}"),
            }
        }
    }
    let state = store.state(log).await.expect("state");
    let mut stored = Vec::new();
    let mut start = 0;
    while start < state.size {
        let end = (start + 1024).min(state.size);
        stored.extend(store.entries(log, start, end).await.expect("entries"));
        start = end;
    }
    let mut tree = MemoryTree::new();
    for e in &stored {
        tree.push(e);
    }
    assert_eq!(tree.root(), state.root, "the tree is the stored entries'");
    for (index, batch) in &acked {
        for (i, e) in batch.iter().enumerate() {
            assert_eq!(
                &stored[*index as usize + i],
                e,
                "acknowledged entry at its index"
            );
        }
    }
    // Whole batches only: entries of one batch are adjacent, in order.
    for chunk in stored.chunks(3) {
        let text: Vec<String> = chunk
            .iter()
            .map(|e| String::from_utf8_lossy(e).to_string())
            .collect();
        let first: u64 = text[0]["entry ".len()..].parse().expect("an entry");
        assert_eq!(first % 10, 0, "a batch starts at its first entry: {text:?}");
        for (i, t) in text.iter().enumerate() {
            assert_eq!(t, &format!("entry {}", first + i as u64), "{text:?}");
        }
    }
}

/// Imports (followers): only at the stored size, all or nothing, each
/// entry at its own index even with dedup on; two concurrent imports at
/// one size: exactly one lands, the other gets `Conflict`.
pub async fn imports_start_at_the_stored_size<S: LogStore>(store: S) {
    let store = Arc::new(store);
    let options = LogOptions {
        dedup: true,
        index_leaves: true,
    };
    let log = store.create_log(ORIGIN, options).await.expect("create");
    let mut tree = MemoryTree::new();
    // Repeats are kept: the origin's indices, not this store's dedup.
    let first: Vec<Vec<u8>> = vec![entry(0), entry(1), entry(0)];
    store
        .import(log, 0, first.clone())
        .await
        .expect("import at 0");
    for e in &first {
        tree.push(e);
    }
    let state = store.state(log).await.expect("state");
    assert_eq!((state.size, state.root), (3, tree.root()));
    assert_eq!(store.entries(log, 0, 3).await.expect("entries"), first);
    // Anywhere else: a conflict naming the size, and nothing changes.
    for start in [0, 2, 4, u64::MAX] {
        assert_eq!(
            store.import(log, start, vec![entry(9)]).await,
            Err(StoreError::Conflict { have: 3 }),
            "import at {start}"
        );
    }
    assert_eq!(store.state(log).await.expect("state").root, tree.root());
    // An over-long entry fails the whole import.
    assert!(matches!(
        store
            .import(log, 3, vec![entry(3), vec![0; crate::MAX_ENTRY + 1]])
            .await,
        Err(StoreError::TooLarge(_))
    ));
    assert_eq!(store.state(log).await.expect("state").size, 3);
    // Two importers of the same range: one wins.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.import(log, 3, vec![entry(3), entry(4)]).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for r in racers {
        outcomes.push(r.await.expect("task"));
    }
    outcomes.sort_by_key(|o| o.is_err());
    assert_eq!(outcomes[0], Ok(()));
    assert_eq!(outcomes[1], Err(StoreError::Conflict { have: 5 }));
    tree.push(&entry(3));
    tree.push(&entry(4));
    let state = store.state(log).await.expect("state");
    assert_eq!((state.size, state.root), (5, tree.root()));
    // Appends continue after imported entries.
    let appended = store.append(log, vec![entry(5)]).await.expect("append");
    assert_eq!(appended[0].index, 5);
    // A log that is not active imports nothing.
    store.set_status(log, Status::Frozen).await.expect("freeze");
    assert_eq!(
        store.import(log, 6, vec![entry(6)]).await,
        Err(StoreError::NotActive(Status::Frozen))
    );
}

/// Checkpoints: stored iff of the stored tree, never rolled back, merged
/// for the same tree, a conflict for another root, history kept.
pub async fn checkpoint_rules<S: LogStore>(store: S) {
    let log = store
        .create_log(ORIGIN, LogOptions::default())
        .await
        .expect("create");
    let mut tree = MemoryTree::new();
    let batch: Vec<Vec<u8>> = (0..300).map(entry).collect();
    for e in &batch {
        tree.push(e);
    }
    store.append(log, batch).await.expect("append");
    let mut t100 = MemoryTree::new();
    for i in 0..100 {
        t100.push(&entry(i));
    }
    assert_eq!(
        store
            .put_checkpoint(log, 100, t100.root(), note(&t100, ORIGIN, 1, None))
            .await,
        Ok(PutCheckpoint::Stored)
    );
    assert_eq!(
        store
            .put_checkpoint(log, 300, tree.root(), note(&tree, ORIGIN, 1, None))
            .await,
        Ok(PutCheckpoint::Stored)
    );
    // The same tree with a cosignature: merged.
    assert_eq!(
        store
            .put_checkpoint(
                log,
                300,
                tree.root(),
                note(&tree, ORIGIN, 1, Some(1_800_000_000))
            )
            .await,
        Ok(PutCheckpoint::Merged)
    );
    let latest = store
        .checkpoint(log, None)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(Note::parse(&latest).expect("note").signatures().len(), 2);
    assert!(store
        .checkpoint(log, Some(100))
        .await
        .expect("read")
        .is_some());
    // Older: not stored again as the latest.
    assert_eq!(
        store
            .put_checkpoint(log, 100, t100.root(), note(&t100, ORIGIN, 1, None))
            .await,
        Ok(PutCheckpoint::Older { latest: 300 })
    );
    // Another root at a stored size, or a size beyond the tree: conflicts.
    let mut other = MemoryTree::new();
    for i in 0..300 {
        other.push(&entry(i + 1));
    }
    assert_eq!(
        store
            .put_checkpoint(log, 300, other.root(), note(&other, ORIGIN, 1, None))
            .await,
        Err(StoreError::CheckpointConflict)
    );
    let mut bigger = tree.clone();
    bigger.push(b"x");
    assert_eq!(
        store
            .put_checkpoint(log, 301, bigger.root(), note(&bigger, ORIGIN, 1, None))
            .await,
        Err(StoreError::CheckpointConflict)
    );
    // A note that is not the claimed checkpoint.
    assert!(matches!(
        store
            .put_checkpoint(log, 300, tree.root(), note(&t100, ORIGIN, 1, None))
            .await,
        Err(StoreError::BadNote(_))
    ));
    assert_eq!(store.state(log).await.expect("state").checkpoint_size, 300);
}

/// The witness record is a compare-and-set: of two writers with the same
/// expectation exactly one wins.
pub async fn witness_cas_has_one_winner<S: LogStore>(store: S) {
    let store = Arc::new(store);
    let log = store
        .create_log(ORIGIN, LogOptions::default())
        .await
        .expect("create");
    assert_eq!(store.witnessed(log).await, Ok(None));
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .witness_cas(log, 0, 10 + i, [i as u8; 32], b"note".to_vec())
                .await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => wins += 1,
            Err(StoreError::Mismatch { size }) => assert!((10..18).contains(&size)),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
    let (size, root, note) = store.witnessed(log).await.expect("read").expect("record");
    assert_eq!(root, [(size - 10) as u8; 32]);
    assert_eq!(note, b"note");
    assert_eq!(
        store.witness_cas(log, 3, 20, [0; 32], vec![]).await,
        Err(StoreError::Mismatch { size })
    );
}

/// Evidence is kept once; status changes stick and stop appends.
pub async fn evidence_and_status<S: LogStore>(store: S) {
    let log = store
        .create_log(ORIGIN, LogOptions::default())
        .await
        .expect("create");
    store
        .put_evidence(log, 1, b"evidence one".to_vec())
        .await
        .expect("put");
    store
        .put_evidence(log, 2, b"evidence one".to_vec())
        .await
        .expect("again");
    store
        .put_evidence(log, 3, b"evidence two".to_vec())
        .await
        .expect("put");
    let mut held = store.evidence(log).await.expect("read");
    held.sort();
    assert_eq!(held, [b"evidence one".to_vec(), b"evidence two".to_vec()]);
    store
        .set_status(log, Status::Equivocated)
        .await
        .expect("status");
    assert_eq!(
        store.state(log).await.expect("state").status,
        Status::Equivocated
    );
    assert_eq!(
        store.append(log, vec![entry(1)]).await,
        Err(StoreError::NotActive(Status::Equivocated))
    );
}

/// Everything survives a reopen, and the reopened store goes on.
pub async fn state_survives_reopen<S: LogStore, F, Fut>(first: S, reopen: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = S>,
{
    let mut tree = MemoryTree::new();
    {
        let store = first;
        let log = store
            .create_log(ORIGIN, LogOptions::default())
            .await
            .expect("create");
        let batch: Vec<Vec<u8>> = (0..700).map(entry).collect();
        for e in &batch {
            tree.push(e);
        }
        store.append(log, batch).await.expect("append");
        store
            .put_checkpoint(log, 700, tree.root(), note(&tree, ORIGIN, 1, None))
            .await
            .expect("checkpoint");
    }
    let store = reopen().await;
    let log = tlog_core::log_id(ORIGIN);
    let state = store.state(log).await.expect("state");
    assert_eq!(
        (state.size, state.root, state.checkpoint_size),
        (700, tree.root(), 700)
    );
    store
        .append(log, vec![entry(700)])
        .await
        .expect("append after reopen");
    tree.push(&entry(700));
    assert_eq!(store.state(log).await.expect("state").root, tree.root());
}

/// Expands to the suite for a backend: `$open` is an async fn taking the
/// test's directory path and returning the store and a guard kept alive as
/// long as the test (e.g. a database schema dropped at the end; `()` when
/// there is nothing to clean up). Opening the same path again opens the
/// same store.
#[macro_export]
macro_rules! tlog_conformance_tests {
    ($open:path) => {
        #[tokio::test]
        async fn appends_are_atomic_contiguous_and_exact() {
            let dir = tempfile::tempdir().expect("tempdir");
            let (store, _guard) = $open(dir.path()).await;
            $crate::conformance::appends_are_atomic_contiguous_and_exact(store).await;
        }
        #[tokio::test]
        async fn dedup_within_and_across_batches() {
            let dir = tempfile::tempdir().expect("tempdir");
            let (store, _guard) = $open(dir.path()).await;
            $crate::conformance::dedup_within_and_across_batches(store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cancelled_appends_never_break_others() {
            let dir = tempfile::tempdir().expect("tempdir");
            let (store, _guard) = $open(dir.path()).await;
            $crate::conformance::cancelled_appends_never_break_others(store).await;
        }
        #[tokio::test]
        async fn imports_start_at_the_stored_size() {
            let dir = tempfile::tempdir().expect("tempdir");
            let (store, _guard) = $open(dir.path()).await;
            $crate::conformance::imports_start_at_the_stored_size(store).await;
        }
        #[tokio::test]
        async fn checkpoint_rules() {
            let dir = tempfile::tempdir().expect("tempdir");
            let (store, _guard) = $open(dir.path()).await;
            $crate::conformance::checkpoint_rules(store).await;
        }
        #[tokio::test]
        async fn witness_cas_has_one_winner() {
            let dir = tempfile::tempdir().expect("tempdir");
            let (store, _guard) = $open(dir.path()).await;
            $crate::conformance::witness_cas_has_one_winner(store).await;
        }
        #[tokio::test]
        async fn evidence_and_status() {
            let dir = tempfile::tempdir().expect("tempdir");
            let (store, _guard) = $open(dir.path()).await;
            $crate::conformance::evidence_and_status(store).await;
        }
        #[tokio::test]
        async fn state_survives_reopen() {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().to_path_buf();
            let (first, _guard) = $open(&path).await;
            $crate::conformance::state_survives_reopen(first, || async { $open(&path).await.0 })
                .await;
        }
    };
}
