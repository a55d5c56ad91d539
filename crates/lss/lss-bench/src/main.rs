//! `lss-bench`: a load generator for any Lightning Storage Server endpoint.
//!
//! The workload is a signer's: each simulated client has its own key and
//! namespace; a put carries 1–5 keys of 200 B–4 KiB at the next version and
//! its MAC; the server's MAC is checked on every reply (a server that skips
//! the work is caught, not rewarded). Phases run one after another, each
//! bounded in count or time; while a phase runs, a separate connection pings
//! every 10 ms and its latency is reported beside the phase's.
//!
//! To stay out of the way of the server on a small machine, everything that
//! can be is prepared before the clock starts: keys, shared secrets, tokens,
//! connections, a pool of random value bytes (values are slices of it).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use lss_core::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lss_core::{shared_hmac, KeyValue, SharedSecret, PUT_CLIENT_NONCE, PUT_SERVER_NONCE};
use lss_proto::lightning_storage_client::LightningStorageClient;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};

use proc_sample as procfs;

/// Load generator for Lightning Storage Servers (Lightkeeper's lssd, the
/// reference lssd, or anything speaking lss.LightningStorage).
#[derive(Debug, Parser)]
#[command(name = "lss-bench", version)]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:55551")]
    server: String,

    /// Phases to run, comma-separated: ping, seq-put, concurrent, batch,
    /// get-one, get-prefix, and the scale phases idle (pings while
    /// --idle-connections are held open) and namespaces (one signer put from
    /// each of --namespaces new clients over 64 connections).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ping,seq-put,concurrent,batch,get-one,get-prefix"
    )]
    phases: Vec<Phase>,

    /// Client counts of the concurrent phase.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
    clients: Vec<usize>,

    /// Duration of each concurrent phase, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,

    /// Operations of each counted phase (ping, seq-put, batch, get-one, get-prefix).
    #[arg(long, default_value_t = 1_000)]
    count: u64,

    /// Keys per put of the batch phase.
    #[arg(long, default_value_t = 50)]
    batch_keys: usize,

    /// Keys in the namespace read by the get-prefix phase (~2 KiB values).
    #[arg(long, default_value_t = 1_000)]
    prefix_keys: usize,

    /// Connections the idle phase opens and holds (a handshake each, then nothing).
    #[arg(long, default_value_t = 1_000)]
    idle_connections: usize,

    /// New clients of the namespaces phase.
    #[arg(long, default_value_t = 10_000)]
    namespaces: usize,

    /// Exact keys per put of the concurrent phase (default: 1 to 5 at random).
    #[arg(long)]
    keys_per_put: Option<usize>,

    /// Exact value size in bytes (default: 200 to 4096 at random).
    #[arg(long)]
    value_bytes: Option<usize>,

    /// The server's process id, for CPU seconds per operation, peak RSS and
    /// bytes written to disk per payload byte (Linux /proc).
    #[arg(long)]
    server_pid: Option<u32>,

    /// Ask for the verifiable log's signed receipt with every put and a
    /// signed checkpoint and proof with every get (lssd; the reply must
    /// carry them). The receipts are not checked here: this measures the
    /// server.
    #[arg(long)]
    verify: bool,

    /// Also count disk writes of every process with this name (e.g.
    /// `postgres` when lssd stores in PostgreSQL).
    #[arg(long)]
    io_process_name: Option<String>,

    /// Seed of the workload's randomness (default: from the clock; each run
    /// uses fresh client keys so reruns never collide with old data).
    #[arg(long)]
    seed: Option<u64>,

    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    Ping,
    SeqPut,
    Concurrent,
    Batch,
    GetOne,
    GetPrefix,
    Idle,
    Namespaces,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1_000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?}: use ms, s or m")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Latency percentiles in microseconds.
