//! keyserver.md §4.3–4.5 and §6.5: KeyInit checks as the server and as
//! Bob run them, dispersal (property-tested with a seeded RNG) and the
//! replay-safe Flush.

use ed25519_dalek::SigningKey;
use ks_core::author;
use ks_core::keyinit::{check_flush, check_keyinit, disperse, KeyInit, Stored, Window};
use ks_core::lcj::Lcj;
use ks_core::sig::{sign, Ctx};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;
const ORIGIN: &str = "example.org/kt/v1";

fn repo() -> Vec<String> {
    vec!["example.org".to_string()]
}

fn pf(b: u8) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([b; 32])).to_bytes()
}

fn ki(owner: &SigningKey, pf_key: [u8; 32], msg_count: u64, fallback: bool) -> KeyInit {
    author::key_init(
        owner,
        "example.org",
        &author::anchor(&pf_key, "mix.example.org", "bnltYWRkcmVzcw=="),
        &[5; 16],
        msg_count,
        fallback,
        NOW - 60,
        NOW + 30 * DAY,
    )
}

#[test]
fn a_valid_keyinit_passes_both_checks_and_substitutions_fail() {
    let alice = SigningKey::from_bytes(&[1; 32]);
    let vk = alice.verifying_key();
    let k = ki(&alice, pf(7), 1, false);
    let publish = Window::Publish {
        uid_not_after: NOW + 300 * DAY,
    };
    let checked = check_keyinit(&k, &vk, &repo(), publish, NOW).expect("publishable");
    assert_eq!(checked.pf_key, pf(7));
    check_keyinit(&k, &vk, &repo(), Window::Fetch, NOW).expect("fetchable");
    // Round trip through LCJ keeps the hash.
    assert_eq!(
        KeyInit::from_lcj(&k.to_lcj()).expect("lcj").hash(),
        k.hash()
    );

    // The server swaps in a PF key of its own: Alice's signature breaks.
    let server = SigningKey::from_bytes(&[9; 32]);
    let mut forged = k.clone();
    let theirs = ki(&server, pf(66), 1, false);
    forged.contents.session_anchor = theirs.contents.session_anchor.clone();
    forged.contents.session_anchor_hash = theirs.contents.session_anchor_hash.clone();
    assert_eq!(
        check_keyinit(&forged, &vk, &repo(), Window::Fetch, NOW)
            .expect_err("forged")
            .code(),
        -32013
    );
    // ... and signs it with its own key: not Alice's SigKeyHash.
    assert_eq!(
        check_keyinit(&theirs, &vk, &repo(), Window::Fetch, NOW)
            .expect_err("foreign")
            .code(),
        -32602
    );
    // Signed by Alice's previous SIGKEY, checked against the current one.
    let old = SigningKey::from_bytes(&[2; 32]);
    let stale = ki(&old, pf(7), 1, false);
    assert!(check_keyinit(&stale, &vk, &repo(), Window::Fetch, NOW).is_err());
    // Re-encrypted anchor: same plaintext, other IV, but then the hash
    // still matches while the signature covers the old ciphertext.
    let mut re = k.clone();
    let (sa, _) = ks_core::keyinit::seal_anchor(
        &author::anchor(&pf(7), "mix.example.org", "bnltYWRkcmVzcw=="),
        vk.as_bytes(),
        &[6; 16],
    );
    re.contents.session_anchor = sa;
    assert_eq!(
        check_keyinit(&re, &vk, &repo(), Window::Fetch, NOW)
            .expect_err("re-encrypted")
            .code(),
        -32013
    );
    // Expired for Bob; beyond the UID for publication; not yet valid.
    assert_eq!(
        check_keyinit(&k, &vk, &repo(), Window::Fetch, NOW + 31 * DAY)
            .expect_err("expired")
            .code(),
        -32016
    );
    let short = Window::Publish {
        uid_not_after: NOW + DAY,
    };
    assert_eq!(
        check_keyinit(&k, &vk, &repo(), short, NOW)
            .expect_err("outlives UID")
            .code(),
        -32016
    );
    assert_eq!(
        check_keyinit(&k, &vk, &repo(), Window::Fetch, NOW - 120)
            .expect_err("early")
            .code(),
        -32016
    );
    // A repository the server does not have.
    assert_eq!(
        check_keyinit(&k, &vk, &["other.org".into()], Window::Fetch, NOW)
            .expect_err("repo")
            .code(),
        -32602
    );
    // A small-order PF key, properly signed by Alice, is still refused.
    let weak = ki(&alice, [0; 32], 2, false);
    assert_eq!(
        check_keyinit(&weak, &vk, &repo(), Window::Fetch, NOW)
            .expect_err("weak")
            .code(),
        -32602
    );
}

