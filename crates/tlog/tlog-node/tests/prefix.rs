//! tlog.md §7.5–§7.6, origin-prefix follows: a node that follows
//! `p.example/logs/` with one Ed25519 key mirrors every log under that
//! prefix its peers announce and that key signs under the origin's own
//! name (one key, a derived vkey per origin, as `lssd`'s per-client logs),
//! learns of them from a Hello or an Inv, relays them to nodes that follow
//! the same prefix, and creates no more of them than its bound allows.
//! Logs outside the prefix, or under it but signed by another key, are not
//! followed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tlog_core::note::{KeyType, SignerKey};
use tlog_node::peer::{Config, Follow, Limits, Peer, PrefixFollow, Roles};
use tlog_node::LogNode;
use tlog_store::{LogOptions, LogStore, RedbLogStore};
use tokio::net::TcpListener;

const SEED: [u8; 32] = [3; 32];

fn limits() -> Limits {
    Limits {
        max_inbound_per_ip: 64,
        redial_max: Duration::from_millis(300),
        ..Limits::default()
    }
}

async fn origin_log(
    store: &Arc<RedbLogStore>,
    origin: &str,
    seed: [u8; 32],
) -> (Arc<LogNode<RedbLogStore>>, Follow) {
    let key = SignerKey::from_seed(origin, KeyType::Ed25519, &seed).expect("key");
    let follow = Follow {
        key: key.verifier(),
        previous: Vec::new(),
        witnesses: Vec::new(),
        cosigner: None,
        validator: None,
        validating: None,
    };
    let node = LogNode::start(
        store.clone(),
        key,
        LogOptions::default(),
        Duration::from_millis(50),
        tlog_node::submit::Publish::default(),
    )
    .await
    .expect("log");
    (node, follow)
}

async fn append(node: &LogNode<RedbLogStore>, entries: std::ops::Range<u32>) {
    node.store()
        .append(
            node.log_id(),
            entries.map(|i| i.to_be_bytes().to_vec()).collect(),
        )
        .await
        .expect("append");
}

/// `store`'s verified checkpoint size of `origin` (0 if it has none).
async fn held(store: &RedbLogStore, origin: &str) -> u64 {
    match store.state(tlog_core::log_id(origin)).await {
        Ok(state) => state.checkpoint_size,
        Err(_) => 0,
    }
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn prefix_follow(store: &Arc<RedbLogStore>, max_logs: usize) -> PrefixFollow<RedbLogStore> {
    // The key's own name does not matter: each origin's vkey is derived.
    let key = SignerKey::from_seed("p.example/logs", KeyType::Ed25519, &SEED)
        .expect("key")
        .verifier();
    PrefixFollow {
        prefix: "p.example/logs/".into(),
        key,
        store: store.clone(),
        witnesses: Vec::new(),
        cosigner: None,
        max_logs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_follow_mirrors_every_log_under_it_that_its_key_signs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |name: &str| Arc::new(RedbLogStore::open(&dir.path().join(name)).expect("store"));
    let (xs, ys, zs) = (open("x.redb"), open("y.redb"), open("z.redb"));

    // X serves four logs: two under the prefix with the key, one outside
    // it with the key, one under it with another key.
    let one = origin_log(&xs, "p.example/logs/1", SEED).await;
    let two = origin_log(&xs, "p.example/logs/2", SEED).await;
    let outside = origin_log(&xs, "q.example/other", SEED).await;
    let stranger = origin_log(&xs, "p.example/logs/3", [4; 32]).await;
    let nodes: Vec<_> = [&one, &two, &outside, &stranger]
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    append(&one.0, 0..100).await;
    append(&two.0, 0..50).await;
    append(&outside.0, 0..10).await;
    append(&stranger.0, 0..10).await;

    let lx = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ly = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let lz = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (ax, ay) = (
        lx.local_addr().expect("addr").to_string(),
        ly.local_addr().expect("addr").to_string(),
    );
    let x = Peer::new(
        Config {
            name: "x".into(),
            peers: Vec::new(),
            limits: limits(),
        },
        vec![one, two, outside, stranger],
    );
    tokio::spawn(x.clone().run(lx));
    // Y follows the prefix from X; Z follows it from Y alone, at most one
    // log.
    let y = Peer::with_roles(
        Config {
            name: "y".into(),
            peers: vec![ax.clone()],
            limits: limits(),
        },
        Vec::new(),
        Roles {
            prefixes: vec![prefix_follow(&ys, 10)],
            witness: None,
        },
    );
    tokio::spawn(y.clone().run(ly));
    let z = Peer::with_roles(
        Config {
            name: "z".into(),
            peers: vec![ay],
            limits: limits(),
        },
        Vec::new(),
        Roles {
            prefixes: vec![prefix_follow(&zs, 1)],
            witness: None,
        },
    );
    tokio::spawn(z.clone().run(lz));

    eventually("Y to mirror both logs under the prefix", async || {
        held(&ys, "p.example/logs/1").await == 100 && held(&ys, "p.example/logs/2").await == 50
    })
    .await;
    assert_eq!(
        y.origins(),
        vec!["p.example/logs/1".to_string(), "p.example/logs/2".into()],
        "not the log outside the prefix, not the one another key signs"
    );
    for origin in ["p.example/logs/1", "p.example/logs/2"] {
        let id = tlog_core::log_id(origin);
        let theirs = xs.state(id).await.expect("x").root;
        assert_eq!(ys.state(id).await.expect("y").root, theirs);
    }

    // A new entry reaches Y by Inv.
    append(&nodes[0], 100..130).await;
    eventually("Y to take the new entries", async || {
        held(&ys, "p.example/logs/1").await == 130
    })
    .await;

    // Z hears of the logs only from Y, and stops at its bound.
    eventually("Z to mirror one log through Y", async || {
        let o = z.origins();
        o.len() == 1 && held(&zs, &o[0]).await > 0
    })
    .await;
    // Nobody was banned: the other logs were ignored, not misbehaviour.
    for p in [&x, &y, &z] {
        assert!(!p.is_banned("127.0.0.1"));
        assert!(!p.is_banned(&ax));
    }
    assert_eq!(z.origins().len(), 1);
}
