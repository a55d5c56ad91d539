//! The signer's quorum rules against a hostile broker, in memory: three
//! providers that keep real signed logs (`lss_verify::ledger`, as lssd
//! does) and a broker that forges, repeats, replays, relabels and hides
//! what they answered. The broker is the host the remote signer must not
//! trust; every attack here must leave the signer refusing, never
//! committing or restoring something the quorum did not store.

use std::collections::BTreeMap;

use lss_core::{
    secp256k1::{PublicKey, Secp256k1, SecretKey},
    KeyValue, MacScheme, ServerKey, SharedSecret, PUT_CLIENT_NONCE, PUT_SERVER_NONCE,
};
use lss_verify::ledger::NamespaceLog;
use sphinx_signer::lss::Credentials;
use sphinx_signer::quorum::{Quorum, QuorumError};
use sphinx_wire::lss::{Msg, Muts, ProviderState, Providers, Receipt, Receipts, Response, Seen};

/// One provider: a server key, the namespace's data and its signed log.
struct Provider {
    key: ServerKey,
    data: BTreeMap<String, (i64, Vec<u8>)>,
    log: NamespaceLog,
}

fn seen(s: Option<Seen>) -> Option<lss_verify::Seen> {
    s.map(|s| lss_verify::Seen {
        size: s.size,
        note: s.note,
    })
}

fn kvs(muts: &Muts) -> Vec<KeyValue> {
    muts.iter()
        .map(|(k, (v, val))| KeyValue::new(k.clone(), *v as i64, val.clone()))
        .collect()
}

impl Provider {
    fn new(byte: u8) -> Provider {
        Provider {
            key: ServerKey::new(SecretKey::from_slice(&[byte; 32]).expect("key")),
            data: BTreeMap::new(),
            log: NamespaceLog::load(&[]).expect("empty log"),
        }
    }

    fn secret(&self, client: &[u8; 33], token: &[u8; 32]) -> SharedSecret {
        self.key
            .authenticate(client, token)
            .expect("the signer's token")
            .1
    }

    /// A put as lssd makes it: client MAC and versions checked, logged,
    /// MAC'd and attested.
    fn put(
        &mut self,
        client: &[u8; 33],
        token: &[u8; 32],
        muts: &Muts,
        client_mac: &[u8; 32],
        last: Option<Seen>,
    ) -> Option<Receipt> {
        let secret = self.secret(client, token);
        let kvs = kvs(muts);
        assert!(MacScheme::Framed
            .mac(&secret, PUT_CLIENT_NONCE, &kvs)
            .verify(client_mac));
        if kvs
            .iter()
            .any(|kv| !lss_core::accepts(kv.version, self.data.get(&kv.key).map(|(v, _)| *v)))
        {
            return None;
        }
        let prepared = self.log.prepare(&kvs, None);
        self.log.commit(prepared);
        for kv in &kvs {
            self.data
                .insert(kv.key.clone(), (kv.version, kv.value.clone()));
        }
        let (checkpoint, bundle) = self
            .log
            .attest(&self.key, client, seen(last), None, None, None)
            .expect("attest");
        Some(Receipt {
            provider: 0,
            server_hmac: MacScheme::Framed.mac(&secret, PUT_SERVER_NONCE, &kvs).0,
            checkpoint,
            bundle,
        })
    }

    fn get(
        &self,
        client: &[u8; 33],
        token: &[u8; 32],
        nonce: &[u8; 32],
        last: Option<Seen>,
    ) -> ProviderState {
        let secret = self.secret(client, token);
        let kvs: Vec<KeyValue> = self
            .data
            .iter()
            .map(|(k, (v, val))| KeyValue::new(k.clone(), *v, val.clone()))
            .collect();
        let (checkpoint, bundle) = self
            .log
            .attest(
                &self.key,
                client,
                seen(last),
                Some(nonce.to_vec()),
                Some(("", &kvs)),
                None,
            )
            .expect("attest");
        ProviderState {
            provider: 0,
            server_hmac: MacScheme::Framed.mac(&secret, nonce, &kvs).0,
            muts: kvs
                .into_iter()
                .map(|kv| (kv.key, (kv.version as u64, kv.value)))
                .collect(),
            checkpoint,
            bundle,
        }
    }
}

