//! `ks-bench`: the measurements of keyserver.md §9.
//!
//! By default it starts `keyserverd` in this process on a fresh data
//! directory (the server then shares the machine's cores with the load); with
//! `--url` and `--pin` it loads a separate server, so the two can be pinned
//! to different cores with `taskset`. Clients are threads with their own
//! HTTP connections; every request is a real JSON-RPC call.
//!
//! Phases, in order: `create` (CreateUID, durable, from `--clients`
//! threads), `keyinits` (AddKeyInit in calls of 64), `fetch-keyinit`
//! (deleting reads), `fetch-chain` (FetchHashChain in chunks of 4096), `sync`
//! (ks-client's full verified sync, then an incremental one of 1,000), `scan`
//! (an identity lookup over the local chain), `mirror` (an in-process
//! `keyserverd mirror` catching up with the whole chain over LKTL/1, every
//! leaf and UID checked; in-process server only).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ed25519_dalek::SigningKey;
use ks_client::{Client, Pin};
use ks_core::author::{self, UidKeys};
use ks_core::b64;
use ks_core::entry::Entry;
use ks_core::lcj::Lcj;

#[derive(Parser)]
#[command(about = "Keyserver measurements (keyserver.md §9)")]
struct Args {
    /// A running keyserver's JSON-RPC URL (else one is started in process).
    #[arg(long, requires = "pin")]
    url: Option<String>,
    /// Its pin.
    #[arg(long)]
    pin: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Users to register in `create`.
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    /// Users that publish 256 KeyInits each in `keyinits`.
    #[arg(long, default_value_t = 40)]
    keyinit_users: u64,
    /// Skip phases (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Pay with tokens (keyserver.md §5) as a public deployment does: the
    /// in-process server requires them (a `--url` server must run with
    /// tokens required and give `--server-dir`), and they are minted
    /// before the clock starts.
    #[arg(long)]
    tokens: bool,
    /// The `--url` server's data directory, whose issuer key mints the
    /// tokens (with `--tokens`).
    #[arg(long, requires = "url")]
    server_dir: Option<std::path::PathBuf>,
    /// Measure "CreateUID → witnessed published checkpoint" over this
    /// many registrations, one at a time: the in-process server submits
    /// every checkpoint to a `tlogd --witness-for` process (the release
    /// binary next to this one) and publishes only what it cosigned.
    #[arg(long, default_value_t = 0, conflicts_with = "url")]
    witnessed: u64,
}

/// A `tlogd --witness-for <log vkey>` process (the binary next to this
/// one) on a free port: the process and `<witness vkey>@<its URL>/witness`.
fn start_witness(
    dir: &std::path::Path,
    log_vkey: &str,
) -> anyhow::Result<(std::process::Child, String)> {
    use std::io::BufRead as _;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("bin dir")?.join("tlogd");
    let mut child = std::process::Command::new(&bin)
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--witness-for", log_vkey])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    loop {
        let line = lines.next().context("tlogd exited")??;
        if line.contains("listening on") {
            break;
        }
    }
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let vkey = std::fs::read_to_string(dir.join("witness-vkey"))?;
    Ok((
        child,
        format!("{}@http://127.0.0.1:{port}/witness", vkey.trim()),
    ))
}

/// The size of the keyserver's published checkpoint (`kt/v1/checkpoint`).
fn published_size(agent: &ureq::Agent, url: &str) -> anyhow::Result<u64> {
    let note = agent
        .get(format!("{url}kt/v1/checkpoint"))
        .call()?
        .body_mut()
        .read_to_string()?;
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .context("a checkpoint's size line")
}

