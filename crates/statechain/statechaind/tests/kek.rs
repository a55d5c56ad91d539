//! statechain.md §2.6 and §9.3: secrets at rest are sealed under a KEK;
//! `statechaind kek rotate` (offline, with compaction) and the scheduled
//! rotation re-seal the live ones under a new key and shred the old key,
//! so a share erased before the rotation (withdrawal) can no longer be
//! opened by anyone holding the disk, while live coins keep working.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use lk_testkit::process::workspace_binary;
use serde_json::json;
use statechain_core::auth::Op;
use statechaind::codec::key;
use statechaind::seal::Kek;
use statechaind::store::TABLE;
use support::{scalar, se_id, start, Http, Owner};

fn row(dir: &Path, k: &[u8]) -> Option<Vec<u8>> {
    let db = redb::Database::create(dir.join("statechain.redb")).expect("db");
    let txn = db.begin_read().expect("read");
    let table = txn.open_table(TABLE).expect("table");
    let v = table.get(k).expect("get").map(|v| v.value().to_vec());
    v
}

fn kek(dir: &Path, epoch: u32) -> Option<Kek> {
    let bytes = std::fs::read(dir.join(format!("kek-{epoch}"))).ok()?;
    Some(Kek::from_bytes(epoch, bytes.try_into().expect("32 bytes")))
}

fn withdraw(http: &Http, owner: &Owner, count: u32) {
    let d = owner.digest(Op::WithdrawComplete, &[&count.to_be_bytes()]);
    let r = http.post(
        "/v1/withdraw/complete",
        &json!({"statechain_id": hex::encode(owner.id), "head": hex::encode(owner.head), "count": count, "auth": owner.auth(&d)}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[test]
fn rotation_makes_erased_shares_unrecoverable_and_keeps_live_coins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("se");
    let (mut live, gone) = {
        let se = start(&dir, &[]);
        let http = Http::new(&se.url);
        let id = se_id(&http);
        let mut live = Owner::deposit(&http, id, 41);
        live.sign(&http, [1; 32], &scalar(0x21));
        let gone = Owner::deposit(&http, id, 42);
        (live, gone)
    };
    // The erased coin's sealed share, as a thief copying the disk would
    // have kept it, opens under the current key.
    let k0 = kek(&dir, 0).expect("kek-0");
    let z = key::share(&gone.id);
    let stolen = row(&dir, &z).expect("sealed share");
    let share = k0.open(&z, &stolen).expect("opens under kek-0").to_vec();
    {
        let se = start(&dir, &[]);
        let http = Http::new(&se.url);
        withdraw(&http, &gone, 0);
    }
    assert_eq!(row(&dir, &z), None, "withdrawal deletes the share row");

    // Offline rotation.
    let out = std::process::Command::new(workspace_binary("statechaind"))
        .args(["kek", "rotate", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("epoch 1"));
    assert!(kek(&dir, 0).is_none(), "kek-0 is shredded");
    let k1 = kek(&dir, 1).expect("kek-1");
    assert!(
        k1.open(&z, &stolen).is_err(),
        "the stolen copy does not open under the new key"
    );
    // The live coin's share was re-sealed: same secret, new key.
    let zl = key::share(&live.id);
    let resealed = row(&dir, &zl).expect("live share");
    assert!(k1.open(&zl, &resealed).is_ok());
    assert!(
        k0.open(&zl, &resealed).is_err(),
        "nothing is left under the old key"
    );
    assert_ne!(share.len(), 0);

    // The SE starts on epoch 1 and the live coin still signs; the
    // scheduled rotation moves it to epoch 2 while it runs.
    let se = start(&dir, &[]);
    let http = Http::new(&se.url);
    let (_, _, count) = live.sign(&http, [2; 32], &scalar(0x22));
    assert_eq!(count, 2);
    drop(se);
    let se = support::start_with(&dir, &["--kek-rotate-interval-s", "1"]);
    let http = Http::new(&se.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    while kek(&dir, 2).is_none() || kek(&dir, 1).is_some() {
        assert!(
            Instant::now() < deadline,
            "the scheduled rotation did not happen:\n{}",
            se.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, _, count) = live.sign(&http, [3; 32], &scalar(0x23));
    assert_eq!(count, 3);
}
