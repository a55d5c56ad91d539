//! `tlog-bench`: measures tlog.md §9's in-process rows on the embedded
//! store: durable appends per second with N concurrent callers (and with
//! dedup), append latency, and append → published checkpoint latency; with
//! `--postgres`, the append rows on the PostgreSQL store; with `--phase
//! mirror`, mirror catch-up over LKTL/1.
//! Results and commands are recorded in docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tlog_core::note::{KeyType, SignerKey};
use tlog_node::LogNode;
use tlog_store::{LogOptions, LogStore, RedbLogStore};

#[derive(Parser)]
#[command(about = "Transparency-log load generator (in process; redb, or PostgreSQL)")]
struct Args {
    /// Concurrent appenders.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// Entry size in bytes.
    #[arg(long, default_value_t = 256)]
    entry_bytes: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Checkpoint interval for the publish-latency phase, ms.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Where the store goes (default: a temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Measure the append phases on PostgreSQL instead (a fresh schema
    /// `tlog_bench_<pid>`, dropped afterwards), e.g.
    /// `host=127.0.0.1 user=postgres dbname=test`.
    #[arg(long)]
    postgres: Option<String>,
    /// Which phases to run.
    #[arg(long, value_enum, default_value_t = Phase::Appends)]
    phase: Phase,
    /// Entries the origin holds for the mirror phase, and the log holds
    /// for the HTTP read rows.
    #[arg(long, default_value_t = 1_000_000)]
    mirror_entries: u64,
    /// Witnesses (on loopback) that must cosign before publication, for
    /// the append → published row.
    #[arg(long, default_value_t = 0)]
    witnesses: usize,
    /// HTTP client threads.
    #[arg(long, default_value_t = 32)]
    http_clients: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// Durable appends (and with dedup), then append → published.
    Appends,
    /// Mirror catch-up over LKTL/1 on loopback, verified and durable.
    Mirror,
    /// Over HTTP on loopback: appends through `POST add`, hot tiles, the
    /// inclusion proof endpoint, and a client's verified sync from tiles.
    Http,
    /// Append → published checkpoint only (with `--witnesses`).
    Publish,
    /// A witness's add-checkpoint (verify, compare-and-set, fsync,
    /// cosign) for `--callers` logs submitting concurrently, in process.
    Witness,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn appends(args: &Args, dedup: bool) -> anyhow::Result<()> {
    let options = LogOptions {
        dedup,
        index_leaves: dedup,
    };
    let label = if dedup { " (dedup)" } else { "" };
    if let Some(url) = &args.postgres {
        let schema = format!("tlog_bench_{}_{}", std::process::id(), u8::from(dedup));
        let config = tlog_store_postgres::PostgresConfig {
            schema: schema.clone(),
            pool_size: args.callers.min(32),
            ..tlog_store_postgres::PostgresConfig::new(url.clone())
        };
        let store = Arc::new(tlog_store_postgres::PostgresLogStore::open(config).await?);
        let (size, took, latencies) = load(args, store, options).await?;
        report(
            &format!("appends on PostgreSQL{label}"),
            args,
            size,
            took,
            &latencies,
            None,
        );
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await?;
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join(if dedup {
        "bench-dedup.redb"
    } else {
        "bench.redb"
    });
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(RedbLogStore::open(&path)?);
    let (size, took, latencies) = load(args, store, options).await?;
    let bytes = std::fs::metadata(&path)?.len();
    report(
        &format!("appends{label}"),
        args,
        size,
        took,
        &latencies,
        Some(bytes),
    );
    Ok(())
}

/// `args.callers` tasks appending one entry at a time for `args.seconds`:
/// the log's final size, the seconds taken, and every latency, sorted.
async fn load<S: LogStore>(
    args: &Args,
    store: Arc<S>,
    options: LogOptions,
) -> anyhow::Result<(u64, f64, Vec<Duration>)> {
    let log = store.create_log("bench.example/log", options).await?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.callers)
        .map(|c| {
            let store = store.clone();
            let size = args.entry_bytes;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let mut entry = vec![0u8; size];
                    entry[..8].copy_from_slice(&(c as u64).to_be_bytes());
                    entry[8..16].copy_from_slice(&n.to_be_bytes());
                    n += 1;
                    let t = Instant::now();
                    store.append(log, vec![entry]).await.expect("append");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let (took, all) = gather(start, tasks).await?;
    Ok((store.state(log).await?.size, took, all))
}

/// Every task's latencies, sorted, and the seconds since `start`.
async fn gather(
    start: Instant,
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let took = start.elapsed().as_secs_f64();
    all.sort();
    Ok((took, all))
}

fn report(what: &str, args: &Args, size: u64, took: f64, all: &[Duration], bytes: Option<u64>) {
    let disk = bytes.map_or(String::new(), |bytes| {
        format!(
            ", {:.0} B/entry on disk beyond the entry",
            (bytes as f64 / size as f64) - args.entry_bytes as f64
        )
    });
    println!(
        "{what}: {} callers, {} B entries: {:.0} entries/s durable; latency p50 {:.2} ms, p99 {:.2} ms; {size} entries{disk}",
        args.callers,
        args.entry_bytes,
        size as f64 / took,
        percentile(all, 0.5).as_secs_f64() * 1e3,
        percentile(all, 0.99).as_secs_f64() * 1e3,
    );
}

async fn publish_latency(args: &Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let store = Arc::new(RedbLogStore::open(&tmp.path().join("publish.redb"))?);
    let key = SignerKey::from_seed("bench.example/publish", KeyType::Ed25519, &[7; 32])?;
    // `--witnesses` witnesses on loopback, each with its own store; every
    // one must cosign before a checkpoint is published.
    let mut targets = Vec::new();
    for w in 0..args.witnesses {
        let wstore = Arc::new(RedbLogStore::open(&tmp.path().join(format!("w{w}.redb")))?);
        let wkey = SignerKey::from_seed(
            &format!("bench.example/witness{w}"),
            KeyType::Cosignature,
            &[20 + w as u8; 32],
        )?;
        let vkey = wkey.verifier();
        let witness = tlog_node::witness::Witness::new(wstore, wkey, vec![key.verifier()]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/witness", listener.local_addr()?);
        let app = axum::Router::new().nest("/witness", witness.router());
        tokio::spawn(async move { axum::serve(listener, app).await });
        targets.push(tlog_node::submit::WitnessTarget::new(vkey, url));
    }
    let quorum = targets.len();
    let node = LogNode::start(
        store,
        key,
        LogOptions::default(),
        Duration::from_millis(args.interval_ms),
        tlog_node::submit::Publish {
            witnesses: targets,
            quorum,
            ..tlog_node::submit::Publish::default()
        },
    )
    .await?;
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(args.seconds.max(5));
    let mut n = 0u64;
    while Instant::now() < deadline {
        let t = Instant::now();
        let appended = node.append(n.to_be_bytes().to_vec()).await?;
        n += 1;
        let mut published = node.published();
        published
            .wait_for(|p| p.as_ref().is_some_and(|p| p.size > appended.index))
            .await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    println!(
        "append → published checkpoint (interval {} ms, {} witnesses): {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.interval_ms,
        args.witnesses,
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}

/// tlog.md §9 "mirror catch-up": an origin holding `mirror_entries`
/// entries serves them over LKTL/1 on loopback to a fresh mirror, which
/// verifies every chunk against the signed checkpoint and stores it
/// durably; the rate is entries over the time until the mirror publishes.
async fn mirror(args: &Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let origin_path = dir.join("origin.redb");
    let mirror_path = dir.join("mirror.redb");
    let _ = std::fs::remove_file(&origin_path);
    let _ = std::fs::remove_file(&mirror_path);
    let key = SignerKey::from_seed("bench.example/mirror", KeyType::Ed25519, &[9; 32])?;
    let origin_store = Arc::new(RedbLogStore::open(&origin_path)?);
    let log = origin_store
        .create_log(key.name(), LogOptions::default())
        .await?;
    let filling = Instant::now();
    let n = args.mirror_entries;
    fill(&*origin_store, log, n, args.entry_bytes).await?;
    eprintln!(
        "origin filled with {n} entries in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    let vkey = key.verifier();
    let origin = LogNode::start(
        origin_store,
        key,
        LogOptions::default(),
        Duration::from_millis(args.interval_ms),
        tlog_node::submit::Publish::default(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let config = |name: &str, peers: Vec<String>| tlog_node::peer::Config {
        name: name.into(),
        peers,
        limits: tlog_node::peer::Limits::default(),
    };
    let follow = tlog_node::peer::Follow {
        key: vkey.clone(),
        previous: Vec::new(),
        witnesses: Vec::new(),
        cosigner: None,
        validator: None,
        validating: None,
    };
    tokio::spawn(
        tlog_node::peer::Peer::new(
            config("origin", Vec::new()),
            vec![(origin.clone(), follow.clone())],
        )
        .run(listener),
    );
    let mirror_store = Arc::new(RedbLogStore::open(&mirror_path)?);
    let mirror = LogNode::mirror(mirror_store, vkey.name()).await?;
    let mut published = mirror.published();
    let start = Instant::now();
    let quiet = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    tokio::spawn(
        tlog_node::peer::Peer::new(config("mirror", vec![addr]), vec![(mirror.clone(), follow)])
            .run(quiet),
    );
    published
        .wait_for(|p| p.as_ref().is_some_and(|p| p.size >= n))
        .await?;
    let took = start.elapsed().as_secs_f64();
    println!(
        "mirror catch-up over LKTL/1 on loopback: {n} entries of {} B verified and stored in {took:.2} s: {:.0} entries/s",
        args.entry_bytes,
        n as f64 / took
    );
    drop(origin);
    Ok(())
}

/// Fills a log with `n` entries of `bytes` bytes in batches.
async fn fill<S: LogStore>(
    store: &S,
    log: tlog_store::LogId,
    n: u64,
    bytes: usize,
) -> anyhow::Result<()> {
    let mut i = 0u64;
    while i < n {
        let batch: Vec<Vec<u8>> = (i..(i + 4096).min(n))
            .map(|k| {
                let mut e = vec![0u8; bytes];
                e[..8].copy_from_slice(&k.to_be_bytes());
                e
            })
            .collect();
        i += batch.len() as u64;
        store.append(log, batch).await?;
    }
    Ok(())
}

/// `clients` threads each calling `request` until the deadline: requests
/// per second and sorted latencies.
fn hammer(
    clients: usize,
    seconds: u64,
    request: impl Fn(&ureq::Agent, u64) -> bool + Send + Sync + 'static,
) -> (f64, Vec<Duration>) {
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let request = request.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut latencies = Vec::new();
                let mut n = (c as u64) << 32;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    assert!(request(&agent, n), "request failed");
                    latencies.push(t.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().expect("client thread"));
    }
    let took = start.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / took, all)
}

fn print_rate(what: &str, (rate, all): (f64, Vec<Duration>)) {
    println!(
        "{what}: {rate:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms ({} requests)",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all.len()
    );
}

/// tlog.md §9's HTTP rows against a node served by axum on loopback, the
/// load generator's threads in the same process.
async fn http(args: &Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("http.redb");
    let _ = std::fs::remove_file(&path);
    let key = SignerKey::from_seed("bench.example/http", KeyType::Ed25519, &[5; 32])?;
    let vkey = key.verifier();
    let store = Arc::new(RedbLogStore::open(&path)?);
    let log = store.create_log(key.name(), LogOptions::default()).await?;
    fill(&*store, log, args.mirror_entries, args.entry_bytes).await?;
    let node = LogNode::start(
        store,
        key,
        LogOptions::default(),
        Duration::from_millis(args.interval_ms),
        tlog_node::submit::Publish::default(),
    )
    .await?;
    let token = "bench-token".to_string();
    let app = node.clone().router(Some(token.clone()), u32::MAX / 4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let n = args.mirror_entries;
    let clients = args.http_clients;
    let seconds = args.seconds;
    let bytes = vec![0u8; args.entry_bytes];
    tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let add = format!("{url}/add");
            print_rate(
                &format!("appends through POST add ({clients} clients, durable)"),
                hammer(clients, seconds, move |agent, i| {
                    let mut entry = bytes.clone();
                    entry[..8].copy_from_slice(&i.to_be_bytes());
                    agent
                        .post(&add)
                        .header("Authorization", &format!("Bearer {token}"))
                        .send(&entry[..])
                        .is_ok_and(|r| r.status() == 200)
                }),
            );
            let tile = format!("{url}/tile/0/000");
            print_rate(
                &format!("hot full hash tile GET ({clients} clients)"),
                hammer(clients, seconds, move |agent, _| {
                    agent.get(&tile).call().is_ok_and(|mut r| {
                        r.status() == 200
                            && r.body_mut().read_to_vec().is_ok_and(|b| b.len() == 8192)
                    })
                }),
            );
            let base = url.clone();
            print_rate(
                &format!("lk/v1/inclusion on a {n}-entry log ({clients} clients)"),
                hammer(clients, seconds, move |agent, i| {
                    let index = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % n;
                    agent
                        .get(&format!("{base}/lk/v1/inclusion?index={index}&size={n}"))
                        .call()
                        .is_ok_and(|r| r.status() == 200)
                }),
            );
        }
    })
    .await?;
    // A client's verified download of the whole log from tiles (§8.3).
    let size = node.published().borrow().as_ref().map_or(0, |p| p.size);
    let url2 = url.clone();
    let (count, took) =
        tokio::task::spawn_blocking(move || client_sync(&url2, vkey, size)).await??;
    println!(
        "client sync from tiles: {count} entries verified in {took:.2} s: {:.0} entries/s",
        count as f64 / took
    );
    Ok(())
}

/// Downloads and verifies every entry of the log at `url` up to `size`
/// from entry bundles, checked against the signed checkpoint.
fn client_sync(
    url: &str,
    vkey: tlog_core::note::VerifierKey,
    size: u64,
) -> anyhow::Result<(u64, f64)> {
    use tlog_core::entry_sync::EntrySync;
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let get = |path: &str| -> anyhow::Result<Vec<u8>> {
        Ok(agent
            .get(&format!("{url}/{path}"))
            .call()?
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()?)
    };
    let start = Instant::now();
    let note = agent
        .get(&format!("{url}/lk/v1/checkpoint/{size}"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_vec().ok());
    let note = match note {
        Some(n) => n,
        None => get("checkpoint")?,
    };
    let checkpoint = tlog_core::Policy::single(vkey).verify(&note, 0)?.checkpoint;
    let mut sync = EntrySync::new(
        tlog_core::merkle::CompactRange::new(),
        checkpoint.size,
        checkpoint.root,
    )?;
    let mut count = 0u64;
    while let Some(fetch) = sync.poll_fetch() {
        let released = sync.handle(&fetch, &get(&fetch.path())?)?;
        count += released.len() as u64;
    }
    Ok((count, start.elapsed().as_secs_f64()))
}

/// tlog.md §9 "witness add-checkpoint": every log submits its next
/// checkpoint (one entry more, with the consistency proof) as soon as the
/// last was cosigned.
async fn witness(args: &Args) -> anyhow::Result<()> {
    use tlog_core::merkle::MemoryTree;
    use tlog_core::note::{b64encode, Note};
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("witness.redb");
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(RedbLogStore::open(&path)?);
    let keys: Vec<SignerKey> = (0..args.callers)
        .map(|i| {
            SignerKey::from_seed(
                &format!("bench.example/log{i}"),
                KeyType::Ed25519,
                &[(i % 251) as u8 + 1; 32],
            )
        })
        .collect::<Result<_, _>>()?;
    let wkey = SignerKey::from_seed("bench.example/witness", KeyType::Cosignature, &[3; 32])?;
    let witness = tlog_node::witness::Witness::new(
        store,
        wkey,
        keys.iter().map(SignerKey::verifier).collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let start = Instant::now();
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let witness = witness.clone();
            tokio::spawn(async move {
                let mut tree = MemoryTree::new();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let old = tree.size();
                    tree.push(&old.to_be_bytes());
                    let proof = tlog_core::merkle::consistency_proof(&tree, old, tree.size())
                        .expect("infallible")
                        .expect("proof");
                    let text =
                        tlog_core::Checkpoint::new(key.name(), tree.size(), tree.root()).to_text();
                    let mut note = Note::new(&text).expect("note");
                    note.add(key.sign(note.text(), 0));
                    let mut body = format!("old {old}\n").into_bytes();
                    for h in &proof {
                        body.extend_from_slice(b64encode(h).as_bytes());
                        body.push(b'\n');
                    }
                    body.push(b'\n');
                    body.extend_from_slice(&note.to_bytes());
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let t = Instant::now();
                    let (status, _) = witness.add_checkpoint(&body, now).await;
                    latencies.push(t.elapsed());
                    assert_eq!(status.as_u16(), 200, "cosigned");
                }
                latencies
            })
        })
        .collect();
    let (took, all) = gather(start, tasks).await?;
    println!(
        "witness add-checkpoint, {} logs submitting: {:.0} cosignatures/s durable; latency p50 {:.2} ms, p99 {:.2} ms",
        args.callers,
        all.len() as f64 / took,
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.phase == Phase::Witness {
        return witness(&args).await;
    }
    if args.phase == Phase::Publish {
        return publish_latency(&args).await;
    }
    if args.phase == Phase::Mirror {
        return mirror(&args).await;
    }
    if args.phase == Phase::Http {
        return http(&args).await;
    }
    appends(&args, false).await?;
    appends(&args, true).await?;
    if args.postgres.is_none() {
        publish_latency(&args).await?;
    }
    Ok(())
}