#[derive(Debug, Default, Serialize)]
struct Latency {
    count: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

/// What the server process spent during a phase.
#[derive(Debug, Default, Serialize)]
struct ServerCost {
    cpu_seconds: f64,
    cpu_us_per_op: f64,
    disk_write_bytes: u64,
    disk_bytes_per_payload_byte: f64,
}

#[derive(Debug, Serialize)]
struct PhaseReport {
    phase: String,
    clients: usize,
    seconds: f64,
    ops: u64,
    ops_per_sec: f64,
    keys_per_sec: f64,
    payload_bytes: u64,
    errors: u64,
    conflicts: u64,
    latency: Latency,
    side_ping: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<ServerCost>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    error_samples: Vec<String>,
    /// Scale phases: the server's resident memory before and after, and
    /// the growth per thing held (connection or namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    rss: Option<RssGrowth>,
}

#[derive(Debug, Serialize)]
struct RssGrowth {
    before_bytes: u64,
    after_bytes: u64,
    per_item_bytes: f64,
    items: usize,
}

impl RssGrowth {
    fn of(pid: Option<u32>, before: Option<u64>, items: usize) -> Option<Self> {
        let before = before?;
        let after = procfs::rss(pid?)?;
        Some(RssGrowth {
            before_bytes: before,
            after_bytes: after,
            per_item_bytes: after.saturating_sub(before) as f64 / items.max(1) as f64,
            items,
        })
    }
}

#[derive(Debug, Serialize)]
struct Report {
    server: String,
    server_version: String,
    seed: u64,
    phases: Vec<PhaseReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_peak_rss_bytes: Option<u64>,
}

/// A simulated signer: its key material, connection and versions.
struct Client {
    grpc: LightningStorageClient<Channel>,
    auth: lss_proto::Auth,
    shared: SharedSecret,
    /// Next version of each of its keys (`key{i}`).
    versions: Vec<i64>,
    /// Ask for signed receipts and checkpoints.
    verify: bool,
}

impl Client {
    fn new(channel: Channel, server: &PublicKey, seed: u64, index: u64) -> Self {
        let digest = Sha256::digest([seed.to_be_bytes(), index.to_be_bytes()].concat());
        let secret = SecretKey::from_slice(&digest).expect("a SHA-256 output is a valid key");
        let public = secret.public_key(&Secp256k1::signing_only());
        let shared = SharedSecret::derive(server, &secret);
        Client {
            grpc: LightningStorageClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            auth: lss_proto::Auth {
                client_id: public.serialize().to_vec(),
                token: shared.token().0.to_vec(),
            },
            shared,
            versions: Vec::new(),
            verify: false,
        }
    }

    fn verifying(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    fn verify_request(&self) -> Option<lss_proto::Verify> {
        self.verify.then(lss_proto::Verify::default)
    }

    /// Puts `kvs` (sorted); returns whether it committed with a valid MAC.
    async fn put(&mut self, kvs: Vec<KeyValue>) -> Result<Outcome, String> {
        let hmac = shared_hmac(&self.shared, PUT_CLIENT_NONCE, &kvs);
        let expected = shared_hmac(&self.shared, PUT_SERVER_NONCE, &kvs);
        let request = lss_proto::PutRequest {
            auth: Some(self.auth.clone()),
            kvs: kvs.into_iter().map(Into::into).collect(),
            hmac: hmac.as_bytes().to_vec(),
            verify: self.verify_request(),
            ..Default::default()
        };
        let reply = self
            .grpc
            .put(request)
            .await
            .map_err(|s| format!("put: {}: {}", s.code(), s.message()))?
            .into_inner();
        if !reply.success {
            return Ok(Outcome::Conflict);
        }
        if !expected.verify(&reply.hmac) {
            return Err("put: the server's MAC does not verify".into());
        }
        if self.verify && reply.attestation.is_none() {
            return Err("put: no signed receipt (is the verifiable log on?)".into());
        }
        Ok(Outcome::Committed)
    }

    async fn get(&mut self, prefix: &str, nonce: &[u8; 32]) -> Result<usize, String> {
        let request = lss_proto::GetRequest {
            auth: Some(self.auth.clone()),
            key_prefix: prefix.to_owned(),
            nonce: nonce.to_vec(),
            verify: self.verify_request(),
            ..Default::default()
        };
        let reply = self
            .grpc
            .get(request)
            .await
            .map_err(|s| format!("get: {}: {}", s.code(), s.message()))?
            .into_inner();
        let kvs: Vec<KeyValue> = reply.kvs.into_iter().map(Into::into).collect();
        if !shared_hmac(&self.shared, nonce, &kvs).verify(&reply.hmac) {
            return Err("get: the server's MAC does not verify".into());
        }
        Ok(kvs.len())
    }
}

enum Outcome {
    Committed,
    Conflict,
}

impl Client {
    /// Puts `(kvs, payload bytes)` and counts the outcome in `t`.
    async fn put_counted(&mut self, (kvs, bytes): (Vec<KeyValue>, u64), t: &mut Tally) {
        let keys = kvs.len() as u64;
        let start = Instant::now();
        match self.put(kvs).await {
            Ok(Outcome::Committed) => {
                record(&mut t.latency, start);
                t.ops += 1;
                t.keys += keys;
                t.payload += bytes;
            }
            Ok(Outcome::Conflict) => t.conflicts += 1,
            Err(e) => t.error(e),
        }
    }
}

/// Random value bytes, sliced into values so no bytes are generated per op.
struct ValuePool {
    bytes: Vec<u8>,
}

impl ValuePool {
    fn new(rng: &mut impl RngCore) -> Self {
        let mut bytes = vec![0u8; 1 << 20];
        rng.fill_bytes(&mut bytes);
        ValuePool { bytes }
    }

