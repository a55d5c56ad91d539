//! The follower's rules of LKTL/1 (tlog.md §7.6–§7.7) in memory, as a
//! lying peer would test them: honest extensions are taken, every altered
//! proof, fork claim or chunk is misbehaviour, and real forks are told
//! apart from peers that are behind.

use tlog_core::follow::{
    self, check_chunk, judge_headers, judge_note, locator_sizes, next_chunk, HeadersVerdict, Local,
    Verdict,
};
use tlog_core::merkle::{self, CompactRange, MemoryTree};
use tlog_core::sync::Fork;

fn tree(n: u64, salt: u8) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        t.push(&entry(i, salt));
    }
    t
}

fn entry(i: u64, salt: u8) -> Vec<u8> {
    let mut e = i.to_be_bytes().to_vec();
    e.push(salt);
    e
}

/// A Data answer: start, entries, tree size, proof.
type Data = (u64, Vec<Vec<u8>>, u64, Vec<[u8; 32]>);

fn proof(t: &MemoryTree, old: u64, new: u64) -> Vec<[u8; 32]> {
    merkle::consistency_proof(t, old, new)
        .expect("infallible")
        .expect("proof")
}

/// A mirror holding `t` up to `s` (entries and checkpoint).
fn mirror_at(t: &MemoryTree, s: u64) -> Local {
    Local {
        tree_size: s,
        checkpoint: (s, t.root_at(s)),
        sequencer: false,
    }
}

#[test]
fn notes_within_the_tree_are_known_or_forks() {
    let ours = tree(100, 1);
    let other = tree(100, 2);
    let local = mirror_at(&ours, 100);
    for n in [1, 50, 100] {
        assert!(follow::needs_root(&local, n));
        assert_eq!(
            judge_note(&local, n, &ours.root_at(n), Some(ours.root_at(n)), None),
            Verdict::Known
        );
        assert_eq!(
            judge_note(&local, n, &other.root_at(n), Some(ours.root_at(n)), None),
            Verdict::Forked
        );
    }
}

#[test]
fn larger_notes_need_a_proof_from_the_verified_size() {
    let t = tree(500, 1);
    let local = mirror_at(&t, 200);
    let good = proof(&t, 200, 500);
    assert_eq!(
        judge_note(&local, 500, &t.root(), None, Some((200, &good))),
        Verdict::Extends
    );
    // No proof, a proof from elsewhere, an altered or truncated proof:
    // not believed, ask with a locator instead.
    let from_100 = proof(&t, 100, 500);
    let mut altered = good.clone();
    altered[0][0] ^= 1;
    let truncated = &good[..good.len() - 1];
    for inv in [
        None,
        Some((100, from_100.as_slice())),
        Some((200, altered.as_slice())),
        Some((200, truncated)),
    ] {
        assert_eq!(
            judge_note(&local, 500, &t.root(), None, inv),
            Verdict::AskHeaders
        );
    }
    // An empty mirror takes any verified note.
    assert_eq!(
        judge_note(&mirror_at(&t, 0), 500, &t.root(), None, None),
        Verdict::Extends
    );
    // The origin never takes a larger note of its own log.
    let origin = Local {
        sequencer: true,
        ..local
    };
    assert_eq!(
        judge_note(&origin, 500, &t.root(), None, Some((200, &good))),
        Verdict::LostHistory
    );
}

#[test]
fn locators_halve_back_from_the_verified_size() {
    assert_eq!(locator_sizes(0), [0]);
    assert_eq!(locator_sizes(1), [1]);
    assert_eq!(locator_sizes(10), [10, 9, 8, 6, 2]);
    let long = locator_sizes(u64::MAX >> 1);
    assert!(long.len() <= 64);
    assert!(long.windows(2).all(|w| w[0] > w[1]), "strictly decreasing");
}

