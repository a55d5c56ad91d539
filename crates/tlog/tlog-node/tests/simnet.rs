//! tlog.md §10, federation over a simulated network, in process: three
//! nodes (an origin and two mirrors, each with its own store and its own
//! LKTL/1 peer) reach each other only through a relay per direction that
//! delays every frame, sends some `Inv` and `Evidence` frames twice, and
//! now and then resets the connection, as a lossy network does to a TCP
//! stream (a stream cannot lose one frame and keep going). Links can be
//! cut to partition the federation.
//!
//! The relay forwards whole frames only, so a reset never leaves half a
//! frame: what a node sees is a peer that went away, never a malformed
//! one. Duplicates are limited to the unsolicited notifications, the only
//! frames a real network path (a peer that re-announces) can repeat;
//! a duplicated answer would be a protocol violation, not a network fault.
//!
//! `LK_SIMNET_ENTRIES` sets the size of the convergence run (default
//! 1,000,000).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlog_core::note::{KeyType, SignerKey};
use tlog_core::sync::{Frame, MAX_IDENT};
use tlog_node::peer::{Config, Follow, Limits, Peer};
use tlog_node::LogNode;
use tlog_store::{LogOptions, LogStore, RedbLogStore, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const ORIGIN: &str = "sim.example/log";

/// A deterministic generator (SplitMix64) shared by the relays.
struct Rng(AtomicU64);

impl Rng {
    fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `per_million` / 1,000,000.
    fn chance(&self, per_million: u64) -> bool {
        self.next() % 1_000_000 < per_million
    }
}

/// What the network does to frames.
#[derive(Clone, Copy)]
struct Faults {
    /// Largest delay added to a frame, in microseconds.
    max_delay_us: u64,
    /// Chance (per million frames) that an Inv or Evidence is sent twice.
    duplicate: u64,
    /// Chance (per million frames) that the connection is reset there.
    reset: u64,
}

/// Counters of what the network did.
#[derive(Default)]
struct Done {
    frames: AtomicU64,
    duplicated: AtomicU64,
    resets: AtomicU64,
}

/// One direction of the network (from one node to another): a relay
/// listening where the dialing node thinks its peer is.
struct Link {
    up: watch::Sender<bool>,
    addr: SocketAddr,
}

struct Net {
    rng: Arc<Rng>,
    faults: Faults,
    done: Arc<Done>,
}

impl Net {
    /// A link to `target` (a node's sync listener).
    async fn link(&self, target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (up, watch_up) = watch::channel(true);
        let (rng, faults, done) = (self.rng.clone(), self.faults, self.done.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !*watch_up.borrow() {
                    continue; // partitioned: the connection drops at once
                }
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                let (stop, stopped) = watch::channel(false);
                let stop = Arc::new(stop);
                for (r, w) in [(ir, ow), (or, iw)] {
                    tokio::spawn(relay(
                        r,
                        w,
                        rng.clone(),
                        faults,
                        done.clone(),
                        watch_up.clone(),
                        stop.clone(),
                        stopped.clone(),
                    ));
                }
            }
        });
        Link { up, addr }
    }
}

