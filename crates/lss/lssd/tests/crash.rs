//! Crash consistency: `lssd` is killed with SIGKILL at random moments while
//! eight signers put continuously; after every restart, every acknowledged
//! put is there with its exact value, the one put each signer had in flight
//! is there entirely or not at all, and no version ever goes backwards.
//! On the embedded store and on PostgreSQL, 20 kills each.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use lk_testkit::process::LssdProcess;
use lk_testkit::{kv, Signer};
use lss_core::KeyValue;
use lss_proto::lightning_storage_client::LightningStorageClient;
use rand::{Rng, SeedableRng};

const KILLS: usize = 20;
const WRITERS: u8 = 8;
const KEYS: [&str; 3] = ["channel/a", "channel/b", "node"];

type State = BTreeMap<String, (i64, Vec<u8>)>;

/// What a writer knows: its acknowledged state, and the put that was in
/// flight when the server died (which may or may not have been applied).
struct Writer {
    signer: Signer,
    acked: State,
    in_flight: Option<Vec<KeyValue>>,
    seq: u64,
}

async fn write_until_killed(
    mut writer: Writer,
    url: String,
    cycle: usize,
    seed: u64,
) -> (Writer, u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Ok(channel) = tonic::transport::Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
    else {
        return (writer, 0);
    };
    let mut grpc = LightningStorageClient::new(channel);
    let mut acked_now = 0;
    loop {
        // 1 to 3 distinct keys, each at its next version, one tagged value.
        let mut keys: Vec<&str> = KEYS.to_vec();
        keys.retain(|_| rng.gen_bool(0.6));
        if keys.is_empty() {
            keys.push(KEYS[rng.gen_range(0..KEYS.len())]);
        }
        writer.seq += 1;
        let value = format!("cycle {cycle} put {} ", writer.seq).repeat(rng.gen_range(1..40));
        let kvs: Vec<KeyValue> = keys
            .iter()
            .map(|k| {
                let next = writer.acked.get(*k).map_or(0, |(v, _)| v + 1);
                kv(k, next, value.as_bytes())
            })
            .collect();
        writer.in_flight = Some(kvs.clone());
        match grpc.put(writer.signer.put(&kvs)).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                assert!(
                    reply.success,
                    "a put conflicted: the server lost or invented a write"
                );
                for kv in kvs {
                    writer.acked.insert(kv.key, (kv.version, kv.value));
                }
                writer.in_flight = None;
                acked_now += 1;
            }
            // The server died under us: this put is in doubt.
            Err(_) => return (writer, acked_now),
        }
    }
}

/// Checks the restarted server against what the writer knows, and adopts
/// the stored state.
async fn verify(
    writer: &mut Writer,
    grpc: &mut LightningStorageClient<tonic::transport::Channel>,
    n: u8,
) {
    let stored: State = writer
        .signer
        .dump(grpc)
        .await
        .into_iter()
        .map(|kv| (kv.key, (kv.version, kv.value)))
        .collect();
    let in_flight = writer.in_flight.take().unwrap_or_default();
    let applied = !in_flight.is_empty()
        && in_flight
            .iter()
            .all(|kv| stored.get(&kv.key) == Some(&(kv.version, kv.value.clone())));
    let absent = in_flight
        .iter()
        .all(|kv| stored.get(&kv.key) == writer.acked.get(&kv.key));
    assert!(
        applied || absent,
        "writer {n}: the put in flight is half applied: {in_flight:?} vs {stored:?}"
    );
    let mut expected = writer.acked.clone();
    if applied {
        for kv in in_flight {
            expected.insert(kv.key, (kv.version, kv.value));
        }
    }
    assert_eq!(
        stored, expected,
        "writer {n}: an acknowledged put is missing or changed, or a version went backwards"
    );
    writer.acked = stored;
}

/// After a kill, PostgreSQL may still finish a transaction the dead server
/// had sent COMMIT for: its outcome is settled only once the server's sessions
/// are gone. Waits for that (the redb file is settled at once).
async fn settled(postgres: Option<&lk_testkit::postgres::Schema>, pid: u32) {
    let Some(schema) = postgres else { return };
    let admin = schema.client().await;
    for _ in 0..200 {
        let open: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&format!("lssd/{pid}")],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the killed lssd's PostgreSQL sessions did not end");
}

async fn crash_cycles(args: &[&str], seed: u64, postgres: Option<&lk_testkit::postgres::Schema>) {
    let bin = Path::new(env!("CARGO_BIN_EXE_lssd"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let key = lk_testkit::server_key(0x22);
    let mut writers: Vec<Writer> = (1..=WRITERS)
        .map(|n| Writer {
            signer: Signer::new(n, &key),
            acked: State::new(),
            in_flight: None,
            seq: 0,
        })
        .collect();
    let mut total = 0;
    for cycle in 0..KILLS {
        let server = LssdProcess::spawn(bin, args).expect("start lssd");
        let url = server.url.clone();
        // Every restart: what is stored must be what was acknowledged.
        let mut grpc = LightningStorageClient::new(
            tonic::transport::Channel::from_shared(url.clone())
                .expect("url")
                .connect()
                .await
                .expect("connect"),
        );
        for (n, writer) in writers.iter_mut().enumerate() {
            verify(writer, &mut grpc, n as u8 + 1).await;
        }
        let tasks: Vec<_> = writers
            .drain(..)
            .map(|w| tokio::spawn(write_until_killed(w, url.clone(), cycle, rng.gen())))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(80..400))).await;
        let pid = server.pid();
        server.kill();
        settled(postgres, pid).await;
        for task in tasks {
            let (writer, acked) = task.await.expect("writer");
            total += acked;
            writers.push(writer);
        }
    }
    let server = LssdProcess::spawn(bin, args).expect("final start");
    let mut grpc = LightningStorageClient::new(
        tonic::transport::Channel::from_shared(server.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect"),
    );
    for (n, writer) in writers.iter_mut().enumerate() {
        verify(writer, &mut grpc, n as u8 + 1).await;
    }
    println!("{KILLS} kills, {total} acknowledged puts verified (seed {seed})");
    assert!(
        total > KILLS as u64 * 10,
        "too little load to mean anything: {total}"
    );
}

fn seed() -> u64 {
    std::env::var("LK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_put_on_redb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, lk_testkit::server_key(0x22).to_hex()).expect("key");
    let data = dir.path().join("data");
    let seed = seed();
    println!("seed {seed} (rerun with LK_CRASH_SEED={seed})");
    crash_cycles(
        &[
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--server-key-file",
            key_file.to_str().expect("utf-8"),
        ],
        seed,
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_put_on_postgres() {
    let schema = lk_testkit::postgres::Schema::fresh().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, lk_testkit::server_key(0x22).to_hex()).expect("key");
    let seed = seed();
    println!("seed {seed} (rerun with LK_CRASH_SEED={seed})");
    crash_cycles(
        &[
            "--data-dir",
            dir.path().join("data").to_str().expect("utf-8"),
            "--server-key-file",
            key_file.to_str().expect("utf-8"),
            "--database",
            "postgres",
            "--postgres-url",
            &schema.url,
            "--postgres-schema",
            &schema.name,
        ],
        seed,
        Some(&schema),
    )
    .await;
}
