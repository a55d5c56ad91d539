//! `tlog-bench`: measures tlog.md §9's in-process rows on the embedded
//! store: durable appends per second with N concurrent callers (and with
//! dedup), append latency, and append → published checkpoint latency.
//! Results and commands are recorded in docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tlog_core::note::{KeyType, SignerKey};
use tlog_node::LogNode;
use tlog_store::{LogOptions, LogStore, RedbLogStore};

#[derive(Parser)]
#[command(about = "Transparency-log load generator (in process, redb)")]
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
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn appends(args: &Args, dedup: bool) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join(if dedup {
        "bench-dedup.redb"
    } else {
        "bench.redb"
    });
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(RedbLogStore::open(&path)?);
    let options = LogOptions {
        dedup,
        index_leaves: dedup,
    };
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
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let took = start.elapsed().as_secs_f64();
    all.sort();
    let size = store.state(log).await?.size;
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "appends{}: {} callers, {} B entries: {:.0} entries/s durable; latency p50 {:.2} ms, p99 {:.2} ms; {} entries, {:.0} B/entry on disk beyond the entry",
        if dedup { " (dedup)" } else { "" },
        args.callers,
        args.entry_bytes,
        size as f64 / took,
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        size,
        (bytes as f64 / size as f64) - args.entry_bytes as f64,
    );
    Ok(())
}

async fn publish_latency(args: &Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let store = Arc::new(RedbLogStore::open(&tmp.path().join("publish.redb"))?);
    let key = SignerKey::from_seed("bench.example/publish", KeyType::Ed25519, &[7; 32])?;
    let node = LogNode::start(
        store,
        key,
        LogOptions::default(),
        Duration::from_millis(args.interval_ms),
        tlog_node::submit::Publish::default(),
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
        "append → published checkpoint (interval {} ms, no witnesses): {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.interval_ms,
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    appends(&args, false).await?;
    appends(&args, true).await?;
    publish_latency(&args).await?;
    Ok(())
}