#[test]
fn flush_requests_cannot_be_replayed_elsewhere_or_later() {
    let alice = SigningKey::from_bytes(&[1; 32]);
    let vk = alice.verifying_key();
    let (req, s) = author::flush(&alice, ORIGIN, &[4; 16], NOW);
    check_flush(&req, &s, &vk, ORIGIN, NOW).expect("valid");
    check_flush(&req, &s, &vk, ORIGIN, NOW + 300).expect("inside the window");
    assert_eq!(
        check_flush(&req, &s, &vk, "other.org/kt/v1", NOW)
            .expect_err("origin")
            .code(),
        -32602
    );
    assert_eq!(
        check_flush(&req, &s, &vk, ORIGIN, NOW + 301)
            .expect_err("late")
            .code(),
        -32016
    );
    assert_eq!(
        check_flush(&req, &s, &vk, ORIGIN, NOW - 301)
            .expect_err("early")
            .code(),
        -32016
    );
    let mut other = req.clone();
    other.method = "KeyInitRepository.AddKeyInit".into();
    let s2 = sign(&alice, Ctx::FlushRequest, &other);
    assert_eq!(
        check_flush(&other, &s2, &vk, ORIGIN, NOW)
            .expect_err("method")
            .code(),
        -32602
    );
    // Changing the nonce to dodge the replay table breaks the signature.
    let mut renonced = req.clone();
    renonced.nonce = ks_core::b64::encode(&[5; 16]);
    assert_eq!(
        check_flush(&renonced, &s, &vk, ORIGIN, NOW)
            .expect_err("nonce")
            .code(),
        -32013
    );
    // A signature made for another purpose over the same bytes fails.
    let wrong_ctx = sign(&alice, Ctx::FlushReceipt, &req);
    assert_eq!(
        check_flush(&req, &wrong_ctx, &vk, ORIGIN, NOW)
            .expect_err("ctx")
            .code(),
        -32013
    );
}

fn stored() -> impl Strategy<Value = Vec<Stored>> {
    prop::collection::vec(
        (any::<bool>(), 0u64..200, 1u64..400, 0u64..1000).prop_map(|(fallback, nb, len, mc)| {
            Stored {
                fallback,
                not_before: NOW - 100 + nb,
                not_after: NOW - 100 + nb + len,
                msg_count: mc,
            }
        }),
        0..12,
    )
}

proptest! {
    /// Nothing outside its window; one-time first (smallest NOTAFTER);
    /// fallbacks only when no one-time KeyInit is eligible; the last
    /// eligible fallback is never deleted; a one-time KeyInit is deleted
    /// when served, so it is served at most once.
    #[test]
    fn dispersal_rules(mut s in stored(), seed in any::<u64>()) {
        let mut rng = seed;
        let mut next = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); rng };
        let mut served_one_time = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let eligible = |x: &Stored| x.not_before <= NOW && NOW < x.not_after;
            let any_one_time = s.iter().any(|x| !x.fallback && eligible(x));
            let fallbacks = s.iter().filter(|x| x.fallback && eligible(x)).count();
            match disperse(&s, NOW, [next(), next()]) {
                None => {
                    prop_assert!(!s.iter().any(eligible));
                    break;
                }
                Some(d) => {
                    let x = s[d.serve].clone();
                    prop_assert!(eligible(&x));
                    prop_assert_eq!(d.one_time, !x.fallback);
                    if any_one_time {
                        prop_assert!(!x.fallback);
                        prop_assert!(d.delete);
                        let min = s.iter().filter(|y| !y.fallback && eligible(y)).map(|y| y.not_after).min();
                        prop_assert_eq!(Some(x.not_after), min);
                        prop_assert!(served_one_time.insert((x.msg_count, x.not_after, x.not_before)));
                    } else if fallbacks == 1 {
                        prop_assert!(!d.delete, "the last fallback stays");
                    }
                    if d.delete {
                        s.remove(d.serve);
                    }
                }
            }
        }
    }
}

