//! `statechain-bench`: the co-signing rows of statechain.md §8 against a
//! real `statechaind`. It starts the release `statechaind` next to itself
//! (optionally pinned with `taskset` to `--server-cpu`) or uses `--url`
//! with `--server-pid`, and reports latency percentiles, signatures per
//! second and the SE's CPU per signature from `/proc`.
//!
//! ```sh
//! cargo build --release -p statechaind -p statechain-bench
//! taskset -c 0 target/release/statechain-bench --server-cpu 1
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::Value;
use statechain_client::http::SeClient;
use statechain_client::requests;
use statechain_core::scalar::{point, Scalar};
use statechain_core::{LeafHash, SeId, StatechainId};

#[derive(Parser, Debug)]
#[command(about = "Co-signing throughput and latency of a statechaind (statechain.md §8)")]
struct Args {
    /// An SE to measure (else one is started in a temporary directory).
    #[arg(long)]
    url: Option<String>,
    /// The SE's pid, for its CPU time (with --url).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Pin the started SE to this CPU (taskset).
    #[arg(long)]
    server_cpu: Option<u32>,
    /// Signatures by one client on one coin.
    #[arg(long, default_value_t = 500)]
    single: u32,
    /// Coins signing in parallel.
    #[arg(long, default_value_t = 64)]
    coins: u32,
    /// Signatures per coin in the parallel phase.
    #[arg(long, default_value_t = 15)]
    per_coin: u32,
}

fn report(name: &str, count: u64, elapsed: Duration, mut lat: Vec<Duration>, cpu: Option<f64>) {
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let cpu = cpu.map_or(String::from("-"), |c| {
        format!("{:.0} µs", c * 1e6 / count as f64)
    });
    println!(
        "{name}: {count} signatures in {:.2} s = {:.0}/s; sign/first+second p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; SE CPU per signature {cpu}",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
}

/// One coin with its owner's auth key.
struct Coin {
    id: StatechainId,
    head: LeafHash,
    a: Scalar,
}

fn h<const N: usize>(v: &Value) -> anyhow::Result<[u8; N]> {
    hex::decode(v.as_str().context("hex field")?)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("length"))
}

fn random_scalar(seed: u64, tag: u8) -> Scalar {
    let mut b = [tag; 32];
    b[..8].copy_from_slice(&seed.to_be_bytes());
    Scalar::from_bytes(&b).unwrap_or_else(|_| Scalar::one())
}

fn deposit(client: &SeClient, se_id: &SeId, n: u64) -> anyhow::Result<Coin> {
    let token: [u8; 16] = h(&client.new_token()?["token_id"])?;
    let a = random_scalar(n, 0xa1);
    let r = client.post(
        "/v1/deposit/init",
        &requests::deposit(se_id, &token, &a, &[0; 32]),
    )?;
    Ok(Coin {
        id: h(&r.body["statechain_id"])?,
        head: h(&r.body["entry"]["leaf_hash"])?,
        a,
    })
}

/// One co-signing round trip (the SE's view: commitment and challenge are
/// just values to it); returns its latency.
fn sign(client: &SeClient, se_id: &SeId, coin: &mut Coin, n: u64) -> anyhow::Result<Duration> {
    let mut com = [0u8; 32];
    com[..8].copy_from_slice(&n.to_be_bytes());
    com[8..16].copy_from_slice(&coin.id[..8]);
    let c = random_scalar(n, 0xc3);
    let t = Instant::now();
    let r = client.post(
        "/v1/sign/first",
        &requests::sign_first(se_id, &coin.id, &coin.head, &com, &coin.a, &[0; 32]),
    )?;
    let r_s = point(&h::<33>(&r.body["server_nonce"])?).context("nonce")?;
    let r = client.post(
        "/v1/sign/second",
        &requests::sign_second(
            se_id, &coin.id, &coin.head, &r_s, &com, &c, &coin.a, &[0; 32],
        ),
    )?;
    let took = t.elapsed();
    coin.head = h(&r.body["entry"]["leaf_hash"])?;
    Ok(took)
}

fn start_server(cpu: Option<u32>, dir: &std::path::Path) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("bin dir")?.join("statechaind");
    let mut cmd = match cpu {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", &c.to_string()]).arg(&bin);
            t
        }
        None => Command::new(&bin),
    };
    let mut child = cmd
        .args([
            "--data-dir",
            &dir.display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--sync-listen",
            "127.0.0.1:0",
        ])
        .args(["--max-signatures", "100000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let out = child.stdout.take().context("stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        if let Some(url) = line.strip_prefix("statechaind listening on ") {
            return Ok((child, url.trim_end_matches('/').to_string()));
        }
    }
    anyhow::bail!("statechaind exited before listening")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (mut child, url, pid) = match &args.url {
        Some(u) => (None, u.clone(), args.server_pid),
        None => {
            let (c, u) = start_server(args.server_cpu, dir.path())?;
            let pid = Some(c.id());
            (Some(c), u, pid)
        }
    };
    let client = SeClient::new(&url);
    let se_id: SeId = h(&client.get("/v1/info")?.body["se_id"])?;
    let cpu = || proc_sample::sample(pid, None).map(|s| s.cpu_seconds);

    // One client, one coin.
    let mut coin = deposit(&client, &se_id, 0)?;
    let (t, c0) = (Instant::now(), cpu());
    let lat = (0..args.single as u64)
        .map(|n| sign(&client, &se_id, &mut coin, n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    report(
        "one client",
        args.single as u64,
        t.elapsed(),
        lat,
        cpu().zip(c0).map(|(a, b)| a - b),
    );

    // Coins in parallel, one client each.
    let coins = (0..args.coins as u64)
        .map(|n| deposit(&client, &se_id, n + 1))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (t, c0) = (Instant::now(), cpu());
    let per = args.per_coin as u64;
    let lat: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = coins
            .into_iter()
            .map(|mut coin| {
                let url = url.clone();
                s.spawn(move || {
                    let client = SeClient::new(&url);
                    (0..per)
                        .map(|n| sign(&client, &se_id, &mut coin, n))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("client panicked"))?)
            .collect::<anyhow::Result<Vec<Vec<_>>>>()
    })?
    .into_iter()
    .flatten()
    .collect();
    report(
        &format!("{} coins in parallel", args.coins),
        args.coins as u64 * per,
        t.elapsed(),
        lat,
        cpu().zip(c0).map(|(a, b)| a - b),
    );
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(())
}