/// Minted tokens the paid calls spend (empty: tokens disabled).
static TOKENS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// `n` tokens from the pool, as the call's token member; `None` when the
/// bench runs without tokens.
fn pay(n: usize) -> anyhow::Result<Option<Vec<String>>> {
    let mut pool = TOKENS
        .lock()
        .map_err(|_| anyhow::anyhow!("token pool poisoned"))?;
    if pool.is_empty() {
        return Ok(None);
    }
    anyhow::ensure!(pool.len() >= n, "the token pool ran dry");
    let at = pool.len() - n;
    Ok(Some(pool.split_off(at)))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn call(
    agent: &ureq::Agent,
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut r = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())?;
    let v: serde_json::Value = serde_json::from_str(
        &r.body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()?,
    )?;
    if let Some(e) = v.get("error") {
        anyhow::bail!("{method}: {e}");
    }
    Ok(v["result"].clone())
}

fn json_of<T: Lcj>(x: &T) -> serde_json::Value {
    serde_json::from_slice(&x.to_lcj()).expect("LCJ is JSON")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn x25519(secret: [u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes()
}

/// Percentiles of latencies, in ms.
fn report(name: &str, count: u64, unit: &str, elapsed: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{name}: {count} {unit} in {:.2} s = {:.0} {unit}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
}

/// Mints the phases' worth of tokens: the creates, the single-client ones,
/// the keyinit users' 256 each, and the incremental 1,000.
fn mint_for(args: &Args, issuer: &Arc<ks_core::token::IssuerSecret>) -> anyhow::Result<()> {
    let need = args.users + 200 + args.keyinit_users.min(args.users) * 256 + 1000;
    let started = Instant::now();
    mint(issuer, need as usize)?;
    println!(
        "minted {need} tokens in {:.1} s (setup, not measured)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fills the token pool with `n` tokens of `issuer`, on every core.
fn mint(issuer: &Arc<ks_core::token::IssuerSecret>, n: usize) -> anyhow::Result<()> {
    let digest = ks_core::token::challenge_digest("localhost", "localhost/kt/v1");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let parts: Vec<_> = (0..threads)
        .map(|t| {
            let issuer = issuer.clone();
            let count = n / threads + usize::from(t < n % threads);
            std::thread::spawn(move || keyserverd::tokens::mint(&issuer, &digest, count))
        })
        .collect();
    let mut pool = TOKENS
        .lock()
        .map_err(|_| anyhow::anyhow!("token pool poisoned"))?;
    for p in parts {
        pool.extend(
            p.join()
                .map_err(|_| anyhow::anyhow!("minting panicked"))??,
        );
    }
    Ok(())
}

/// A user's keys, derived from its number (so phases can find them again).
fn user_key(i: u64) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&i.to_be_bytes());
    seed[8] = 0x5a;
    SigningKey::from_bytes(&seed)
}

/// `user` and `i` in base 8 with the digits 2–9 (0, 1 and j are folded by
/// the identity mapping, so they cannot appear in a mapped name).
fn user_name(i: u64) -> String {
    let mut digits = Vec::new();
    let mut n = i;
    loop {
        digits.push(char::from(b'2' + (n % 8) as u8));
        n /= 8;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    format!("user{}@localhost", digits.into_iter().collect::<String>())
}

/// Registers user `i` (a fresh UID with LASTENTRY `head`); the latency.
fn create_user(agent: &ureq::Agent, url: &str, head: &Entry, i: u64) -> anyhow::Result<Duration> {
    let key = user_key(i);
    let keys = UidKeys {
        sig_key: &key,
        escrow: None,
        static_key: x25519([7; 32]),
    };
    let c = author::content(&user_name(i), &keys, 0, Some(head), "strict", now());
    let msg = author::sign_create(c, &keys);
    let mut params = serde_json::json!({"UIDMessage": json_of(&msg)});
    if let Some(mut t) = pay(1)? {
        params["Token"] = serde_json::Value::String(t.remove(0));
    }
    let t = Instant::now();
    call(agent, url, "KeyRepository.CreateUID", params)?;
    Ok(t.elapsed())
}

/// Runs tasks 0..`total` on `clients` threads, each with its own HTTP
/// connection; the latencies the tasks return.
fn concurrently(
    clients: usize,
    total: u64,
    task: impl Fn(&ureq::Agent, u64) -> anyhow::Result<Duration> + Send + Sync + 'static,
) -> anyhow::Result<Vec<Duration>> {
    let next = Arc::new(AtomicU64::new(0));
    let task = Arc::new(task);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (next, task) = (next.clone(), task.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let agent = agent();
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok(lat);
                    }
                    lat.push(task(&agent, i)?);
                }
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().map_err(|_| anyhow::anyhow!("client panicked"))??);
    }
    Ok(lat)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let _dir = tempfile::tempdir()?;
    let mut witness = None;
    let mut sync_addr = None;
    let (url, pin) = match (&args.url, &args.pin) {
        (Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => {
            let mut submit_to = Vec::new();
            if args.witnessed > 0 {
                let log_vkey = keyserverd::daemon::log_key(_dir.path(), "localhost")?;
                let (child, target) = start_witness(&_dir.path().join("witness"), &log_vkey)?;
                submit_to.push(target);
                witness = Some(child);
            }
            let running =
                runtime.block_on(keyserverd::daemon::start(keyserverd::daemon::Options {
                    data_dir: _dir.path().to_path_buf(),
                    domain: "localhost".into(),
                    listen: "127.0.0.1:0".parse()?,
                    checkpoint_interval: Duration::from_millis(1000),
                    limits: keyserverd::limits::LimitsConfig {
                        enabled: false,
                        registrations_per_hour: 1,
                    },
                    tls: None,
                    tokens_required: args.tokens,
                    lookup: false,
                    admin_listen: None,
                    submit_to,
                    publish_quorum: None,
                    genesis_lifetime_secs: None,
                    sync_listen: Some("127.0.0.1:0".parse()?),
                    mirror_cosigners: Vec::new(),
                }))?;
            sync_addr = running.sync_addr;
            if let Some(issuer) = &running.issuer {
                mint_for(&args, issuer)?;
            }
            (format!("http://{}/", running.addr), running.pin.clone())
        }
    };
    if let (true, Some(dir)) = (args.tokens, &args.server_dir) {
        let issuer = keyserverd::tokens::load_or_create_issuer(dir)?;
        mint_for(&args, &Arc::new(issuer))?;
    }
    let pin_line = pin.clone();
    let pin = Pin::parse(&pin).context("pin")?;
    let skip = |p: &str| args.skip.iter().any(|s| s == p);
    // LASTENTRY for every submission: the newest published entry.
    let head = {
        let v = call(
            &agent(),
            &url,
            "KeyRepository.FetchLastHashChain",
            serde_json::json!({}),
        )?;
        let raw = b64::decode(v["HCEntry"].as_str().context("HCEntry")?).context("b64")?;
        Entry::from_bytes(&raw)?
    };

    if args.witnessed > 0 {
        // One registration at a time, each timed from the call to the
        // first published (so witnessed) checkpoint that covers it.
        let agent = agent();
        let mut lat = Vec::new();
        let started = Instant::now();
        for i in 0..args.witnessed {
            let key = user_key(1_000_000_000 + i);
            let keys = UidKeys {
                sig_key: &key,
                escrow: None,
                static_key: x25519([7; 32]),
            };
            let c = author::content(
                &user_name(1_000_000_000 + i),
                &keys,
                0,
                Some(&head),
                "strict",
                now(),
            );
            let mut params =
                serde_json::json!({"UIDMessage": json_of(&author::sign_create(c, &keys))});
            if let Some(mut t) = pay(1)? {
                params["Token"] = serde_json::Value::String(t.remove(0));
            }
            let t = Instant::now();
            let r = call(&agent, &url, "KeyRepository.CreateUID", params)?;
            let pos = r["UIDMessageReply"]["ENTRY"]["HASHCHAINPOS"]
                .as_u64()
                .context("HASHCHAINPOS")?;
            while published_size(&agent, &url)? <= pos {
                std::thread::sleep(Duration::from_millis(5));
            }
            lat.push(t.elapsed());
        }
        report(
            "CreateUID → witnessed published checkpoint",
            args.witnessed,
            "creates",
            started.elapsed(),
            lat,
        );
    }

    if !skip("create") {
        let (url2, head2) = (url.clone(), head);
        let started = Instant::now();
        let lat = concurrently(args.clients, args.users, move |agent, i| {
            create_user(agent, &url2, &head2, i)
        })?;
        report(
            &format!("CreateUID ({} clients)", args.clients),
            args.users,
            "creates",
            started.elapsed(),
            lat,
        );
        // One client alone, for the single-client latency.
        let agent = agent();
        let started = Instant::now();
        let lat = (args.users..args.users + 200)
            .map(|i| create_user(&agent, &url, &head, i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        report(
            "CreateUID (1 client)",
            200,
            "creates",
            started.elapsed(),
            lat,
        );
    }

    if !skip("keyinits") {
        let users = args.keyinit_users.min(args.users);
        let url2 = url.clone();
        let started = Instant::now();
        // One task per user: four calls of 64.
        let lat = concurrently(
            args.clients.min(users as usize).max(1),
            users,
            move |agent, i| {
                let key = user_key(i);
                let pk = b64::encode(key.verifying_key().as_bytes());
                let t = Instant::now();
                for call_no in 0..4u64 {
                    let kis: Vec<serde_json::Value> = (0..64u64)
                        .map(|j| {
                            let n = call_no * 64 + j + 1;
                            let mut pf = [0u8; 32];
                            pf[..8].copy_from_slice(&(i * 1000 + n).to_be_bytes());
                            let ki = author::key_init(
                                &key,
                                "localhost",
                                &author::anchor(&x25519(pf), "mix.localhost", "bnltYWRkcmVzcw=="),
                                &[1; 16],
                                n,
                                n % 32 == 0,
                                now() - 60,
                                now() + 86_400,
                            );
                            json_of(&ki)
                        })
                        .collect();
                    let mut params = serde_json::json!({"SigPubKey": pk, "KeyInits": kis});
                    if let Some(t) = pay(64)? {
                        params["Tokens"] = serde_json::json!(t);
                    }
                    call(agent, &url2, "KeyInitRepository.AddKeyInit", params)?;
                }
                Ok(t.elapsed() / 4)
            },
        )?;
        report(
            "AddKeyInit (calls of 64; latency per call)",
            users * 256,
            "KeyInits",
            started.elapsed(),
            lat,
        );

        if !skip("fetch-keyinit") {
            let hashes: Arc<Vec<String>> = Arc::new(
                (0..users)
                    .map(|i| ks_core::keyinit::sig_key_hash(user_key(i).verifying_key().as_bytes()))
                    .collect(),
            );
            let total = users * 200;
            let url2 = url.clone();
            let started = Instant::now();
            let lat = concurrently(args.clients, total, move |agent, n| {
                let h = &hashes[(n % hashes.len() as u64) as usize];
                let t = Instant::now();
                call(
                    agent,
                    &url2,
                    "KeyInitRepository.FetchKeyInit",
                    serde_json::json!({"SigKeyHash": h}),
                )?;
                Ok(t.elapsed())
            })?;
            report(
                &format!("FetchKeyInit ({} clients, deleting)", args.clients),
                total,
                "fetches",
                started.elapsed(),
                lat,
            );
        }
    }

    // Wait for the checkpoint to cover everything appended.
    let agent = agent();
    let size = loop {
        let v = call(
            &agent,
            &url,
            "KeyRepository.FetchLastHashChain",
            serde_json::json!({}),
        )?;
        let pos = v["HCPos"].as_u64().context("HCPos")?;
        std::thread::sleep(Duration::from_millis(1100));
        let again = call(
            &agent,
            &url,
            "KeyRepository.FetchLastHashChain",
            serde_json::json!({}),
        )?;
        if again["HCPos"].as_u64() == Some(pos) {
            break pos + 1;
        }
    };

    if !skip("fetch-chain") {
        let started = Instant::now();
        let mut lat = Vec::new();
        let mut at = 0;
        while at < size {
            let t = Instant::now();
            let v = call(
                &agent,
                &url,
                "KeyRepository.FetchHashChain",
                serde_json::json!({"StartPosition": at, "EndPosition": size - 1}),
            )?;
            lat.push(t.elapsed());
            at += v["HCEntries"].as_array().context("entries")?.len() as u64;
        }
        report(
            "FetchHashChain (1 client, chunks of 4096)",
            size,
            "entries",
            started.elapsed(),
            lat,
        );
    }

    if let (false, Some(sync)) = (skip("mirror"), sync_addr) {
        let mirror_dir = tempfile::tempdir()?;
        let started = Instant::now();
        let running = runtime.block_on(keyserverd::mirror::start_mirror(
            keyserverd::mirror::MirrorOptions {
                data_dir: mirror_dir.path().to_path_buf(),
                from: url.clone(),
                sync: sync.to_string(),
                pin: pin_line.clone(),
                listen: "127.0.0.1:0".parse()?,
                sync_listen: "127.0.0.1:0".parse()?,
                proxy_writes: false,
                witnesses: Vec::new(),
                tls: None,
                name: "bench-mirror".into(),
            },
        ))?;
        let bootstrap = started.elapsed();
        let mirror_url = format!("http://{}/", running.addr);
        loop {
            if published_size(&agent, &mirror_url).unwrap_or(0) >= size {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let all = started.elapsed();
        let follow = all - bootstrap;
        println!(
            "mirror catch-up: {size} entries in {:.2} s ({:.2} s verifying the primary's chain from the pin, then {:.2} s over LKTL/1 with every UID fetched and checked = {:.0} entries/s)",
            all.as_secs_f64(),
            bootstrap.as_secs_f64(),
            follow.as_secs_f64(),
            size as f64 / follow.as_secs_f64()
        );
    }

    if !skip("sync") {
        let started = Instant::now();
        let mut client = Client::new(&url, pin.clone());
        let s = client.sync()?;
        let full = started.elapsed();
        println!(
            "full verified sync (RPC chunks): {} entries in {:.2} s = {:.0} entries/s",
            s.to,
            full.as_secs_f64(),
            s.to as f64 / full.as_secs_f64()
        );
        if !skip("scan") {
            let t = Instant::now();
            let none = client.lookup("nobody@localhost")?;
            println!(
                "identity scan over {} entries, name absent (midstates, no fetch): {:.2} ms (found: {})",
                client.size(),
                t.elapsed().as_secs_f64() * 1e3,
                none.is_some()
            );
            let t = Instant::now();
            let found = client.lookup(&user_name(0))?;
            println!(
                "identity lookup over {} entries (scan + fetch + verify): {:.1} ms (found: {})",
                client.size(),
                t.elapsed().as_secs_f64() * 1e3,
                found.is_some()
            );
        }
    }
    if !skip("incremental") {
        // 1,000 more registrations, then an incremental sync of exactly them.
        let mut client = Client::new(&url, pin.clone());
        client.sync()?;
        let before = client.size();
        let base = args.users + 1_000_000;
        for i in base..base + 1000 {
            create_user(&agent, &url, &head, i)?;
        }
        loop {
            let v = call(
                &agent,
                &url,
                "KeyRepository.FetchLastHashChain",
                serde_json::json!({}),
            )?;
            if v["HCPos"].as_u64().context("HCPos")? + 1 >= before + 1000 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let t = Instant::now();
        let s = client.sync()?;
        println!(
            "incremental verified sync of {} entries (from {}): {:.1} ms",
            s.to - s.from,
            s.from,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    if let Some(mut w) = witness {
        let _ = w.kill();
        let _ = w.wait();
    }
    Ok(())
}