/// With two fallbacks, the one expiring sooner is picked more often (∝ 1/n).
#[test]
fn fallback_choice_favours_the_sooner_expiry() {
    let s = [
        Stored {
            fallback: true,
            not_before: NOW - 1,
            not_after: NOW + 10,
            msg_count: 1,
        },
        Stored {
            fallback: true,
            not_before: NOW - 1,
            not_after: NOW + 90,
            msg_count: 2,
        },
    ];
    let mut first = 0;
    for i in 0..10_000u64 {
        let d = disperse(&s, NOW, [i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0]).expect("one");
        if d.serve == 0 {
            first += 1;
        }
    }
    // Expected 90 %.
    assert!((8_800..=9_200).contains(&first), "{first}");
}

/// The small-order test agrees with its definition (X25519 of a clamped
/// scalar gives all zeros) on the small-order points, their non-canonical
/// encodings, and random keys.
#[test]
fn small_order_x25519_keys_are_exactly_those_that_zero_every_secret() {
    let zeroes = |pk: [u8; 32]| {
        [[0x5a; 32], [0x13; 32]].iter().all(|s| {
            x25519_dalek::StaticSecret::from(*s)
                .diffie_hellman(&x25519_dalek::PublicKey::from(pk))
                .as_bytes()
                == &[0u8; 32]
        })
    };
    // Sweep the small u (0 and 1 are small-order), with and without the
    // ignored top bit; then the encodings of p − 1, p and p + 1.
    let mut small = std::collections::BTreeSet::new();
    for u in 0u8..=255 {
        let mut pk = [0u8; 32];
        pk[0] = u;
        for top in [0u8, 0x80] {
            pk[31] = top;
            assert_eq!(
                ks_core::uid::x25519_small_order(&pk),
                zeroes(pk),
                "u = {u}, top = {top:#x}"
            );
            if zeroes(pk) {
                small.insert(pk);
            }
        }
    }
    let p_minus_1: [u8; 32] = {
        let mut b = [0xff; 32];
        b[0] = 0xec;
        b[31] = 0x7f;
        b
    };
    for pk in [
        p_minus_1,
        {
            let mut b = p_minus_1;
            b[0] = 0xed;
            b
        },
        {
            let mut b = p_minus_1;
            b[0] = 0xee;
            b
        },
    ] {
        assert!(ks_core::uid::x25519_small_order(&pk) && zeroes(pk));
    }
    assert!(
        small.len() >= 4,
        "u = 0 and u = 1 with and without the top bit: {small:?}"
    );
    // The points of order 8: [l]Q for Q of order 8l (l the prime subgroup
    // order), checked against the definition.
    let l = hex::decode("1000000000000000000000000000000014def9dea2f79cd65812631a5cf5d3ed")
        .expect("hex");
    let bits = || {
        l.iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1 == 1))
    };
    let mut order_eight = std::collections::BTreeSet::new();
    for u in 2u8..60 {
        let mut q = [0u8; 32];
        q[0] = u;
        let r = curve25519_dalek::montgomery::MontgomeryPoint(q)
            .mul_bits_be(bits())
            .to_bytes();
        assert_eq!(
            ks_core::uid::x25519_small_order(&r),
            zeroes(r),
            "[l]Q for u = {u}"
        );
        if zeroes(r) && r != [0; 32] && r[0] != 1 {
            order_eight.insert(r);
        }
    }
    assert!(!order_eight.is_empty(), "some [l]Q has order 8");
    for i in 0..500u32 {
        let pk = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(
            [(i % 251) as u8 + 1; 32],
        ))
        .to_bytes();
        let mut tweaked = pk;
        tweaked[1] ^= (i >> 8) as u8;
        for k in [pk, tweaked] {
            assert_eq!(ks_core::uid::x25519_small_order(&k), zeroes(k));
        }
    }
}
