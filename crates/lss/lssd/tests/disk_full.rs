//! Issue 12, "storage faults recover", as an operator meets it: `lssd` on
//! its embedded store in a real small filesystem (a 24 MiB tmpfs the test
//! mounts) is filled until puts fail, then space is freed. Puts fail with
//! a clear status while the disk is full, nothing acknowledged is lost,
//! service resumes without a restart, and an export of the data afterwards
//! verifies.

use std::path::Path;

use lk_testkit::fs::Tmpfs;
use lk_testkit::process::{run, LssdProcess};
use lss_client::{ConnectOptions, PrivClient};
use lss_core::secp256k1::SecretKey;
use lss_core::KeyValue;

fn lssd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lssd"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_puts_clearly_loses_nothing_and_recovers_without_restart() {
    let disk = Tmpfs::mount("24m");
    let data = disk.dir.join("lssd");
    let data_arg = data.to_str().expect("utf8");
    // Space the test gives back later.
    let filler = disk.dir.join("filler");
    std::fs::write(&filler, vec![1u8; 6 << 20]).expect("filler");
    // No reserve: this test fills the disk to the last byte.
    let server = LssdProcess::spawn(
        lssd(),
        &["--data-dir", data_arg, "--min-free-disk-bytes", "0"],
    )
    .expect("start");
    let secret = SecretKey::from_slice(&[0x44; 32]).expect("key");
    let mut signer = PrivClient::connect(&ConnectOptions::new(&server.url), &secret, None, [5; 32])
        .await
        .expect("connect");
    let value = vec![0x5a; 256 << 10];
    let mut acked: Vec<KeyValue> = Vec::new();
    let mut failure = None;
    for i in 0..400 {
        let kv = KeyValue::new(format!("fill/{i:04}"), 0, value.clone());
        match signer.put(vec![kv.clone()]).await {
            Ok(()) => acked.push(kv),
            Err(e) => {
                failure = Some(format!("{e:?}"));
                break;
            }
        }
    }
    let failure = failure.expect("the disk filled up");
    assert!(
        failure.contains("Unavailable") || failure.contains("ResourceExhausted"),
        "a clear status when the disk is full: {failure}"
    );
    assert!(
        acked.len() > 10,
        "only {} puts before the disk filled",
        acked.len()
    );
    // Still full: refused again. The failed transaction's pages are given
    // back when the store reopens its file, so a put or two may fit first;
    // whatever is acknowledged must then survive like the rest.
    let mut refused_again = false;
    for i in 0..20 {
        let kv = KeyValue::new(format!("still-full/{i:02}"), 0, value.clone());
        match signer.put(vec![kv.clone()]).await {
            Ok(()) => acked.push(kv),
            Err(e) => {
                let e = format!("{e:?}");
                assert!(
                    e.contains("Unavailable") || e.contains("ResourceExhausted"),
                    "a clear status when the disk is full: {e}"
                );
                refused_again = true;
                break;
            }
        }
    }
    assert!(refused_again, "puts are refused while the disk stays full");
    // Space comes back: puts resume without a restart (the first attempts
    // may find the store reopening its file).
    std::fs::remove_file(&filler).expect("free space");
    let after = KeyValue::new("after", 0, b"the disk has room again".to_vec());
    let mut resumed = false;
    for _ in 0..10 {
        if signer.put(vec![after.clone()]).await.is_ok() {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "puts resume once space is back:\n{}", server.log());
    acked.push(after);
    acked.sort_by(|a, b| a.key.cmp(&b.key));
    let stored = signer.get("", &[7; 32]).await.expect("get");
    assert_eq!(
        stored.len(),
        acked.len(),
        "every acknowledged put, nothing else"
    );
    assert!(stored == acked, "acknowledged values unchanged");
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    // The data exports and verifies.
    let out = tempfile::tempdir().expect("tempdir");
    let backup = out.path().join("after-disk-full.lkx");
    let backup = backup.to_str().expect("utf8");
    let (status, err) = run(
        lssd(),
        &["--data-dir", data_arg, "export", "--output", backup],
    );
    assert!(status.success(), "{err}");
    // Every acknowledged put is one key and one entry of the namespace's
    // verifiable log, exported with it.
    let puts = acked.len() as u64;
    let entries = puts + lss_verify::ledger::log_key_count(puts);
    assert!(err.contains(&format!("entries={entries}")), "{err}");
    let (status, err) = run(lssd(), &["verify", "--input", backup]);
    assert!(status.success() && err.contains("undamaged"), "{err}");
}

/// Waits (bounded) until the server's log contains `line`.
async fn logged(server: &LssdProcess, line: &str) {
    let waited = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !server.log().contains(line) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no {line:?} in the log:\n{}", server.log());
}

/// Issue 12's disk reserve: below `--min-free-disk-bytes` free, a client
/// that stores nothing yet is refused (`RESOURCE_EXHAUSTED`), one that
/// already stores data keeps writing, and new clients are served again once
/// space is freed, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_disk_reserve_new_clients_are_refused_and_existing_ones_write() {
    let disk = Tmpfs::mount("32m");
    let data = disk.dir.join("lssd");
    let data_arg = data.to_str().expect("utf8");
    let reserve = 8u64 << 20;
    let server = LssdProcess::spawn(
        lssd(),
        &[
            "--data-dir",
            data_arg,
            "--min-free-disk-bytes",
            &reserve.to_string(),
        ],
    )
    .expect("start");
    let client = |byte: u8| {
        let url = server.url.clone();
        async move {
            let secret = SecretKey::from_slice(&[byte; 32]).expect("key");
            PrivClient::connect(&ConnectOptions::new(&url), &secret, None, [byte; 32])
                .await
                .expect("connect")
        }
    };
    let mut existing = client(1).await;
    existing
        .put(vec![KeyValue::new("state", 0, b"before".to_vec())])
        .await
        .expect("put with room to spare");
    // Leave 4 MiB free: under the reserve, room for the existing client.
    let stat = nix::sys::statvfs::statvfs(&disk.dir).expect("statvfs");
    #[allow(clippy::useless_conversion)]
    let free = u64::from(stat.blocks_available()) * u64::from(stat.fragment_size());
    let filler = disk.dir.join("filler");
    std::fs::write(&filler, vec![1u8; (free - (4 << 20)) as usize]).expect("filler");
    logged(&server, "below min_free_disk_bytes").await;

    let mut newcomer = client(2).await;
    let refused = newcomer
        .put(vec![KeyValue::new("k", 0, b"v".to_vec())])
        .await
        .expect_err("a new namespace below the reserve");
    let refused = format!("{refused:?}");
    assert!(
        refused.contains("ResourceExhausted") && refused.contains("min_free_disk_bytes"),
        "{refused}"
    );
    existing
        .put(vec![KeyValue::new("state", 1, vec![2u8; 64 << 10])])
        .await
        .expect("an existing client still writes");

    std::fs::remove_file(&filler).expect("free space");
    logged(&server, "above min_free_disk_bytes again").await;
    newcomer
        .put(vec![KeyValue::new("k", 0, b"v".to_vec())])
        .await
        .expect("served again once space is back");
}
