//! The backend-independent conformance suite: the [`Store`] contract as tests.
//!
//! Every backend runs every case through [`conformance_tests!`](crate::conformance_tests),
//! which expands to one `#[tokio::test]` per case, given an expression that
//! makes a fresh, empty store with a namespace quota, paired with a guard
//! that keeps whatever the store needs (a temporary directory, a database
//! schema, an etcd process) alive until the case ends:
//! `lss_store::conformance_tests!(|quota| async move { (make_store(quota).await, guard) });`

use std::sync::Arc;

use lss_core::secp256k1::{Secp256k1, SecretKey};
use lss_core::{ClientId, KeyValue, Limits, PutOutcome, SortedKvs, ValidPut};

use crate::{Bulk, Entry, LoadError, Store, StoreError};

/// A quota large enough not to matter.
pub const NO_QUOTA: u64 = u64::MAX;

/// The client whose secret key is `[n; 32]` (n ≥ 1).
pub fn client(n: u8) -> ClientId {
    let secret = SecretKey::from_slice(&[n; 32]).expect("n >= 1 is a valid key");
    ClientId::from(secret.public_key(&Secp256k1::signing_only()))
}

/// Shorthand for a kv.
pub fn kv(key: &str, version: i64, value: &[u8]) -> KeyValue {
    KeyValue::new(key, version, value)
}

/// A put as the server would build it (panics on kvs that are not sorted:
/// conformance cases only build valid ones).
pub fn put(client: ClientId, kvs: Vec<KeyValue>) -> ValidPut {
    let kvs = SortedKvs::new(
        kvs,
        &Limits {
            max_value_bytes: usize::MAX,
            ..Limits::default()
        },
    )
    .expect("conformance puts are sorted and unique");
    ValidPut::new(client, kvs)
}

async fn commit<S: Store>(store: &S, client: ClientId, kvs: Vec<KeyValue>) {
    match store.put(put(client, kvs)).await {
        Ok(PutOutcome::Committed) => {}
        other => panic!("expected a commit, got {other:?}"),
    }
}