/// Forwards the identification line, then whole frames, with the faults;
/// ends both directions on a reset or a cut link.
#[allow(clippy::too_many_arguments)]
async fn relay(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    rng: Arc<Rng>,
    faults: Faults,
    done: Arc<Done>,
    mut up: watch::Receiver<bool>,
    stop: Arc<watch::Sender<bool>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut ident_done = false;
    let mut due = Instant::now();
    loop {
        // Whole units first: the line, then frames.
        loop {
            let unit = if !ident_done {
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        ident_done = true;
                        Some((i + 1, false))
                    }
                    None if buf.len() > MAX_IDENT => return,
                    None => None,
                }
            } else {
                match Frame::decode(&buf, 16 << 20) {
                    Ok(Some((_, used))) => Some((used, matches!(buf[4], 0x02 | 0x0B))),
                    Ok(None) => None,
                    Err(_) => return,
                }
            };
            let Some((used, notification)) = unit else {
                break;
            };
            let bytes: Vec<u8> = buf.drain(..used).collect();
            done.frames.fetch_add(1, Ordering::Relaxed);
            if ident_done && rng.chance(faults.reset) {
                done.resets.fetch_add(1, Ordering::Relaxed);
                let _ = stop.send(true);
                return;
            }
            // Delays keep the order, as TCP does.
            let delay = Duration::from_micros(rng.next() % (faults.max_delay_us + 1));
            due = due.max(Instant::now()) + delay;
            tokio::time::sleep_until(due.into()).await;
            let twice = notification && rng.chance(faults.duplicate);
            for _ in 0..if twice { 2 } else { 1 } {
                if w.write_all(&bytes).await.is_err() {
                    let _ = stop.send(true);
                    return;
                }
            }
            if twice {
                done.duplicated.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::select! {
            n = r.read(&mut chunk) => match n {
                Ok(0) | Err(_) => { let _ = stop.send(true); return; }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            _ = up.changed() => if !*up.borrow() { let _ = stop.send(true); return; },
            _ = stopped.changed() => return,
        }
    }
}

struct Node {
    node: Arc<LogNode<RedbLogStore>>,
    peer: Arc<Peer<RedbLogStore>>,
}

impl Node {
    fn head(&self) -> Option<(u64, [u8; 32])> {
        self.node.published_head()
    }
}

fn limits() -> Limits {
    Limits {
        // Every relayed connection comes from 127.0.0.1.
        max_inbound_per_ip: 64,
        redial_max: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        ..Limits::default()
    }
}

struct Federation {
    _dir: tempfile::TempDir,
    a: Node,
    b: Node,
    c: Node,
    /// `links[i][j]`: from node i to node j.
    links: Vec<Vec<Option<Link>>>,
    net: Net,
}

/// Origin A (with `entries` entries appended before the peers start) and
/// mirrors B and C, every pair linked both ways through the network.
/// With `cosigning` (A's refresh interval), B and C cosign as mirror
/// cosigners and A publishes only what both cosigned.
async fn federation(
    entries: u64,
    faults: Faults,
    seed: u64,
    cosigning: Option<Duration>,
) -> Federation {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[7; 32]).expect("key");
    let vkey = key.verifier();
    let cosigners: Vec<Arc<SignerKey>> = match cosigning {
        Some(_) => [("b.example/mirror", 8), ("c.example/mirror", 9)]
            .into_iter()
            .map(|(name, seed)| {
                Arc::new(
                    SignerKey::from_seed(name, KeyType::Cosignature, &[seed; 32])
                        .expect("cosigner key"),
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let trusted: Vec<_> = cosigners.iter().map(|k| k.verifier()).collect();
    let store =
        |name: &str| Arc::new(RedbLogStore::open(&dir.path().join(name)).expect("open store"));
    let a = LogNode::start(
        store("a.redb"),
        key,
        LogOptions::default(),
        Duration::from_millis(100),
        tlog_node::submit::Publish {
            republish: cosigning.unwrap_or(Duration::from_secs(600)),
            cosigners: trusted.clone(),
            cosigner_quorum: trusted.len(),
            ..Default::default()
        },
    )
    .await
    .expect("origin");
    if entries > 0 {
        append(&a, 0, entries).await;
    }
    let b = LogNode::mirror(store("b.redb"), ORIGIN).await.expect("b");
    let c = LogNode::mirror(store("c.redb"), ORIGIN).await.expect("c");
    let net = Net {
        rng: Arc::new(Rng(AtomicU64::new(seed))),
        faults,
        done: Arc::new(Done::default()),
    };
    let nodes = [a, b, c];
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for _ in &nodes {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.push(l.local_addr().expect("addr"));
        listeners.push(l);
    }
    let mut links: Vec<Vec<Option<Link>>> = Vec::new();
    for i in 0..3 {
        let mut row = Vec::new();
        for (j, addr) in addrs.iter().enumerate() {
            row.push(if i == j {
                None
            } else {
                Some(net.link(*addr).await)
            });
        }
        links.push(row);
    }
    let mut started = Vec::new();
    for (i, (node, listener)) in nodes.into_iter().zip(listeners).enumerate() {
        let peers = links[i]
            .iter()
            .flatten()
            .map(|l| l.addr.to_string())
            .collect();
        let peer = Peer::new(
            Config {
                name: ["a", "b", "c"][i].to_string(),
                peers,
                limits: limits(),
            },
            vec![(
                node.clone(),
                Follow {
                    key: vkey.clone(),
                    previous: Vec::new(),
                    witnesses: trusted.clone(),
                    cosigner: i.checked_sub(1).and_then(|k| cosigners.get(k).cloned()),
                    validator: None,
                    validating: None,
                },
            )],
        );
        tokio::spawn(peer.clone().run(listener));
        started.push(Node { node, peer });
    }
    let mut it = started.into_iter();
    let (a, b, c) = (
        it.next().expect("a"),
        it.next().expect("b"),
        it.next().expect("c"),
    );
    Federation {
        _dir: dir,
        a,
        b,
        c,
        links,
        net,
    }
}

/// Appends `[from, to)` (8-byte entries) in batches, then waits until the
/// origin published them.
async fn append(node: &LogNode<RedbLogStore>, from: u64, to: u64) {
    let mut at = from;
    while at < to {
        let end = (at + 4096).min(to);
        node.store()
            .append(
                node.log_id(),
                (at..end).map(|i| i.to_be_bytes().to_vec()).collect(),
            )
            .await
            .expect("append");
        at = end;
    }
    let mut published = node.published();
    while published.borrow().as_ref().is_none_or(|p| p.size < to) {
        published.changed().await.expect("the checkpointer runs");
    }
}

impl Federation {
    fn cut(&self, i: usize, j: usize, up: bool) {
        for (x, y) in [(i, j), (j, i)] {
            if let Some(link) = &self.links[x][y] {
                link.up.send_replace(up);
            }
        }
    }

    /// Waits until B and C publish A's checkpoint.
    async fn converged(&self, within: Duration) -> (u64, [u8; 32]) {
        let deadline = Instant::now() + within;
        let mut waits = [self.b.node.published(), self.c.node.published()];
        loop {
            let want = self.a.head().expect("A published");
            if self.b.head() == Some(want) && self.c.head() == Some(want) {
                return want;
            }
            assert!(
                Instant::now() < deadline,
                "not converged: A {:?}, B {:?}, C {:?}",
                self.a.head().map(|h| h.0),
                self.b.head().map(|h| h.0),
                self.c.head().map(|h| h.0)
            );
            let [wb, wc] = &mut waits;
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                tokio::select! {
                    _ = wb.changed() => {},
                    _ = wc.changed() => {},
                }
            })
            .await;
        }
    }

    /// The stored latest note of A, B and C.
    async fn notes(&self) -> [Option<Vec<u8>>; 3] {
        let mut notes = [None, None, None];
        for (i, n) in [&self.a, &self.b, &self.c].into_iter().enumerate() {
            notes[i] = n
                .node
                .store()
                .checkpoint(n.node.log_id(), None)
                .await
                .expect("checkpoint");
        }
        notes
    }

    /// Waits until A, B and C store the same note of size `size`, with
    /// both cosigners' lines at least as new as `since` (Unix seconds);
    /// returns it.
    async fn settled(&self, size: u64, since: u64, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        let mut waits = [
            self.a.node.signed(),
            self.b.node.signed(),
            self.c.node.signed(),
        ];
        loop {
            let notes = self.notes().await;
            if let [Some(a), Some(b), Some(c)] = &notes {
                let fresh = ["b.example/mirror", "c.example/mirror"]
                    .iter()
                    .all(|name| cosigned_at(a, name).is_some_and(|t| t >= since));
                // What each node announces too: a store runs a moment
                // ahead of its node's watch.
                let announced = [&self.a, &self.b, &self.c]
                    .iter()
                    .all(|n| n.node.signed().borrow().as_ref().map(|p| &p.note) == Some(a));
                if a == b && a == c && fresh && announced && note_size(a) == size {
                    return a.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the copies never settled: {:?}",
                notes.map(|n| n.map(|n| String::from_utf8_lossy(&n).into_owned()))
            );
            let [wa, wb, wc] = &mut waits;
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                tokio::select! {
                    _ = wa.changed() => {},
                    _ = wb.changed() => {},
                    _ = wc.changed() => {},
                }
            })
            .await;
        }
    }

    /// Nobody holds evidence, no log is Equivocated, and nobody banned
    /// anyone.
    async fn clean(&self) {
        for n in [&self.a, &self.b, &self.c] {
            let store = n.node.store();
            let log = n.node.log_id();
            assert!(store.evidence(log).await.expect("evidence").is_empty());
            assert_eq!(
                store.state(log).await.expect("state").status,
                Status::Active
            );
            assert!(!n.peer.is_banned("127.0.0.1"));
            for row in &self.links {
                for link in row.iter().flatten() {
                    assert!(!n.peer.is_banned(&link.addr.to_string()));
                }
            }
        }
    }

    /// Every node's tree is the origin's, entry for entry at the ends.
    async fn same_trees(&self, size: u64) {
        let root = self.a.node.root_at(size).await.expect("root");
        for n in [&self.b, &self.c] {
            assert_eq!(n.node.root_at(size).await.expect("root"), root);
            let last = n
                .node
                .store()
                .entries(n.node.log_id(), size - 1, size)
                .await
                .expect("entries");
            assert_eq!(last, vec![(size - 1).to_be_bytes().to_vec()]);
        }
    }
}

/// The cosignature time of `name`'s line on `note`.
fn cosigned_at(note: &[u8], name: &str) -> Option<u64> {
    tlog_core::note::Note::parse(note)
        .ok()?
        .signatures()
        .iter()
        .find(|l| l.name == name)
        .and_then(|l| l.cosignature_time())
}

fn note_size(note: &[u8]) -> u64 {
    let note = tlog_core::note::Note::parse(note).expect("note");
    tlog_core::checkpoint::Checkpoint::parse(note.text())
        .expect("checkpoint")
        .size
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A network slower than [`tlog_node::peer::RECOSIGN_AFTER`] per frame.
const SLOW: Faults = Faults {
    max_delay_us: 1_200_000,
    duplicate: 0,
    reset: 0,
};

/// Cosigned checkpoints settle: once A, B and C hold the same note with
/// both cosignatures, nothing changes it until A refreshes or appends,
/// even when every hop takes longer than a renewal's minimum age. (Before,
/// every relay of a renewed line made the other cosigners renew theirs, so
/// over a slow network the note never stopped moving and the copies never
/// agreed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosignatures_settle_over_a_slow_network() {
    let fed = federation(0, SLOW, 0xc051, Some(Duration::from_secs(3_600))).await;
    let started = now_secs();
    append(&fed.a.node, 0, 10).await;
    let note = fed.settled(10, started, Duration::from_secs(120)).await;
    // Any change of any node's latest note ends the wait at once.
    let mut waits = [
        fed.a.node.signed(),
        fed.b.node.signed(),
        fed.c.node.signed(),
    ];
    let [wa, wb, wc] = &mut waits;
    let changed = tokio::time::timeout(Duration::from_secs(6), async {
        tokio::select! {
            _ = wa.changed() => "a",
            _ = wb.changed() => "b",
            _ = wc.changed() => "c",
        }
    })
    .await;
    assert!(
        changed.is_err(),
        "{changed:?} changed a settled note:\n{}\nnow:\n{:?}",
        String::from_utf8_lossy(&note),
        fed.notes()
            .await
            .map(|n| n.map(|n| String::from_utf8_lossy(&n).into_owned()))
    );
    assert_eq!(
        fed.notes().await,
        [Some(note.clone()), Some(note.clone()), Some(note)]
    );
    fed.clean().await;
}

/// A's refresh of its idle log (tlog.md §5.2) renews both cosignatures,
/// and the copies agree again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_renews_the_cosignatures_and_the_copies_settle_again() {
    let fed = federation(0, SLOW, 0x2e4e, Some(Duration::from_secs(3))).await;
    let started = now_secs();
    append(&fed.a.node, 0, 10).await;
    let first = fed.settled(10, started, Duration::from_secs(120)).await;
    let newest = ["b.example/mirror", "c.example/mirror"]
        .iter()
        .filter_map(|name| cosigned_at(&first, name))
        .max()
        .expect("cosigned");
    let renewed = fed.settled(10, newest + 2, Duration::from_secs(120)).await;
    let origin_line = |n: &[u8]| n.split(|&b| b == b'\n').next().map(<[u8]>::to_vec);
    assert_eq!(origin_line(&first), origin_line(&renewed), "the same log");
    assert_ne!(first, renewed, "renewed lines");
    fed.clean().await;
}

