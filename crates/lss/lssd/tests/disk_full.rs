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
    let server = LssdProcess::spawn(lssd(), &["--data-dir", data_arg]).expect("start");
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
    assert!(err.contains(&format!("entries={}", acked.len())), "{err}");
    let (status, err) = run(lssd(), &["verify", "--input", backup]);
    assert!(status.success() && err.contains("undamaged"), "{err}");
}