async fn conflict<S: Store>(store: &S, client: ClientId, kvs: Vec<KeyValue>) -> Vec<KeyValue> {
    match store.put(put(client, kvs)).await {
        Ok(PutOutcome::Conflict(conflicts)) => conflicts,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn all<S: Store>(store: &S, client: ClientId) -> Vec<KeyValue> {
    store.get(client, String::new()).await.expect("get")
}

/// A fresh store is empty; a first write at version 0 is read back.
pub async fn first_write_is_version_zero<S: Store>(store: S) {
    let c = client(1);
    assert_eq!(all(&store, c).await, vec![]);
    commit(&store, c, vec![kv("a", 0, b"x"), kv("b", 0, b"")]).await;
    assert_eq!(
        all(&store, c).await,
        vec![kv("a", 0, b"x"), kv("b", 0, b"")]
    );
    commit(&store, c, vec![kv("a", 1, b"y")]).await;
    assert_eq!(
        all(&store, c).await,
        vec![kv("a", 1, b"y"), kv("b", 0, b"")]
    );
}

/// Every wrong version is a conflict carrying the current state; nothing of a
/// put with any conflict is written.
pub async fn conflicts_report_current_state_and_write_nothing<S: Store>(store: S) {
    let c = client(1);
    commit(&store, c, vec![kv("k", 0, b"v0")]).await;
    let before = all(&store, c).await;
    assert_eq!(
        conflict(&store, c, vec![kv("k", 0, b"again")]).await,
        vec![kv("k", 0, b"v0")]
    );
    assert_eq!(
        conflict(&store, c, vec![kv("k", 2, b"skip")]).await,
        vec![kv("k", 0, b"v0")]
    );
    assert_eq!(
        conflict(&store, c, vec![kv("k", -1, b"neg")]).await,
        vec![kv("k", 0, b"v0")]
    );
    assert_eq!(
        conflict(&store, c, vec![kv("m", 1, b"")]).await,
        vec![kv("m", -1, b"")]
    );
    assert_eq!(
        conflict(&store, c, vec![kv("m", -1, b"")]).await,
        vec![kv("m", -1, b"")]
    );
    assert_eq!(
        conflict(&store, c, vec![kv("m", i64::MIN, b"")]).await,
        vec![kv("m", -1, b"")]
    );
    // Mixed: only the offending keys are listed, in request order; the good
    // ones are not written either.
    let got = conflict(
        &store,
        c,
        vec![kv("a", 0, b"ok"), kv("k", 0, b"bad"), kv("z", 5, b"bad")],
    )
    .await;
    assert_eq!(got, vec![kv("k", 0, b"v0"), kv("z", -1, b"")]);
    assert_eq!(all(&store, c).await, before);
}

/// An empty put commits and changes nothing.
pub async fn empty_put_commits<S: Store>(store: S) {
    let c = client(1);
    commit(&store, c, vec![]).await;
    assert_eq!(all(&store, c).await, vec![]);
}

/// Empty keys and empty values are ordinary data.
pub async fn empty_keys_and_values<S: Store>(store: S) {
    let c = client(1);
    commit(&store, c, vec![kv("", 0, b""), kv("a", 0, b"")]).await;
    commit(&store, c, vec![kv("", 1, b"now")]).await;
    assert_eq!(
        all(&store, c).await,
        vec![kv("", 1, b"now"), kv("a", 0, b"")]
    );
    assert_eq!(
        store.get(c, "a".into()).await.expect("get"),
        vec![kv("a", 0, b"")]
    );
}

/// Namespaces never see each other's keys.
pub async fn namespaces_are_isolated<S: Store>(store: S) {
    let (a, b) = (client(1), client(2));
    commit(&store, a, vec![kv("k", 0, b"a")]).await;
    assert_eq!(all(&store, b).await, vec![]);
    // The same key is independent in another namespace.
    commit(&store, b, vec![kv("k", 0, b"b")]).await;
    commit(&store, b, vec![kv("k", 1, b"b1")]).await;
    assert_eq!(all(&store, a).await, vec![kv("k", 0, b"a")]);
    assert_eq!(all(&store, b).await, vec![kv("k", 1, b"b1")]);
}

/// A prefix is literal bytes (no `%`/`_` wildcards) and results are in byte order.
pub async fn prefix_is_literal_and_ordered<S: Store>(store: S) {
    let c = client(1);
    let keys = [
        "p/%",
        "p/%x",
        "p/_",
        "p/a",
        "p/ab",
        "p/é",
        "p/Z",
        "p0",
        "q",
        "\u{10FFFF}",
        "p/\u{0}",
    ];
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    commit(
        &store,
        c,
        sorted.iter().map(|k| kv(k, 0, k.as_bytes())).collect(),
    )
    .await;
    let keys_of = |kvs: Vec<KeyValue>| kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    assert_eq!(keys_of(all(&store, c).await), sorted);
    assert_eq!(
        keys_of(store.get(c, "p/%".into()).await.expect("get")),
        ["p/%", "p/%x"]
    );
    assert_eq!(
        keys_of(store.get(c, "p/_".into()).await.expect("get")),
        ["p/_"]
    );
    assert_eq!(
        keys_of(store.get(c, "p/".into()).await.expect("get")),
        ["p/\u{0}", "p/%", "p/%x", "p/Z", "p/_", "p/a", "p/ab", "p/é"]
    );
    assert_eq!(
        keys_of(store.get(c, "p/a".into()).await.expect("get")),
        ["p/a", "p/ab"]
    );
    assert_eq!(
        keys_of(store.get(c, "nope".into()).await.expect("get")),
        Vec::<String>::new()
    );
    // Values come back exactly.
    assert_eq!(
        store.get(c, "p/é".into()).await.expect("get"),
        vec![kv("p/é", 0, "p/é".as_bytes())]
    );
}

/// Many writers race on one key for each version: exactly one wins each
/// version, the others see a conflict naming the winner's value.
pub async fn racing_writers_one_winner_per_version<S: Store>(store: S) {
    let store = Arc::new(store);
    let c = client(1);
    for version in 0..5i64 {
        let tasks: Vec<_> = (0..16u8)
            .map(|writer| {
                let store = store.clone();
                tokio::spawn(async move {
                    let value = vec![writer];
                    (
                        writer,
                        store.put(put(c, vec![kv("race", version, &value)])).await,
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                (w, Ok(PutOutcome::Committed)) => winners.push(w),
                (_, Ok(PutOutcome::Conflict(c))) => losers.push(c),
                (_, Err(e)) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "version {version}: exactly one winner");
        assert_eq!(losers.len(), 15);
        let stored = all(&store, c).await;
        assert_eq!(stored, vec![kv("race", version, &[winners[0]])]);
        for lost in losers {
            assert_eq!(lost, stored, "a loser sees the winner's write");
        }
    }
}

/// Many clients writing concurrently all succeed, each in its own namespace.
pub async fn many_clients_concurrently<S: Store>(store: S) {
    let store = Arc::new(store);
    let tasks: Vec<_> = (1..=32u8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                for version in 0..10 {
                    let kvs = vec![kv("a", version, &[n]), kv("b", version, &[n, n])];
                    assert_eq!(
                        store.put(put(client(n), kvs)).await.expect("put"),
                        PutOutcome::Committed
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    for n in 1..=32u8 {
        assert_eq!(
            all(&store, client(n)).await,
            vec![kv("a", 9, &[n]), kv("b", 9, &[n, n])]
        );
    }
}

/// Reads `prefix` through [`Store::pages`] with pages of `max_bytes`.
async fn paged<S: Store>(
    store: &S,
    c: ClientId,
    prefix: &str,
    max_bytes: usize,
) -> (u64, Vec<KeyValue>) {
    let mut pages = store.pages(c, prefix.into()).await.expect("pages");
    let count = pages.count().await.expect("count");
    let mut out = Vec::new();
    loop {
        let page = pages.next_page(max_bytes).await.expect("page");
        if page.is_empty() {
            return (count, out);
        }
        let bytes: u64 = page.iter().map(KeyValue::stored_len).sum();
        assert!(
            page.len() == 1 || bytes <= max_bytes as u64,
            "a page of {bytes} bytes for {max_bytes}"
        );
        out.extend(page);
    }
}

/// Paged reads return exactly what `get` returns, for any page size, and
/// read one snapshot: a put made while the pages are read is not in them.
pub async fn pages_are_the_get_from_one_snapshot<S: Store>(store: S) {
    let (c, other) = (client(1), client(2));
    let kvs: Vec<KeyValue> = (0..50)
        .map(|i| kv(&format!("k/{i:03}"), 0, &vec![i as u8; 10 + i * 3]))
        .collect();
    commit(&store, c, kvs.clone()).await;
    commit(&store, c, vec![kv("l", 0, b"outside the prefix")]).await;
    commit(&store, other, vec![kv("k/000", 0, b"other namespace")]).await;
    for max_bytes in [1, 64, 500, 1 << 20] {
        assert_eq!(paged(&store, c, "k/", max_bytes).await, (50, kvs.clone()));
    }
    assert_eq!(paged(&store, c, "none", 10).await, (0, vec![]));
    assert_eq!(paged(&store, client(3), "", 10).await.0, 0);
    // A put between pages is not seen by a read already open.
    let mut pages = store.pages(c, "k/".into()).await.expect("pages");
    let first = pages.next_page(100).await.expect("page");
    assert!(!first.is_empty() && first.len() < 50);
    commit(&store, c, vec![kv("k/049", 1, b"later")]).await;
    let mut seen = first;
    loop {
        let page = pages.next_page(100).await.expect("page");
        if page.is_empty() {
            break;
        }
        seen.extend(page);
    }
    assert_eq!(seen, kvs, "the snapshot of when the read began");
}

/// A namespace of thousands of keys reads back whole and in order.
pub async fn large_namespace<S: Store>(store: S) {
    let c = client(1);
    let mut keys: Vec<String> = (0..3_000).map(|i| format!("channel/{i:05}")).collect();
    keys.sort();
    // Puts of 100 keys: within every backend's stock per-transaction limits
    // (etcd allows 128 operations).
    for chunk in keys.chunks(100) {
        commit(
            &store,
            c,
            chunk.iter().map(|k| kv(k, 0, &[7; 100])).collect(),
        )
        .await;
    }
    let got = all(&store, c).await;
    assert_eq!(got.len(), 3_000);
    assert!(got.iter().map(|kv| &kv.key).eq(keys.iter()));
    assert_eq!(
        store.get(c, "channel/01".into()).await.expect("get").len(),
        1_000
    );
}

/// Growing past the quota is refused and writes nothing; shrinking is allowed;
/// `usage` reports what the quota counts.
pub async fn namespace_quota<S: Store>(store: S) {
    // The store under test was made with a quota of 100 bytes.
    let (c, other) = (client(1), client(2));
    commit(&store, c, vec![kv("k", 0, &[1; 90])]).await; // 91 bytes
    match store.put(put(c, vec![kv("j", 0, &[1; 9])])).await {
        Err(StoreError::Limit(e)) => {
            assert_eq!(e.limit, lss_core::Limit::NamespaceBytes);
            assert_eq!((e.max, e.got), (100, 101));
        }
        other => panic!("expected a quota refusal, got {other:?}"),
    }
    assert_eq!(all(&store, c).await, vec![kv("k", 0, &[1; 90])]);
    // Exactly at the quota is fine; so is replacing a value with a larger one that fits.
    commit(&store, c, vec![kv("j", 0, &[1; 8])]).await; // 100 bytes
                                                        // Shrinking (a tombstone) is allowed, and frees room.
    commit(&store, c, vec![kv("k", 1, b"")]).await; // 10 bytes
    assert_eq!(store.usage(c).await.expect("usage"), 10);
    commit(&store, c, vec![kv("k", 2, &[2; 89])]).await; // 99 bytes
    assert_eq!(
        store.usage(c).await.expect("usage"),
        99,
        "what the quota counts"
    );
    // Other namespaces have their own quota.
    assert_eq!(
        store.usage(other).await.expect("usage"),
        0,
        "empty namespace"
    );
    commit(&store, other, vec![kv("k", 0, &[1; 99])]).await;
    assert_eq!(store.usage(other).await.expect("usage"), 100);
}

fn entry(n: u8, key: &str, version: i64, value: &[u8]) -> Entry {
    Entry {
        client: client(n),
        kv: kv(key, version, value),
    }
}

async fn scan_all<S: Bulk>(store: &S, page: usize) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    loop {
        let after = out.last().map(|e| (e.client, e.kv.key.clone()));
        let next = store.scan(after, page).await.expect("scan");
        assert!(next.len() <= page, "scan returned more than asked");
        if next.is_empty() {
            return out;
        }
        out.extend(next);
    }
}

/// Scan pages through every namespace in (client, key) byte order.
pub async fn bulk_scan_is_ordered_and_complete<S: Bulk>(store: S) {
    assert!(store.scan(None, 10).await.expect("scan").is_empty());
    for n in [3u8, 1, 2] {
        commit(
            &store,
            client(n),
            vec![kv("", 0, b"e"), kv("a", 0, b"1"), kv("é", 0, b"2")],
        )
        .await;
    }
    commit(&store, client(1), vec![kv("a", 1, b"new")]).await;
    let mut expected: Vec<Entry> = [1u8, 2, 3]
        .iter()
        .flat_map(|&n| {
            let a = if n == 1 {
                entry(n, "a", 1, b"new")
            } else {
                entry(n, "a", 0, b"1")
            };
            [entry(n, "", 0, b"e"), a, entry(n, "é", 0, b"2")]
        })
        .collect();
    expected.sort_by(|x, y| {
        (x.client.as_bytes(), x.kv.key.as_bytes()).cmp(&(y.client.as_bytes(), y.kv.key.as_bytes()))
    });
    for page in [1, 2, 4, 100] {
        assert_eq!(scan_all(&store, page).await, expected, "page size {page}");
    }
}

/// Load writes versions as given into missing keys, skips identical entries,
/// and refuses to overwrite anything else, writing nothing of the batch.
pub async fn bulk_load_never_overwrites<S: Bulk>(store: S) {
    let c = client(1);
    commit(&store, c, vec![kv("live", 0, b"x")]).await;
    let batch = vec![
        entry(1, "a", 7, b"seven"),
        entry(1, "live", 0, b"x"),
        entry(2, "b", 0, b""),
    ];
    assert_eq!(store.load(batch).await.expect("load"), 2);
    assert_eq!(
        all(&store, c).await,
        vec![kv("a", 7, b"seven"), kv("live", 0, b"x")]
    );
    // Loaded versions continue with the +1 rule.
    commit(&store, c, vec![kv("a", 8, b"eight")]).await;
    assert_eq!(
        conflict(&store, c, vec![kv("a", 0, b"")]).await,
        vec![kv("a", 8, b"eight")]
    );
    // Running a load again writes only what is new (resume after interruption).
    let again = vec![entry(2, "b", 0, b""), entry(2, "c", 3, b"c")];
    assert_eq!(store.load(again).await.expect("reload"), 1);
    // A different version or value of an existing key: nothing of the batch.
    for clash in [entry(1, "live", 0, b"other"), entry(1, "live", 5, b"x")] {
        let batch = vec![entry(2, "d", 0, b"d"), clash];
        match store.load(batch).await {
            Err(LoadError::Mismatch { key, .. }) => assert_eq!(key, "live"),
            other => panic!("expected a mismatch, got {other:?}"),
        }
        assert_eq!(
            all(&store, client(2)).await,
            vec![kv("b", 0, b""), kv("c", 3, b"c")]
        );
    }
    assert_eq!(store.load(vec![]).await.expect("empty load"), 0);
    // One key twice in a batch: loaded as if entry by entry.
    let twice = vec![entry(3, "x", 0, b"a"), entry(3, "x", 0, b"b")];
    assert!(matches!(
        store.load(twice).await,
        Err(LoadError::Mismatch { .. })
    ));
    assert_eq!(all(&store, client(3)).await, vec![]);
    let twice = vec![entry(3, "x", 0, b"a"), entry(3, "x", 0, b"a")];
    assert_eq!(store.load(twice).await.expect("identical twice"), 1);
}

/// Loaded bytes count toward the quota, though the load itself is not held to it.
pub async fn bulk_load_counts_toward_the_quota<S: Bulk>(store: S) {
    // The store under test was made with a quota of 100 bytes.
    let c = client(1);
    store
        .load(vec![entry(1, "big", 0, &[0; 90])])
        .await
        .expect("load");
    match store.put(put(c, vec![kv("more", 0, &[0; 20])])).await {
        Err(StoreError::Limit(_)) => {}
        other => panic!("the loaded bytes must count: {other:?}"),
    }
    assert_eq!(store.usage(c).await.expect("usage"), 93);
    commit(&store, c, vec![kv("big", 1, &[0; 10])]).await;
    commit(&store, c, vec![kv("more", 0, &[0; 20])]).await;
    assert_eq!(store.usage(c).await.expect("usage"), 13 + 24);
    store
        .load(vec![entry(1, "over", 0, &[0; 200])])
        .await
        .expect("a restore is not held to the quota");
}

/// Totals count the namespaces holding data and their keys' and values'
/// bytes, as quotas do; a conflict changes nothing.
pub async fn totals_count_namespaces_and_bytes<S: Store>(store: S) {
    assert_eq!(
        store.totals().await.expect("totals"),
        crate::Totals::default()
    );
    commit(
        &store,
        client(1),
        vec![kv("ab", 0, b"xyz"), kv("c", 0, b"")],
    )
    .await;
    commit(&store, client(2), vec![kv("k", 0, &[7; 100])]).await;
    conflict(&store, client(2), vec![kv("k", 0, &[7; 500])]).await;
    assert_eq!(
        store.totals().await.expect("totals"),
        crate::Totals {
            namespaces: 2,
            bytes: (2 + 3 + 1) + (1 + 100),
        }
    );
    commit(&store, client(2), vec![kv("k", 1, b"")]).await;
    let totals = store.totals().await.expect("totals");
    assert_eq!(totals.bytes, 6 + 1, "{totals:?}");
}

/// Expands to one `#[tokio::test]` per conformance case. `$fresh` is a
/// closure `|quota: u64| async { (store, guard) }` making an empty store that
/// implements [`Bulk`], and a guard dropped when the case ends.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:expr) => {
        $crate::conformance_tests!(@cases $fresh; $crate::conformance::NO_QUOTA;
            first_write_is_version_zero,
            conflicts_report_current_state_and_write_nothing,
            empty_put_commits,
            empty_keys_and_values,
            namespaces_are_isolated,
            prefix_is_literal_and_ordered,
            racing_writers_one_winner_per_version,
            many_clients_concurrently,
            large_namespace,
            pages_are_the_get_from_one_snapshot,
            bulk_scan_is_ordered_and_complete,
            bulk_load_never_overwrites,
            totals_count_namespaces_and_bytes,
        );
        $crate::conformance_tests!(@cases $fresh; 100;
            namespace_quota,
            bulk_load_counts_toward_the_quota,
        );
    };
    (@cases $fresh:expr; $quota:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fresh = $fresh;
                let (store, guard) = fresh($quota).await;
                $crate::conformance::$case(store).await;
                drop(guard);
            }
        )*
    };
}