    fn value(&self, rng: &mut impl Rng, len: usize) -> Vec<u8> {
        let start = rng.gen_range(0..self.bytes.len() - len);
        self.bytes[start..start + len].to_vec()
    }
}

/// Shapes of puts.
#[derive(Clone, Copy)]
struct Shape {
    keys: (usize, usize),
    value: (usize, usize),
}

impl Shape {
    /// The next put of `client`: distinct keys, sorted, each at its next version.
    fn next(
        &self,
        client: &mut Client,
        rng: &mut impl Rng,
        pool: &ValuePool,
    ) -> (Vec<KeyValue>, u64) {
        let n = rng.gen_range(self.keys.0..=self.keys.1);
        if client.versions.len() < self.keys.1 {
            client.versions.resize(self.keys.1, 0);
        }
        let mut indices: Vec<usize> =
            rand::seq::index::sample(rng, client.versions.len(), n).into_vec();
        indices.sort_unstable();
        let mut bytes = 0;
        let kvs = indices
            .into_iter()
            .map(|i| {
                let len = rng.gen_range(self.value.0..=self.value.1);
                bytes += len as u64;
                let version = client.versions[i];
                client.versions[i] += 1;
                KeyValue::new(format!("key{i:05}"), version, pool.value(rng, len))
            })
            .collect();
        (kvs, bytes)
    }
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_owned())
        .context("invalid server URL")?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, since: Instant) {
    let us = since.elapsed().as_micros().clamp(1, 60_000_000) as u64;
    h.saturating_record(us);
}

/// Pings every 10 ms on its own connection until told to stop.
fn side_pinger(
    channel: Channel,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Histogram<u64>>,
) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut grpc = LightningStorageClient::new(channel);
        let mut h = histogram();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let start = Instant::now();
                    if grpc.ping(lss_proto::PingRequest { message: String::new() }).await.is_ok() {
                        record(&mut h, start);
                    }
                }
                _ = stopped.changed() => break,
            }
        }
        h
    });
    (stop, task)
}

/// Counters one worker returns.
struct Tally {
    latency: Histogram<u64>,
    ops: u64,
    keys: u64,
    payload: u64,
    errors: u64,
    conflicts: u64,
    samples: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency: histogram(),
            ops: 0,
            keys: 0,
            payload: 0,
            errors: 0,
            conflicts: 0,
            samples: Vec::new(),
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.samples.len() < 3 {
            self.samples.push(e);
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        self.ops += other.ops;
        self.keys += other.keys;
        self.payload += other.payload;
        self.errors += other.errors;
        self.conflicts += other.conflicts;
        for s in other.samples {
            if self.samples.len() < 3 {
                self.samples.push(s);
            }
        }
    }
}

/// Runs a phase's measurement with the side pinger and server accounting.
struct Bench {
    args: Args,
    server: PublicKey,
    seed: u64,
    next_client: u64,
    pool: ValuePool,
    rng: rand::rngs::StdRng,
    side: Channel,
}