fn entries_from_env() -> u64 {
    std::env::var("LK_SIMNET_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// A 1M-entry log reaches both mirrors over a network that delays every
/// frame, duplicates notifications and resets connections; both end with
/// the origin's tree, nobody is banned and nobody holds evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_log_converges_over_a_lossy_network() {
    let n = entries_from_env();
    let faults = Faults {
        max_delay_us: 2_000,
        duplicate: 200_000,
        reset: 5_000,
    };
    let started = Instant::now();
    let fed = federation(n, faults, 0x5eed, None).await;
    let appended = started.elapsed();
    let (size, _) = fed.converged(Duration::from_secs(900)).await;
    assert_eq!(size, n);
    fed.same_trees(size).await;
    fed.clean().await;
    let done = &fed.net.done;
    eprintln!(
        "{n} entries: appended in {:.1} s, converged {:.1} s later; {} frames, {} duplicated, {} resets",
        appended.as_secs_f64(),
        (started.elapsed() - appended).as_secs_f64(),
        done.frames.load(Ordering::Relaxed),
        done.duplicated.load(Ordering::Relaxed),
        done.resets.load(Ordering::Relaxed),
    );
    assert!(
        done.resets.load(Ordering::Relaxed) > 0 && done.duplicated.load(Ordering::Relaxed) > 0,
        "the network did nothing to test"
    );
}

/// Partition {A} | {B, C}: A keeps appending and publishing, B and C keep
/// what they had (and talk to each other); after the heal all converge,
/// with no evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_and_the_federation_converges() {
    let faults = Faults {
        max_delay_us: 3_000,
        duplicate: 200_000,
        reset: 2_000,
    };
    let fed = federation(3_000, faults, 0xfeed, None).await;
    let (before, _) = fed.converged(Duration::from_secs(120)).await;
    assert_eq!(before, 3_000);

    fed.cut(0, 1, false);
    fed.cut(0, 2, false);
    append(&fed.a.node, 3_000, 5_000).await;
    assert_eq!(fed.a.head().map(|h| h.0), Some(5_000));
    // Nothing crosses a cut link, so B and C cannot have moved.
    assert_eq!(fed.b.head().map(|h| h.0), Some(before));
    assert_eq!(fed.c.head().map(|h| h.0), Some(before));

    fed.cut(0, 1, true);
    fed.cut(0, 2, true);
    let (after, _) = fed.converged(Duration::from_secs(120)).await;
    assert_eq!(after, 5_000);
    fed.same_trees(after).await;
    fed.clean().await;

    // Heal through B only: C reaches A's newer entries through B.
    fed.cut(0, 2, false);
    append(&fed.a.node, 5_000, 6_000).await;
    let (last, _) = fed.converged(Duration::from_secs(120)).await;
    assert_eq!(last, 6_000);
    fed.same_trees(last).await;
    fed.clean().await;
}
