//! tlog.md §6.4–§6.5 on a real full disk: `tlogd` on its embedded store
//! in a 24 MiB tmpfs the test mounts, filled with appends until they fail,
//! then given space back. Appends fail with 503 while the disk is full,
//! every acknowledged append keeps its index and bytes, no append reported
//! failed is in the log, and service resumes without a restart.

mod support;

use lk_testkit::fs::Tmpfs;
use support::*;

#[test]
fn a_full_disk_fails_appends_clearly_loses_nothing_and_recovers_without_restart() {
    let disk = Tmpfs::mount("24m");
    let filler = disk.dir.join("filler");
    std::fs::write(&filler, vec![1u8; 6 << 20]).expect("filler");
    let node = start(&disk.dir.join("tlogd"));
    let token = token(&node);
    let add = format!("{}/add", node.url);
    let entry = |i: usize| {
        let mut e = format!("entry {i:05} ").into_bytes();
        e.resize(60_000, b'x');
        e
    };
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let (status, body) = post_as(&add, Some(&token), &entry(i));
        if status == 200 {
            acked.push((body.trim().parse::<u64>().expect("an index"), entry(i)));
        } else {
            refused = Some(status);
            break;
        }
    }
    assert_eq!(refused, Some(503), "a full disk answers 503");
    assert!(
        acked.len() > 10,
        "only {} appends before the disk filled",
        acked.len()
    );
    // Space back: appends resume without a restart.
    std::fs::remove_file(&filler).expect("free space");
    let last = entry(9999);
    let mut resumed = None;
    for _ in 0..10 {
        let (status, body) = post_as(&add, Some(&token), &last);
        if status == 200 {
            resumed = Some(body.trim().parse::<u64>().expect("an index"));
            break;
        }
    }
    let index = resumed.expect("appends resume once space is back");
    acked.push((index, last));
    // Exactly the acknowledged entries, each at its index.
    assert_eq!(
        index as usize + 1,
        acked.len(),
        "no entry reported failed is in the log"
    );
    published(&node, acked.len() as u64);
    // The client's files go elsewhere: the small disk is the server's.
    let client = tempfile::tempdir().expect("tempdir");
    let state = client.path().join("view");
    let entries = client.path().join("entries.hex");
    let out = cli(&[
        "sync",
        "--url",
        &node.url,
        "--vkey",
        &vkey(&node),
        "--state",
        state.to_str().expect("utf8"),
        "--entries",
        entries.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: Vec<String> = std::fs::read_to_string(&entries)
        .expect("entries")
        .lines()
        .map(str::to_string)
        .collect();
    for (index, bytes) in &acked {
        assert_eq!(verified.get(*index as usize), Some(&hex::encode(bytes)));
    }
}