impl Bench {
    async fn clients(&mut self, n: usize) -> anyhow::Result<Vec<Client>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let channel = connect(&self.args.server).await?;
            self.next_client += 1;
            out.push(
                Client::new(channel, &self.server, self.seed, self.next_client)
                    .verifying(self.args.verify),
            );
        }
        Ok(out)
    }

    fn server_sample(&self) -> Option<procfs::Sample> {
        procfs::sample(self.args.server_pid, self.args.io_process_name.as_deref())
    }

    async fn measure<F>(&mut self, phase: &str, clients: usize, run: F) -> PhaseReport
    where
        F: std::future::Future<Output = Tally>,
    {
        let (stop, pinger) = side_pinger(self.side.clone());
        let before = self.server_sample();
        let start = Instant::now();
        let tally = run.await;
        let seconds = start.elapsed().as_secs_f64();
        let after = self.server_sample();
        let _ = stop.send(true);
        let side = pinger.await.unwrap_or_else(|_| histogram());
        let server = match (before, after) {
            (Some(b), Some(a)) => {
                let cpu = a.cpu_seconds - b.cpu_seconds;
                let disk = a.write_bytes.saturating_sub(b.write_bytes);
                Some(ServerCost {
                    cpu_seconds: cpu,
                    cpu_us_per_op: if tally.ops > 0 {
                        cpu * 1e6 / tally.ops as f64
                    } else {
                        0.0
                    },
                    disk_write_bytes: disk,
                    disk_bytes_per_payload_byte: if tally.payload > 0 {
                        disk as f64 / tally.payload as f64
                    } else {
                        0.0
                    },
                })
            }
            _ => None,
        };
        PhaseReport {
            phase: phase.to_owned(),
            clients,
            seconds,
            ops: tally.ops,
            ops_per_sec: tally.ops as f64 / seconds,
            keys_per_sec: tally.keys as f64 / seconds,
            payload_bytes: tally.payload,
            errors: tally.errors,
            conflicts: tally.conflicts,
            latency: Latency::of(&tally.latency),
            side_ping: Latency::of(&side),
            server,
            error_samples: tally.samples,
            rss: None,
        }
    }

    async fn ping(&mut self) -> anyhow::Result<PhaseReport> {
        let mut grpc = LightningStorageClient::new(connect(&self.args.server).await?);
        let count = self.args.count;
        Ok(self
            .measure("ping", 1, async move {
                let mut t = Tally::new();
                for _ in 0..count {
                    let start = Instant::now();
                    match grpc
                        .ping(lss_proto::PingRequest {
                            message: "bench".into(),
                        })
                        .await
                    {
                        Ok(_) => {
                            record(&mut t.latency, start);
                            t.ops += 1;
                        }
                        Err(s) => t.error(format!("ping: {s}")),
                    }
                }
                t
            })
            .await)
    }

    /// Pings (`count`) while `idle_connections` connections are held open.
    async fn idle(&mut self) -> anyhow::Result<PhaseReport> {
        let before = self.args.server_pid.and_then(procfs::rss);
        let mut held = Vec::with_capacity(self.args.idle_connections);
        for _ in 0..self.args.idle_connections {
            held.push(connect(&self.args.server).await?);
        }
        let mut report = self.ping().await?;
        report.phase = "idle".into();
        report.clients = held.len();
        report.rss = RssGrowth::of(self.args.server_pid, before, held.len());
        drop(held);
        Ok(report)
    }

    /// One signer-shaped put from each of `namespaces` new clients, 64 at a
    /// time over 64 connections.
    async fn namespaces(&mut self, shape: Shape) -> anyhow::Result<PhaseReport> {
        const LANES: usize = 64;
        let before = self.args.server_pid.and_then(procfs::rss);
        let total = self.args.namespaces;
        let mut channels = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            channels.push(connect(&self.args.server).await?);
        }
        // Keys and secrets before the clock: an ECDH each.
        let mut lanes: Vec<Vec<Client>> = (0..LANES).map(|_| Vec::new()).collect();
        for i in 0..total {
            self.next_client += 1;
            let client = Client::new(
                channels[i % LANES].clone(),
                &self.server,
                self.seed,
                self.next_client,
            )
            .verifying(self.args.verify);
            lanes[i % LANES].push(client);
        }
        let pool = std::sync::Arc::new(ValuePool {
            bytes: self.pool.bytes.clone(),
        });
        let seeds: Vec<u64> = (0..LANES).map(|_| self.rng.gen()).collect();
        let mut report = self
            .measure("namespaces", total, async move {
                let workers: Vec<_> = lanes
                    .into_iter()
                    .zip(seeds)
                    .map(|(clients, seed)| {
                        let pool = pool.clone();
                        tokio::spawn(async move {
                            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                            let mut t = Tally::new();
                            for mut client in clients {
                                let put = shape.next(&mut client, &mut rng, &pool);
                                client.put_counted(put, &mut t).await;
                            }
                            t
                        })
                    })
                    .collect();
                let mut total = Tally::new();
                for worker in workers {
                    match worker.await {
                        Ok(t) => total.merge(t),
                        Err(e) => total.error(format!("worker: {e}")),
                    }
                }
                total
            })
            .await;
        report.rss = RssGrowth::of(self.args.server_pid, before, total);
        Ok(report)
    }

    /// One client, puts one after another, until `count`.
    async fn counted_puts(&mut self, phase: &str, shape: Shape) -> anyhow::Result<PhaseReport> {
        let mut client = self.clients(1).await?.remove(0);
        let count = self.args.count;
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.rng.gen());
        // Prepared before the clock starts.
        let puts: Vec<(Vec<KeyValue>, u64)> = (0..count)
            .map(|_| shape.next(&mut client, &mut rng, &self.pool))
            .collect();
        Ok(self
            .measure(phase, 1, async move {
                let mut t = Tally::new();
                for put in puts {
                    client.put_counted(put, &mut t).await;
                }
                t
            })
            .await)
    }

    /// `n` clients, each putting as fast as its replies come, for the duration.
    async fn concurrent(&mut self, n: usize, shape: Shape) -> anyhow::Result<PhaseReport> {
        let clients = self.clients(n).await?;
        let duration = self.args.duration;
        let seeds: Vec<u64> = (0..n).map(|_| self.rng.gen()).collect();
        let pool = std::sync::Arc::new(ValuePool {
            bytes: self.pool.bytes.clone(),
        });
        Ok(self
            .measure("concurrent", n, async move {
                let deadline = Instant::now() + duration;
                let workers: Vec<_> = clients
                    .into_iter()
                    .zip(seeds)
                    .map(|(mut client, seed)| {
                        let pool = pool.clone();
                        tokio::spawn(async move {
                            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                            let mut t = Tally::new();
                            while Instant::now() < deadline {
                                let put = shape.next(&mut client, &mut rng, &pool);
                                client.put_counted(put, &mut t).await;
                            }
                            t
                        })
                    })
                    .collect();
                let mut total = Tally::new();
                for worker in workers {
                    match worker.await {
                        Ok(t) => total.merge(t),
                        Err(e) => total.error(format!("worker: {e}")),
                    }
                }
                total
            })
            .await)
    }

    /// Reads of one key, or of a prefix holding `keys` keys of ~2 KiB.
    async fn gets(&mut self, phase: &str, keys: usize) -> anyhow::Result<PhaseReport> {
        let mut client = self.clients(1).await?.remove(0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.rng.gen());
        let mut names: Vec<String> = (0..keys).map(|i| format!("state/{i:06}")).collect();
        names.sort();
        for chunk in names.chunks(100) {
            let kvs = chunk
                .iter()
                .map(|k| KeyValue::new(k.clone(), 0, self.pool.value(&mut rng, 2_048)))
                .collect();
            match client.put(kvs).await {
                Ok(Outcome::Committed) => {}
                Ok(Outcome::Conflict) => bail!("{phase}: the setup put conflicted"),
                Err(e) => bail!("{phase}: setup failed: {e}"),
            }
        }
        let prefix = if keys == 1 {
            names[0].clone()
        } else {
            "state/".into()
        };
        let count = self.args.count;
        Ok(self
            .measure(phase, 1, async move {
                let mut t = Tally::new();
                let nonce = [7u8; 32];
                for _ in 0..count {
                    let start = Instant::now();
                    match client.get(&prefix, &nonce).await {
                        Ok(n) if n == keys => {
                            record(&mut t.latency, start);
                            t.ops += 1;
                            t.keys += n as u64;
                        }
                        Ok(n) => t.error(format!("get returned {n} keys, expected {keys}")),
                        Err(e) => t.error(e),
                    }
                }
                t
            })
            .await)
    }
}

