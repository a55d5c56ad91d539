//! `statechain-bench`: the co-signing and complete-transfer rows of
//! statechain.md §8 against a real `statechaind`. It starts the release `statechaind` next to itself
//! (optionally pinned with `taskset` to `--server-cpu`) or uses `--url`
//! with `--server-pid`, and reports latency percentiles, signatures per
//! second and the SE's CPU per signature from `/proc`.
//!
//! ```sh
//! cargo build --release -p statechaind -p statechain-bench
//! taskset -c 0 target/release/statechain-bench --server-cpu 1
//! # receive to finality with three members and 500 ms checkpoints
//! target/release/statechain-bench --members 3 --checkpoint-interval-ms 500 \
//!     --single 10 --per-coin 1 --transfers 10
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
    /// Complete transfers per coin (send by one wallet, receive with the
    /// whole history verified by another, back and forth), over `--coins`
    /// coins in parallel; 0 skips the phase.
    #[arg(long, default_value_t = 10)]
    transfers: u32,
    /// The started SE's checkpoint interval, in ms [default: statechaind's].
    /// A receive waits for its entries to be published, so this bounds a
    /// transfer's latency.
    #[arg(long)]
    checkpoint_interval_ms: Option<u64>,
    /// Federation members to start next to the SE (statechain.md §8
    /// "receive to finality": 3 with 500 ms checkpoints). A checkpoint is
    /// then published only once a majority of them validated and cosigned
    /// it, and wallets cross-check coins with them; the transfer phase
    /// reports the receive (to finality) separately.
    #[arg(long, default_value_t = 0)]
    members: u32,
}

/// One mock chain (statechain.md §4.6) shared by every wallet of the run:
/// the funding transactions are confirmed in it.
struct SharedChain(std::sync::Arc<statechain_client::chain::MockChain>);

impl statechain_client::chain::ChainSource for SharedChain {
    fn tip_height(&self) -> Result<u32, statechain_client::chain::ChainError> {
        self.0.tip_height()
    }
    fn confirmations(
        &self,
        txid: &bitcoin::Txid,
    ) -> Result<Option<u32>, statechain_client::chain::ChainError> {
        self.0.confirmations(txid)
    }
    fn is_unspent(
        &self,
        outpoint: &bitcoin::OutPoint,
    ) -> Result<bool, statechain_client::chain::ChainError> {
        self.0.is_unspent(outpoint)
    }
    fn broadcast(
        &self,
        package: &[bitcoin::Transaction],
    ) -> Result<(), statechain_client::chain::ChainError> {
        self.0.broadcast(package)
    }
}

const TIP: u32 = 500;
const VALUE: u64 = 100_000;

/// A funding transaction paying `VALUE` to `address` (`tag` keeps Tx0s
/// apart).
fn tx0(address: &str, tag: u64) -> anyhow::Result<bitcoin::Transaction> {
    use bitcoin::{absolute::LockTime, transaction::Version};
    use std::str::FromStr;
    let script = bitcoin::Address::from_str(address)?
        .require_network(bitcoin::Network::Regtest)?
        .script_pubkey();
    let mut tag_script = vec![0x51];
    tag_script.extend_from_slice(&tag.to_be_bytes());
    Ok(bitcoin::Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: bitcoin::OutPoint::null(),
            script_sig: bitcoin::ScriptBuf::from_bytes(tag_script),
            sequence: bitcoin::Sequence::MAX,
            witness: bitcoin::Witness::new(),
        }],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(VALUE),
            script_pubkey: script,
        }],
    })
}

/// Two wallets pinned to the SE and a deposited coin held by the first.
fn transfer_pair(
    url: &str,
    dir: &std::path::Path,
    chain: &std::sync::Arc<statechain_client::chain::MockChain>,
    n: u64,
) -> anyhow::Result<(statechain_client::Wallet, statechain_client::Wallet, String)> {
    let open = |name: &str| -> anyhow::Result<statechain_client::Wallet> {
        let d = dir.join(format!("{name}{n}"));
        statechain_client::Wallet::create(&d, "regtest")?;
        let mut w = statechain_client::Wallet::open(&d, Box::new(SharedChain(chain.clone())))?;
        w.pin(url)?;
        Ok(w)
    };
    let (a, b) = (open("a")?, open("b")?);
    let (id, address) = a.deposit_new(VALUE, None)?;
    let tx = tx0(&address, n)?;
    a.deposit_sign(
        &id,
        &hex::encode(bitcoin::consensus::encode::serialize(&tx)),
    )?;
    chain.update(|s| {
        s.confirmed.insert(tx.compute_txid().to_string(), TIP);
    })?;
    Ok((a, b, id))
}