#[test]
fn headers_extend_fork_or_lie() {
    let t = tree(300, 1);
    let other = tree(300, 2);
    let (s, r) = (100, t.root_at(100));
    let good = proof(&t, 100, 300);
    assert_eq!(
        judge_headers((s, r), 300, &t.root(), 100, &good, None),
        Ok(HeadersVerdict::Extends)
    );
    assert_eq!(
        judge_headers((s, r), 80, &t.root_at(80), 80, &proof(&t, 80, 100), None),
        Ok(HeadersVerdict::NotLarger)
    );
    // A proof from another base, or that does not verify: misbehaviour.
    assert!(judge_headers((s, r), 300, &t.root(), 50, &proof(&t, 50, 300), None).is_err());
    let mut bad = good.clone();
    bad[1][5] ^= 1;
    assert!(judge_headers((s, r), 300, &t.root(), 100, &bad, None).is_err());
    // A real fork: the other tree's root at s and its proof to its note.
    let fork = Fork {
        size: 100,
        root: other.root_at(100),
        proof: proof(&other, 100, 300),
    };
    assert_eq!(
        judge_headers((s, r), 300, &other.root(), 0, &[], Some(&fork)),
        Ok(HeadersVerdict::Fork {
            root_at_s: other.root_at(100),
            proof: proof(&other, 100, 300)
        })
    );
    // Fork claims that prove nothing: at another size, with our own root,
    // or whose proof does not lead to the note.
    for lie in [
        Fork {
            size: 99,
            ..fork.clone()
        },
        Fork {
            root: r,
            ..fork.clone()
        },
        Fork {
            proof: proof(&other, 100, 299),
            ..fork.clone()
        },
        Fork {
            size: 301,
            ..fork.clone()
        },
    ] {
        assert!(
            judge_headers((s, r), 300, &other.root(), 0, &[], Some(&lie)).is_err(),
            "{lie:?}"
        );
    }
}

#[test]
fn chunks_must_be_what_was_asked_and_in_the_tree() {
    let t = tree(3000, 1);
    let n = t.size();
    let entries: Vec<Vec<u8>> = (0..n).map(|i| entry(i, 1)).collect();
    let mut working = CompactRange::new();
    let mut next = 0;
    while next < n {
        let asked = next_chunk(next, n);
        assert!(asked.count >= 1 && asked.count <= 1024);
        let end = next + u64::from(asked.count);
        assert!(
            end == n || end % 256 == 0,
            "chunks end on bundle boundaries"
        );
        let chunk = &entries[next as usize..end as usize];
        let p = proof(&t, end, n);
        // Lies first: each refused, the working range untouched.
        let mut wrong = chunk.to_vec();
        wrong[0].push(0);
        let mut short_proof = p.clone();
        short_proof.pop();
        let mut lies: Vec<Data> = vec![
            (next, wrong, n, p.clone()),
            (next + 1, chunk.to_vec(), n, p.clone()),
            (next, chunk.to_vec(), n - 1, p.clone()),
            (next, Vec::new(), n, p.clone()),
        ];
        if end < n {
            // One entry more than asked.
            let more = entries[next as usize..end as usize + 1].to_vec();
            lies.push((next, more, n, proof(&t, end + 1, n)));
        }
        for (start, es, size, pr) in lies {
            assert!(check_chunk(&asked, &t.root(), &working, (start, &es, size, &pr)).is_err());
        }
        if !p.is_empty() {
            assert!(
                check_chunk(&asked, &t.root(), &working, (next, chunk, n, &short_proof)).is_err()
            );
        }
        working = check_chunk(&asked, &t.root(), &working, (next, chunk, n, &p)).expect("honest");
        next = end;
    }
    assert_eq!(working.root(), t.root());
    // A short honest chunk (the peer's frame limit) is fine too.
    let asked = next_chunk(0, n);
    let part = &entries[..10];
    let range = check_chunk(
        &asked,
        &t.root(),
        &CompactRange::new(),
        (0, part, n, &proof(&t, 10, n)),
    )
    .expect("short but true");
    assert_eq!(range.size(), 10);
}

#[test]
fn evidence_parts_follow_the_canonical_order() {
    let a = tree(10, 1);
    let b = tree(10, 2);
    let (ra, rb) = (a.root(), b.root());
    assert_eq!(
        follow::evidence_parts((10, ra), (10, rb), [0; 32], vec![[1; 32]]),
        (ra.max(rb), Vec::new())
    );
    let c = tree(20, 2);
    let p = proof(&c, 10, 20);
    assert_eq!(
        follow::evidence_parts((10, ra), (20, c.root()), c.root_at(10), p.clone()),
        (c.root_at(10), p)
    );
}