fn print_table(report: &Report) {
    println!(
        "server {} (version {:?}), seed {}",
        report.server, report.server_version, report.seed
    );
    println!(
        "{:<12} {:>4} {:>9} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>7} {:>9} {:>9} {:>8} {:>8}",
        "phase",
        "cli",
        "ops",
        "ops/s",
        "keys/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "ping p50",
        "ping p99",
        "cpu µs/op",
        "disk B/B"
    );
    let ms = |us: u64| us as f64 / 1_000.0;
    for p in &report.phases {
        let (cpu, disk) = p.server.as_ref().map_or(("-".into(), "-".into()), |s| {
            (
                format!("{:.0}", s.cpu_us_per_op),
                format!("{:.2}", s.disk_bytes_per_payload_byte),
            )
        });
        println!(
            "{:<12} {:>4} {:>9} {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>7} {:>9.2} {:>9.2} {:>8} {:>8}",
            p.phase,
            p.clients,
            p.ops,
            p.ops_per_sec,
            p.keys_per_sec,
            ms(p.latency.p50_us),
            ms(p.latency.p90_us),
            ms(p.latency.p99_us),
            ms(p.latency.max_us),
            p.errors + p.conflicts,
            ms(p.side_ping.p50_us),
            ms(p.side_ping.p99_us),
            cpu,
            disk
        );
        for sample in &p.error_samples {
            println!("  error: {sample}");
        }
        if let Some(rss) = &p.rss {
            println!(
                "  server RSS {:.1} → {:.1} MiB: {:.0} bytes per {}",
                rss.before_bytes as f64 / 1048576.0,
                rss.after_bytes as f64 / 1048576.0,
                rss.per_item_bytes,
                if p.phase == "idle" {
                    "idle connection"
                } else {
                    "namespace"
                }
            );
        }
    }
    if let Some(rss) = report.server_peak_rss_bytes {
        println!("server peak RSS: {:.1} MiB", rss as f64 / (1024.0 * 1024.0));
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let side = connect(&args.server).await?;
    let info = LightningStorageClient::new(side.clone())
        .info(lss_proto::InfoRequest {})
        .await
        .with_context(|| format!("Info from {}", args.server))?
        .into_inner();
    let server = PublicKey::from_slice(&info.server_id).context("the server sent an invalid id")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pool = ValuePool::new(&mut rng);
    let signer = Shape {
        keys: args.keys_per_put.map_or((1, 5), |k| (k, k)),
        value: args.value_bytes.map_or((200, 4_096), |v| (v, v)),
    };
    let batch = Shape {
        keys: (args.batch_keys, args.batch_keys),
        value: signer.value,
    };
    let phases = args.phases.clone();
    let counts = args.clients.clone();
    let mut bench = Bench {
        args,
        server,
        seed,
        next_client: 0,
        pool,
        rng,
        side,
    };
    let mut reports = Vec::new();
    for phase in phases {
        match phase {
            Phase::Ping => reports.push(bench.ping().await?),
            Phase::SeqPut => reports.push(bench.counted_puts("seq-put", signer).await?),
            Phase::Concurrent => {
                for &n in &counts {
                    reports.push(bench.concurrent(n, signer).await?);
                }
            }
            Phase::Batch => reports.push(bench.counted_puts("batch", batch).await?),
            Phase::GetOne => reports.push(bench.gets("get-one", 1).await?),
            Phase::GetPrefix => {
                let keys = bench.args.prefix_keys;
                reports.push(bench.gets("get-prefix", keys).await?)
            }
            Phase::Idle => reports.push(bench.idle().await?),
            Phase::Namespaces => reports.push(bench.namespaces(signer).await?),
        }
    }
    let report = Report {
        server: bench.args.server.clone(),
        server_version: info.version,
        seed,
        phases: reports,
        server_peak_rss_bytes: bench.args.server_pid.and_then(procfs::peak_rss),
    };
    if bench.args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}