/// The `p` quantile of sorted latencies, in ms.
fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn report(name: &str, count: u64, elapsed: Duration, mut lat: Vec<Duration>, cpu: Option<f64>) {
    lat.sort();
    let pct = |p: f64| quantile_ms(&lat, p);
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

/// A started `statechaind` and what it printed before listening.
struct Started {
    child: Child,
    url: String,
    printed: Vec<String>,
}

impl Started {
    /// The value of the printed line `prefix: value`.
    fn printed(&self, prefix: &str) -> anyhow::Result<String> {
        self.printed
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("statechaind printed no {prefix:?} line"))
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the release `statechaind` next to this binary on `dir` (with
/// `taskset -c cpu` when given), any free ports, and `extra` arguments.
fn start_statechaind(
    cpu: Option<u32>,
    dir: &std::path::Path,
    extra: &[String],
) -> anyhow::Result<Started> {
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
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let out = child.stdout.take().context("stdout")?;
    let mut printed = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line?;
        if let Some(url) = line.strip_prefix("statechaind listening on ") {
            let url = url.trim_end_matches('/').to_string();
            return Ok(Started {
                child,
                url,
                printed,
            });
        }
        printed.push(line);
    }
    anyhow::bail!("statechaind exited before listening")
}

/// The SE (and its members, started first: the SE dials them); the SE's
/// URL.
fn start_federation(args: &Args, dir: &std::path::Path) -> anyhow::Result<(Started, Vec<Started>)> {
    let mut se_args: Vec<String> = vec!["--max-signatures".into(), "100000".into()];
    if let Some(ms) = args.checkpoint_interval_ms {
        se_args.extend(["--checkpoint-interval-ms".into(), ms.to_string()]);
    }
    let se_dir = dir.join("se");
    let mut members = Vec::new();
    if args.members > 0 {
        // A first start makes the SE's log key, which members follow.
        let first = start_statechaind(None, &se_dir, &se_args)?;
        let vkey = first.printed("log vkey:")?;
        first.stop();
        for i in 0..args.members {
            let m = start_statechaind(
                None,
                &dir.join(format!("member{i}")),
                &[
                    "--role".into(),
                    "member".into(),
                    "--follow".into(),
                    vkey.clone(),
                    "--member-name".into(),
                    format!("m{i}"),
                ],
            )?;
            se_args.extend([
                "--member".into(),
                format!(
                    "{}@{}@{}/",
                    m.printed("validating vkey:")?,
                    m.printed("sync (LKTL/1) on")?,
                    m.url
                ),
            ]);
            members.push(m);
        }
    }
    let se = start_statechaind(args.server_cpu, &se_dir, &se_args)?;
    Ok((se, members))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (started, url, pid) = match &args.url {
        Some(u) => (None, u.clone(), args.server_pid),
        None => {
            let (se, members) = start_federation(&args, dir.path())?;
            let (url, pid) = (se.url.clone(), Some(se.child.id()));
            (Some((se, members)), url, pid)
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

    if args.transfers > 0 {
        // Complete transfers: each coin goes back and forth between its
        // two wallets; a transfer is `send` plus the receiver's `receive`.
        let chain = std::sync::Arc::new(statechain_client::chain::MockChain::new(
            statechain_client::chain::MockState {
                tip: TIP,
                ..Default::default()
            },
        ));
        let wallets = tempfile::tempdir()?;
        let pairs = (0..args.coins as u64)
            .map(|n| transfer_pair(&url, wallets.path(), &chain, 1000 + n))
            .collect::<anyhow::Result<Vec<_>>>()?;
        chain.update(|s| s.tip = TIP + 5)?;
        let per = args.transfers;
        let (t, c0) = (Instant::now(), cpu());
        // (send + receive, receive alone) per transfer.
        let both: Vec<(Duration, Duration)> = std::thread::scope(|s| {
            let hs: Vec<_> = pairs
                .into_iter()
                .map(|(a, b, id)| {
                    s.spawn(move || -> anyhow::Result<Vec<(Duration, Duration)>> {
                        let mut lat = Vec::new();
                        for i in 0..per {
                            let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                            let address = to.new_address()?;
                            let t = Instant::now();
                            from.send(&id, &address)?;
                            let r = Instant::now();
                            let got = to.receive()?;
                            anyhow::ensure!(
                                got.iter().any(|r| r.statechain_id == id),
                                "the coin did not arrive"
                            );
                            lat.push((t.elapsed(), r.elapsed()));
                        }
                        Ok(lat)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().map_err(|_| anyhow::anyhow!("wallet panicked"))?)
                .collect::<anyhow::Result<Vec<Vec<_>>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        let (lat, mut receive): (Vec<Duration>, Vec<Duration>) = both.into_iter().unzip();
        receive.sort();
        let count = args.coins as u64 * per as u64;
        let elapsed = t.elapsed();
        let se = cpu().zip(c0).map(|(a, b)| a - b);
        let mut lat = lat;
        lat.sort();
        let pct = |p: f64| quantile_ms(&lat, p);
        println!(
            "complete transfers ({} coins x {per}): {count} in {:.2} s = {:.0}/s; send+receive p50 {:.1} ms, p99 {:.1} ms; SE CPU per transfer {}",
            args.coins,
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64(),
            pct(0.5),
            pct(0.99),
            se.map_or("-".into(), |c| format!("{:.0} µs", c * 1e6 / count as f64)),
        );
        println!(
            "receive to finality ({} members): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            args.members,
            quantile_ms(&receive, 0.5),
            quantile_ms(&receive, 0.99),
            quantile_ms(&receive, 1.0),
        );
    }
    if let Some((se, members)) = started {
        se.stop();
        members.into_iter().for_each(Started::stop);
    }
    Ok(())
}
