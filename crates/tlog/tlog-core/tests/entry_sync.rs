//! tlog.md §8.3 against an honest and a lying source: entries reach the
//! application only once proven, a lie is caught at the next check point,
//! and the sync resumes from the last one.

use tlog_core::entry_sync::{EntrySync, Fetch, SyncError};
use tlog_core::merkle::{self, CompactRange, MemoryTree};

fn entry(i: u64) -> Vec<u8> {
    format!("entry {i}").into_bytes()
}

struct Source {
    tree: MemoryTree,
    lie_at: Option<u64>,
}

impl Source {
    fn new(size: u64) -> Source {
        let mut tree = MemoryTree::new();
        for i in 0..size {
            tree.push(&entry(i));
        }
        Source { tree, lie_at: None }
    }

    fn bundle(&self, index: u64, width: u16) -> Vec<u8> {
        let mut out = Vec::new();
        for i in index * 256..index * 256 + u64::from(width) {
            let e = if self.lie_at == Some(i) {
                b"forged".to_vec()
            } else {
                entry(i)
            };
            out.extend_from_slice(&(e.len() as u16).to_be_bytes());
            out.extend_from_slice(&e);
        }
        out
    }
}

/// Runs a sync against `source`; returns the entries released, or the
/// first error.
fn run(sync: &mut EntrySync, source: &Source) -> Result<Vec<(u64, Vec<u8>)>, SyncError> {
    let mut got = Vec::new();
    let mut proofs = 0;
    while let Some(fetch) = sync.poll_fetch() {
        let released = match fetch {
            Fetch::Bundle { index, width } => sync.handle_bundle(&source.bundle(index, width))?,
            Fetch::Proof { old, new } => {
                proofs += 1;
                let proof = merkle::consistency_proof(&source.tree, old, new)
                    .expect("ok")
                    .expect("ok");
                sync.handle_proof(&proof)?
            }
        };
        got.extend(released);
    }
    assert!(proofs > 0 || source.tree.size() <= 65_536 + 256);
    Ok(got)
}

#[test]
fn a_long_log_syncs_with_check_points_and_an_unaligned_start() {
    let source = Source::new(100_000);
    let root = source.tree.root();
    // From scratch.
    let mut sync = EntrySync::new(CompactRange::new(), 100_000, root).expect("new");
    let got = run(&mut sync, &source).expect("honest source");
    assert!(sync.done());
    assert_eq!(got.len(), 100_000);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, (at, e))| *at == i as u64 && *e == entry(i as u64)));
    assert_eq!(sync.range().root(), root);
    // From a verified range of 1,000 (not a bundle boundary) to 1,300.
    let small = Source::new(1_300);
    let mut start = CompactRange::new();
    for i in 0..1_000 {
        start.push(merkle::leaf_hash(&entry(i)));
    }
    let mut sync = EntrySync::new(start, 1_300, small.tree.root()).expect("new");
    let got = run(&mut sync, &small).expect("ok");
    assert_eq!(got.first().map(|(i, _)| *i), Some(1_000));
    assert_eq!(got.len(), 300);
}

#[test]
fn a_lying_source_is_caught_and_the_sync_resumes() {
    let honest = Source::new(100_000);
    let root = honest.tree.root();
    let mut liar = Source::new(100_000);
    liar.lie_at = Some(5_000);
    let mut sync = EntrySync::new(CompactRange::new(), 100_000, root).expect("new");
    let mut released = Vec::new();
    let err = loop {
        let fetch = sync.poll_fetch().expect("not done");
        let result = match fetch {
            Fetch::Bundle { index, width } => sync.handle_bundle(&liar.bundle(index, width)),
            Fetch::Proof { old, new } => {
                let p = merkle::consistency_proof(&honest.tree, old, new)
                    .expect("ok")
                    .expect("ok");
                sync.handle_proof(&p)
            }
        };
        match result {
            Ok(r) => released.extend(r),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SyncError::Mismatch(_)), "{err:?}");
    // Nothing from the lie's chunk reached the application.
    assert!(
        released.iter().all(|(i, _)| *i < 4_096),
        "{}",
        released.len()
    );
    assert!(released.iter().all(|(i, e)| *e == entry(*i)));
    // Resume from the last check point with an honest source.
    let rest = run(&mut sync, &honest).expect("honest");
    assert_eq!(released.len() + rest.len(), 100_000);
    assert_eq!(sync.range().root(), root);
}

#[test]
fn malformed_bundles_are_refused() {
    let source = Source::new(300);
    let root = source.tree.root();
    let good = source.bundle(0, 256);
    for bad in [
        good[..good.len() - 1].to_vec(),
        [good.clone(), vec![0]].concat(),
        vec![0xff, 0xff],
    ] {
        let mut sync = EntrySync::new(CompactRange::new(), 300, root).expect("new");
        assert!(matches!(
            sync.poll_fetch(),
            Some(Fetch::Bundle {
                index: 0,
                width: 256
            })
        ));
        assert!(matches!(
            sync.handle_bundle(&bad),
            Err(SyncError::Bundle(_))
        ));
        assert_eq!(sync.range().size(), 0);
    }
    // An answer nobody asked for.
    let mut sync = EntrySync::new(CompactRange::new(), 300, root).expect("new");
    assert_eq!(sync.handle_proof(&[]), Err(SyncError::Unexpected));
    // A wrong target root: caught at the end.
    let mut sync = EntrySync::new(CompactRange::new(), 300, [9; 32]).expect("new");
    assert!(matches!(
        run(&mut sync, &source),
        Err(SyncError::Mismatch(_))
    ));
    assert!(EntrySync::new(source.tree.range().clone(), 100, root).is_err());
}

/// The paths a sync asks for, and proof responses as a hostile server
/// might send them.
#[test]
fn fetch_paths_and_proof_responses() {
    use tlog_core::entry_sync::{proof_lines, Fetch};
    assert_eq!(
        Fetch::Bundle {
            index: 1000,
            width: 256
        }
        .path(),
        "tile/entries/x001/000"
    );
    assert_eq!(
        Fetch::Bundle { index: 0, width: 7 }.path(),
        "tile/entries/000.p/7"
    );
    assert_eq!(
        Fetch::Proof { old: 256, new: 300 }.path(),
        "lk/v1/consistency?old=256&size=300"
    );
    let hash = tlog_core::note::b64encode(&[7u8; 32]);
    let good = format!("old 256\nsize 300\n{hash}\n{hash}\n");
    assert_eq!(proof_lines(good.as_bytes(), 2), Ok(vec![[7u8; 32]; 2]));
    for bad in [
        format!("old 256\nsize 300\n{hash}\nnot base64\n"),
        format!(
            "old 256\nsize 300\n{}\n",
            tlog_core::note::b64encode(&[7u8; 31])
        ),
        "old 256\nsize 300\n\u{0}\u{ff}".to_string(),
    ] {
        assert!(proof_lines(bad.as_bytes(), 2).is_err(), "{bad:?}");
    }
    assert!(proof_lines(&[0xff, 0xfe], 0).is_err(), "not UTF-8");
}
