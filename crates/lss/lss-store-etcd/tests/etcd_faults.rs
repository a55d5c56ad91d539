//! The etcd backend against real etcd processes: etcd's limits refused
//! whole, only Lightkeeper's prefix touched, a write whose answer was lost,
//! an outage and recovery, and a three-member cluster losing a member under
//! load without losing an acknowledged put.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lk_testkit::etcd::EtcdCluster;
use lk_testkit::net::FaultProxy;
use lss_core::{Limit, PutOutcome};
use lss_store::conformance::{client, kv, put};
use lss_store::{Store, StoreError};
use lss_store_etcd::{EtcdConfig, EtcdStore};

async fn store(endpoints: Vec<String>) -> EtcdStore {
    EtcdStore::open(EtcdConfig::new(endpoints))
        .await
        .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_beyond_etcd_limits_are_refused_whole() {
    let etcd = EtcdCluster::start(1).await;
    let store = store(etcd.endpoints()).await;
    let c = client(1);

    let mut keys: Vec<String> = (0..200).map(|i| format!("k{i:03}")).collect();
    keys.sort();
    let many = keys.iter().map(|k| kv(k, 0, b"v")).collect();
    match store.put(put(c, many)).await {
        Err(StoreError::Limit(e)) => {
            assert_eq!(e.limit, Limit::KeysPerPut);
            assert_eq!(e.max, 127);
        }
        other => panic!("expected a keys-per-put refusal, got {other:?}"),
    }
    let big = vec![kv("a", 0, b"small"), kv("b", 0, &vec![1; 2 * 1024 * 1024])];
    match store.put(put(c, big)).await {
        Err(StoreError::Limit(e)) => assert_eq!(e.limit, Limit::RequestBytes),
        other => panic!("expected a request-size refusal, got {other:?}"),
    }
    // Nothing of either was written; the largest put etcd takes works.
    assert_eq!(store.get(c, String::new()).await.expect("get"), vec![]);
    let most = keys[..127].iter().map(|k| kv(k, 0, b"v")).collect();
    assert_eq!(
        store.put(put(c, most)).await.expect("put"),
        PutOutcome::Committed
    );
    let near = vec![kv("z", 0, &vec![2; 1_500_000])];
    assert_eq!(
        store.put(put(c, near)).await.expect("put"),
        PutOutcome::Committed
    );
    assert_eq!(store.get(c, String::new()).await.expect("get").len(), 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lightkeeper_prefix_is_touched() {
    let etcd = EtcdCluster::start(1).await;
    let raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("connect");
    let mut kv_client = raw.kv_client();
    let foreign = [
        b"app/config".to_vec(),
        b"lightkeeper".to_vec(),
        b"lightkeeperX/kv/x".to_vec(),
        b"lightkeeper.".to_vec(),
        vec![0xff, 0xfe],
    ];
    for key in &foreign {
        kv_client
            .put(key.clone(), b"theirs".to_vec(), None)
            .await
            .expect("put");
    }
    let store = store(etcd.endpoints()).await;
    for n in 1..=3u8 {
        let c = client(n);
        store
            .put(put(c, vec![kv("", 0, b"empty key"), kv("a", 0, b"x")]))
            .await
            .expect("put");
        store
            .put(put(c, vec![kv("a", 1, b"y")]))
            .await
            .expect("put");
        assert_eq!(store.get(c, String::new()).await.expect("get").len(), 2);
    }
    let all = kv_client
        .get(
            vec![0],
            Some(etcd_client::GetOptions::new().with_from_key()),
        )
        .await
        .expect("scan");
    for entry in all.kvs() {
        if foreign.iter().any(|f| f.as_slice() == entry.key()) {
            assert_eq!(entry.value(), b"theirs", "foreign key changed");
        } else {
            assert!(
                entry.key().starts_with(b"lightkeeper/"),
                "wrote outside the prefix: {:?}",
                String::from_utf8_lossy(entry.key())
            );
        }
    }
    assert_eq!(
        all.kvs().len(),
        foreign.len() + 3 * 3,
        "3 namespaces × 2 keys + usage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_lost_is_reported_committed() {
    let etcd = EtcdCluster::start(1).await;
    let target = etcd.endpoints()[0]
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let proxy = FaultProxy::start(target).await;
    let store = store(vec![format!("http://{}", proxy.addr)]).await;
    let c = client(1);
    assert_eq!(
        store
            .put(put(c, vec![kv("k", 0, b"v0")]))
            .await
            .expect("put"),
        PutOutcome::Committed
    );
    // The value travels only in the write transaction: etcd applies it, the
    // store never hears back, retries, and finds its own write.
    proxy.cut_after_next(b"value-only-in-the-write");
    let outcome = store
        .put(put(c, vec![kv("k", 1, b"value-only-in-the-write")]))
        .await
        .expect("put");
    assert_eq!(proxy.pattern_cuts(), 1, "the write was cut");
    assert_eq!(outcome, PutOutcome::Committed);
    assert_eq!(
        store.get(c, String::new()).await.expect("get"),
        vec![kv("k", 1, b"value-only-in-the-write")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_and_service_resumes() {
    let mut etcd = EtcdCluster::start(1).await;
    let store = store(etcd.endpoints()).await;
    let c = client(1);
    store
        .put(put(c, vec![kv("k", 0, b"a")]))
        .await
        .expect("put");
    etcd.kill(0);
    match store.put(put(c, vec![kv("k", 1, b"b")])).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(matches!(
        store.get(c, String::new()).await,
        Err(StoreError::Unavailable(_))
    ));
    etcd.restart(0);
    let mut outcome = None;
    for _ in 0..50 {
        match store.put(put(c, vec![kv("k", 1, b"b")])).await {
            Ok(o) => {
                outcome = Some(o);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(outcome, Some(PutOutcome::Committed));
    assert_eq!(
        store.get(c, String::new()).await.expect("get"),
        vec![kv("k", 1, b"b")]
    );
}

/// Eight writers put continuously to a three-member cluster; the leader is
/// killed in the middle (the harder case: an election must happen). Puts keep succeeding after it, errors are only
/// `Unavailable`, and every acknowledged put is there at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_of_three_members_under_load_loses_nothing() {
    let mut etcd = EtcdCluster::start(3).await;
    let store = Arc::new(store(etcd.all_endpoints()).await);
    let stop_at = Instant::now() + Duration::from_secs(4);
    let killed_at = Instant::now() + Duration::from_millis(1_500);
    let writers: Vec<_> = (1..=8u8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let c = client(n);
                let mut acked: BTreeMap<String, (i64, Vec<u8>)> = BTreeMap::new();
                let mut after_kill = 0u32;
                let mut unavailable = 0u32;
                let mut version = 0i64;
                while Instant::now() < stop_at {
                    let value = format!("{n}-{version}").into_bytes();
                    let key = format!("state/{}", version % 3);
                    let current = acked.get(&key).map_or(0, |(v, _)| v + 1);
                    match store.put(put(c, vec![kv(&key, current, &value)])).await {
                        Ok(PutOutcome::Committed) => {
                            acked.insert(key, (current, value));
                            if Instant::now() > killed_at {
                                after_kill += 1;
                            }
                        }
                        Ok(PutOutcome::Conflict(c)) => panic!("writer {n} conflicted: {c:?}"),
                        Err(StoreError::Unavailable(_)) => {
                            // Not acknowledged: the put may or may not have
                            // happened, but nothing else. Learn which.
                            unavailable += 1;
                            let Ok(now) = store.get(c, key.clone()).await else {
                                continue;
                            };
                            let before = acked.get(&key).cloned();
                            let now = now.into_iter().next().map(|kv| (kv.version, kv.value));
                            let applied = Some((current, value));
                            assert!(now == before || now == applied, "writer {n}: {now:?}");
                            if let Some(now) = now {
                                acked.insert(key, now);
                            }
                        }
                        Err(e) => panic!("writer {n}: {e}"),
                    }
                    version += 1;
                }
                (c, acked, after_kill, unavailable)
            })
        })
        .collect();
    let leader = etcd.leader().await;
    tokio::time::sleep_until(killed_at.into()).await;
    etcd.kill(leader);
    let mut total_after = 0;
    for writer in writers {
        let (c, acked, after_kill, unavailable) = writer.await.expect("writer");
        total_after += after_kill;
        println!(
            "writer: {} puts after the kill, {unavailable} unavailable",
            after_kill
        );
        let stored: BTreeMap<String, (i64, Vec<u8>)> = store
            .get(c, String::new())
            .await
            .expect("get")
            .into_iter()
            .map(|kv| (kv.key, (kv.version, kv.value)))
            .collect();
        assert_eq!(stored, acked, "every acknowledged put is stored, exactly");
    }
    assert!(
        total_after > 50,
        "puts kept succeeding after the kill: {total_after}"
    );
}

/// etcd with auth enabled, lssd's user allowed only its own prefix: the
/// store works with its credentials (so it never needs more than its
/// prefix), and is refused without them or with a wrong password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_a_user_limited_to_the_prefix() {
    let etcd = EtcdCluster::start(1).await;
    let mut admin = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("connect");
    admin.role_add("root").await.expect("root role");
    admin
        .user_add("root", "root-pw", None)
        .await
        .expect("root user");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("grant root");
    admin.role_add("lightkeeper").await.expect("role");
    admin
        .role_grant_permission(
            "lightkeeper",
            etcd_client::Permission::read_write("lightkeeper/").with_prefix(),
        )
        .await
        .expect("permission");
    admin.user_add("lssd", "lssd-pw", None).await.expect("user");
    admin
        .user_grant_role("lssd", "lightkeeper")
        .await
        .expect("grant");
    admin.auth_enable().await.expect("enable auth");

    let config = |user: Option<(&str, &str)>| EtcdConfig {
        user: user.map(|(u, p)| (u.to_owned(), p.to_owned())),
        timeout: Duration::from_secs(2),
        ..EtcdConfig::new(etcd.endpoints())
    };
    let store = EtcdStore::open(config(Some(("lssd", "lssd-pw"))))
        .await
        .expect("open with lssd's credentials");
    let c = client(1);
    assert_eq!(
        store
            .put(put(c, vec![kv("a", 0, b"x")]))
            .await
            .expect("put"),
        PutOutcome::Committed
    );
    assert_eq!(
        store.get(c, String::new()).await.expect("get"),
        vec![kv("a", 0, b"x")]
    );
    for (user, why) in [
        (None, "no credentials"),
        (Some(("lssd", "wrong")), "a wrong password"),
    ] {
        let err = EtcdStore::open(config(user))
            .await
            .err()
            .unwrap_or_else(|| panic!("opened with {why}"));
        assert!(
            err.to_string().contains("cannot connect to etcd"),
            "{why}: {err}"
        );
    }
}

/// TLS to etcd: with the CA that signed the member's certificate the store
/// works; with another CA, or without TLS settings, it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_etcd_is_verified() {
    let ca = lk_testkit::pki::Ca::new("etcd CA");
    let etcd = EtcdCluster::start_tls(&ca).await;
    let config = |ca_pem: Option<Vec<u8>>| EtcdConfig {
        ca_pem,
        timeout: Duration::from_secs(2),
        ..EtcdConfig::new(etcd.endpoints())
    };
    let store = EtcdStore::open(config(Some(ca.cert_pem().into_bytes())))
        .await
        .expect("TLS with the right CA");
    let c = client(1);
    assert_eq!(
        store
            .put(put(c, vec![kv("tls", 0, b"x")]))
            .await
            .expect("put"),
        PutOutcome::Committed
    );
    let other = lk_testkit::pki::Ca::new("another CA")
        .cert_pem()
        .into_bytes();
    for (ca_pem, why) in [(Some(other), "another CA"), (None, "no TLS settings")] {
        let err = EtcdStore::open(config(ca_pem))
            .await
            .err()
            .unwrap_or_else(|| panic!("opened with {why}"));
        assert!(
            err.to_string().contains("cannot connect to etcd"),
            "{why}: {err}"
        );
    }
}