/// Three providers, a signer key, and the signer's checkpoint directory.
struct World {
    providers: Vec<Provider>,
    signer: SecretKey,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            providers: (1..=3).map(|b| Provider::new(0x40 + b)).collect(),
            signer: SecretKey::from_slice(&[0x77; 32]).expect("key"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn client(&self) -> [u8; 33] {
        PublicKey::from_secret_key(&Secp256k1::new(), &self.signer).serialize()
    }

    /// Init step 1 for the signer: its quorum and the accounts it sends.
    fn open(&self, nonce: [u8; 32]) -> (Quorum, Vec<sphinx_wire::lss::ProviderAccount>) {
        let providers = Providers {
            server_pubkeys: self.providers.iter().map(|p| p.key.server_id()).collect(),
            write_quorum: 2,
        };
        let signer = self.signer;
        let client = self.client();
        let (quorum, response) = Quorum::open(&providers, nonce, self.dir.path(), 2, |key| {
            let server = PublicKey::from_slice(key).expect("server key");
            let shared = SharedSecret::derive(&server, &signer);
            Ok(Credentials::new(client, *shared.expose()).with_scheme(MacScheme::Framed))
        })
        .expect("open");
        let Ok(Response::Accounts(init)) = Response::decode(&response) else {
            panic!("not Accounts");
        };
        (quorum, init.accounts)
    }

    /// Stores `muts` through an honest broker at `at`; returns what each
    /// provider answered (indexed).
    fn put(
        &mut self,
        quorum: &mut Quorum,
        muts: &Muts,
        tokens: &[[u8; 32]],
        at: &[usize],
    ) -> (Vec<Receipt>, sphinx_signer::quorum::Awaited) {
        let (payload, awaited) = quorum.prepare(muts).expect("prepare");
        let Ok(Response::QuorumMuts(q)) = Response::decode(&payload) else {
            panic!("not QuorumMuts");
        };
        let client = self.client();
        let receipts = at
            .iter()
            .map(|&i| {
                let mut r = self.providers[i]
                    .put(
                        &client,
                        &tokens[i],
                        &q.muts,
                        &q.puts[i].client_hmac,
                        q.puts[i].seen,
                    )
                    .expect("stored");
                r.provider = i as u64;
                r
            })
            .collect();
        (receipts, awaited)
    }

    fn states(
        &self,
        nonce: &[u8; 32],
        accounts: &[sphinx_wire::lss::ProviderAccount],
        at: &[usize],
    ) -> Vec<ProviderState> {
        at.iter()
            .map(|&i| {
                let mut s = self.providers[i].get(
                    &self.client(),
                    &accounts[i].auth_token,
                    nonce,
                    accounts[i].seen,
                );
                s.provider = i as u64;
                s
            })
            .collect()
    }
}

fn receipts(list: Vec<Receipt>) -> Vec<u8> {
    Msg::Receipts(Receipts {
        receipts: list,
        behind: Vec::new(),
    })
    .encode()
}

fn muts(entries: &[(&str, u64, &str)]) -> Muts {
    entries
        .iter()
        .map(|(k, v, val)| (k.to_string(), (*v, val.as_bytes().to_vec())))
        .collect()
}

fn not_enough(result: Result<bool, QuorumError>) -> bool {
    matches!(result, Err(QuorumError::NotEnough { .. }))
}

#[test]
fn forged_repeated_relabelled_or_replayed_receipts_never_make_a_quorum() {
    let mut world = World::new();
    let nonce = [1; 32];
    let (mut quorum, accounts) = world.open(nonce);
    let tokens: Vec<[u8; 32]> = accounts.iter().map(|a| a.auth_token).collect();
    let states = world.states(&nonce, &accounts, &[0, 1, 2]);
    assert!(quorum
        .restore(&Msg::States(states).encode())
        .expect("restore")
        .is_empty());

    // Honest: two receipts make the quorum.
    let first = muts(&[("node", 0, "a")]);
    let (rs, awaited) = world.put(&mut quorum, &first, &tokens, &[0, 1]);
    assert_eq!(
        quorum.acknowledge(&receipts(rs.clone()), &awaited).ok(),
        Some(false)
    );

    let second = muts(&[("node", 1, "b")]);
    let (fresh, awaited) = world.put(&mut quorum, &second, &tokens, &[0]);
    // Provider 0's receipt twice.
    let twice = vec![fresh[0].clone(), fresh[0].clone()];
    assert!(not_enough(quorum.acknowledge(&receipts(twice), &awaited)));
    // Provider 0's receipt relabelled as provider 1's.
    let mut relabelled = fresh[0].clone();
    relabelled.provider = 1;
    assert!(not_enough(quorum.acknowledge(
        &receipts(vec![fresh[0].clone(), relabelled]),
        &awaited
    )));
    // Provider 1's receipt for the first put, replayed for the second.
    assert!(not_enough(quorum.acknowledge(
        &receipts(vec![fresh[0].clone(), rs[1].clone()]),
        &awaited
    )));
    // A forged MAC with a genuine checkpoint, and a provider out of range.
    let mut forged = fresh[0].clone();
    forged.provider = 2;
    forged.server_hmac = [0xee; 32];
    let mut outside = fresh[0].clone();
    outside.provider = 7;
    assert!(not_enough(quorum.acknowledge(
        &receipts(vec![fresh[0].clone(), forged, outside]),
        &awaited
    )));
    // Wrong message, garbage.
    assert!(matches!(
        quorum.acknowledge(&Msg::PutConflict.encode(), &awaited),
        Err(QuorumError::Protocol(_))
    ));
    assert!(matches!(
        quorum.acknowledge(&[0xff, 0x00], &awaited),
        Err(QuorumError::Wire(_))
    ));
}

#[test]
fn a_restore_needs_the_read_quorum_and_always_meets_the_last_acknowledged_put() {
    let mut world = World::new();
    let nonce = [1; 32];
    let (mut quorum, accounts) = world.open(nonce);
    let tokens: Vec<[u8; 32]> = accounts.iter().map(|a| a.auth_token).collect();
    let states = world.states(&nonce, &accounts, &[0, 1, 2]);
    quorum
        .restore(&Msg::States(states).encode())
        .expect("restore");
    let (rs, awaited) = world.put(&mut quorum, &muts(&[("node", 0, "a")]), &tokens, &[0, 1, 2]);
    quorum.acknowledge(&receipts(rs), &awaited).expect("three");
    // The last put reaches only providers 1 and 2 (0 was down).
    let latest = muts(&[("node", 1, "b"), ("chan", 0, "c")]);
    let (rs, awaited) = world.put(&mut quorum, &latest, &tokens, &[1, 2]);
    quorum.acknowledge(&receipts(rs), &awaited).expect("two");

    // A new session (the signer restarted).
    let nonce = [2; 32];
    let (mut quorum, accounts) = world.open(nonce);
    // The broker shows only the stale provider: below the read quorum.
    let stale = world.states(&nonce, &accounts, &[0]);
    assert!(matches!(
        quorum.restore(&Msg::States(stale.clone()).encode()),
        Err(QuorumError::NotEnough {
            ok: 1,
            needed: 2,
            ..
        })
    ));
    // …or the stale one twice, relabelled: the copy's MAC is not provider 1's.
    let mut copy = stale[0].clone();
    copy.provider = 1;
    assert!(matches!(
        quorum.restore(&Msg::States(vec![stale[0].clone(), copy]).encode()),
        Err(QuorumError::NotEnough { ok: 1, .. })
    ));
    // …or a state read with another nonce (a replay).
    let replayed = world.states(&[9; 32], &accounts, &[1]);
    assert!(matches!(
        quorum.restore(&Msg::States(vec![stale[0].clone(), replayed[0].clone()]).encode()),
        Err(QuorumError::NotEnough { ok: 1, .. })
    ));
    // Any two it can show include one that stored the last put: restored.
    let shown = world.states(&nonce, &accounts, &[0, 2]);
    let restored = quorum
        .restore(&Msg::States(shown).encode())
        .expect("restore");
    let mut expected = latest.clone();
    expected.sort();
    assert_eq!(restored, expected);
    // Provider 0 is behind: the init answer asks to repair it from 2.
    let (payload, _) = quorum.prepare(&Vec::new()).expect("prepare");
    let Ok(Response::QuorumMuts(q)) = Response::decode(&payload) else {
        panic!("not QuorumMuts");
    };
    assert_eq!(q.repairs.len(), 1);
    assert_eq!((q.repairs[0].provider, q.repairs[0].source), (0, 2));
    assert_eq!(
        q.repairs[0].macs.len(),
        1,
        "node 0→1 and chan 0 in one step"
    );
}

#[test]
fn a_provider_rolled_back_is_left_out_with_evidence_anyone_can_check() {
    let mut world = World::new();
    let nonce = [1; 32];
    let (mut quorum, accounts) = world.open(nonce);
    let tokens: Vec<[u8; 32]> = accounts.iter().map(|a| a.auth_token).collect();
    let states = world.states(&nonce, &accounts, &[0, 1, 2]);
    quorum
        .restore(&Msg::States(states).encode())
        .expect("restore");
    let (rs, awaited) = world.put(&mut quorum, &muts(&[("node", 0, "a")]), &tokens, &[0, 1, 2]);
    quorum.acknowledge(&receipts(rs), &awaited).expect("stored");
    // Provider 0 as it was before that put (an old backup restored).
    let before = Provider {
        key: ServerKey::new(SecretKey::from_slice(&[0x41; 32]).expect("key")),
        data: BTreeMap::new(),
        log: NamespaceLog::load(&[]).expect("empty"),
    };
    let (rs, awaited) = world.put(&mut quorum, &muts(&[("node", 1, "b")]), &tokens, &[0, 1, 2]);
    quorum.acknowledge(&receipts(rs), &awaited).expect("stored");
    world.providers[0] = before;

    let nonce = [3; 32];
    let (mut quorum, accounts) = world.open(nonce);
    let shown = world.states(&nonce, &accounts, &[0, 1, 2]);
    let restored = quorum
        .restore(&Msg::States(shown).encode())
        .expect("1 and 2");
    assert_eq!(restored, muts(&[("node", 1, "b")]));
    let evidence: Vec<_> = std::fs::read_dir(world.dir.path().join("lss-evidence"))
        .expect("evidence saved")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(evidence.len(), 1);
    let bytes = std::fs::read(&evidence[0]).expect("read");
    let (proof, violation) = lss_verify::Evidence::verify(&bytes).expect("verifies");
    assert!(violation.to_string().contains("rollback"), "{violation}");
    assert_eq!(
        proof.server_id,
        hex::encode(world.providers[0].key.server_id())
    );
    // The liar is not repaired.
    let (payload, _) = quorum.prepare(&Vec::new()).expect("prepare");
    let Ok(Response::QuorumMuts(q)) = Response::decode(&payload) else {
        panic!("not QuorumMuts");
    };
    assert!(q.repairs.is_empty(), "{:?}", q.repairs);
}
