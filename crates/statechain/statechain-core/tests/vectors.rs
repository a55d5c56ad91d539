//! Known-answer tests (statechain.md §9.1): BIP340 and BIP341 vectors, the
//! spec's §2.3, §2.5, §3.2 and §5.1 vectors, and a second vector set with
//! every parity combination recomputed by an independent implementation
//! (`tools/statechain-vectors.py`, plain Python integers).

use std::collections::BTreeMap;

use bitcoin::consensus::encode::deserialize;
use bitcoin::{Amount, ScriptBuf, Transaction, TxOut};
use secp256k1::XOnlyPublicKey;
use statechain_core::auth::{self, Op};
use statechain_core::bip340;
use statechain_core::cosign::{self, CoinKey, OwnerSession};
use statechain_core::keyupdate;
use statechain_core::leaf::{Body, Leaf, Signature};
use statechain_core::scalar::{lift_x, ser33, xbytes, Scalar, Sign};
use statechain_core::tx;

fn rep(b: u8) -> Scalar {
    Scalar::from_bytes(&[b; 32]).expect("scalar")
}

fn h32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

#[test]
fn bip340_vectors_0_to_14() {
    let csv = include_str!("data/bip340-test-vectors.csv");
    let mut rows = 0;
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let index: u32 = f[0].parse().expect("index");
        let msg = hex::decode(f[4]).expect("msg");
        let Ok(msg) = <[u8; 32]>::try_from(msg) else {
            continue; // 15–18: variable-length messages, outside the 0.29 API
        };
        let sig: [u8; 64] = hex::decode(f[5]).expect("sig").try_into().expect("64");
        let expected = f[6] == "TRUE";
        if !f[1].is_empty() {
            let sk = Scalar::from_slice(&hex::decode(f[1]).expect("sk")).expect("sk");
            let aux = h32(f[3]);
            assert_eq!(bip340::sign(&sk, &msg, &aux), sig, "vector {index} signs");
            assert_eq!(
                hex::encode_upper(bip340::xonly_of(&sk).serialize()),
                f[2],
                "vector {index} key"
            );
        }
        let verified = match XOnlyPublicKey::from_slice(&hex::decode(f[2]).expect("pk")) {
            Ok(pk) => bip340::verify(&pk, &msg, &sig),
            Err(_) => false,
        };
        assert_eq!(verified, expected, "vector {index}: {}", f[7]);
        rows += 1;
    }
    assert_eq!(rows, 15);
    assert!(
        csv.contains("\n0,") && csv.contains("E907831F"),
        "even-Y copy"
    );
}

#[test]
fn bip341_key_path_vectors() {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("data/bip341-keypath-vectors.json")).expect("json");
    let spk = &v["scriptPubKey"][0];
    let internal =
        XOnlyPublicKey::from_slice(&hex::decode(spk["internalPubkey"].as_str().unwrap()).unwrap())
            .unwrap();
    let key = CoinKey::new(lift_x(&internal)).expect("tweak");
    assert_eq!(
        hex::encode(key.tweak().to_bytes()),
        spk["tweak"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(xbytes(&key.q)),
        spk["tweakedPubkey"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(key.script_pubkey().as_bytes()),
        spk["scriptPubKey"].as_str().unwrap()
    );

    let unsigned: Transaction =
        deserialize(&hex::decode(v["rawUnsignedTx"].as_str().unwrap()).unwrap()).unwrap();
    let utxos: Vec<TxOut> = v["utxosSpent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| TxOut {
            script_pubkey: ScriptBuf::from_bytes(hex::decode(u[0].as_str().unwrap()).unwrap()),
            value: Amount::from_sat(u[1].as_u64().unwrap()),
        })
        .collect();
    // SIGHASH_DEFAULT over all prevouts: the only sighash the protocol uses.
    let d = &v["sighashDefault"];
    let idx = d["txinIndex"].as_u64().unwrap() as usize;
    let sighash = tx::key_spend_sighash(&unsigned, idx, &utxos).expect("sighash");
    assert_eq!(hex::encode(sighash), d["sigHash"].as_str().unwrap());
    let tweaked =
        Scalar::from_slice(&hex::decode(d["tweakedPrivkey"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(
        hex::encode(bip340::sign(&tweaked, &sighash, &[0; 32])),
        d["witness"].as_str().unwrap(),
        "the vector's signatures use zero aux randomness"
    );

    // The null-root private-key tweak the CPFP child uses.
    let k = &v["keyPathNullRoot"];
    let sk =
        Scalar::from_slice(&hex::decode(k["internalPrivkey"].as_str().unwrap()).unwrap()).unwrap();
    let own = CoinKey::new(sk.public()).unwrap();
    let tweaked = tx::tweaked_secret(&own, &sk).unwrap();
    assert_eq!(
        hex::encode(tweaked.to_bytes()),
        k["tweakedPrivkey"].as_str().unwrap()
    );
    let sig = bip340::sign(&tweaked, &h32(k["sigHash"].as_str().unwrap()), &[0; 32]);
    assert_eq!(hex::encode(sig), &k["witness"].as_str().unwrap()[..128]);
}

/// §2.3's vector, end to end through the owner and SE code.
#[test]
fn blinded_cosigning_vector() {
    let (o, s, r_s, r_o, b, m) = (
        rep(0x11),
        rep(0x23),
        rep(0x35),
        rep(0x47),
        rep(0x59),
        [0x6b; 32],
    );
    let key = CoinKey::from_shares(&s.public(), &o.public()).unwrap();
    assert_eq!(
        hex::encode(ser33(&key.p)),
        "02407cba6352eaeb9354dc75ca26396785b27a85cfd4d58575de440902292d662a"
    );
    assert_eq!(key.g_p, Sign::Plus);
    assert_eq!(
        hex::encode(xbytes(&key.q)),
        "49429e06dd2476e36fb4c44cf0b1f06dacca65dec5091ebd6223f87ef2b6c2f3"
    );
    assert_eq!(key.g_q, Sign::Minus);
    let owner = OwnerSession::new(r_o, b, m);
    assert_eq!(
        hex::encode(owner.commitment()),
        "355fdb876fc92fbf02f248c3624458a3d2c87a436b9d32563ba3e65ff55cf38b"
    );
    let ch = owner.challenge(&key, &r_s.public()).unwrap();
    assert_eq!(
        hex::encode(ser33(&ch.r_star)),
        "02af4a3a1ae41b387efd9fa6b0bb997b20de34973b2a6680de0153285db6809b0d"
    );
    assert_eq!(ch.sigma, Sign::Plus);
    assert_eq!(
        hex::encode(ch.c.to_bytes()),
        "952a9853d933355c50349bd585909775db4d1470df8fda1f6da46bec0256a8f7"
    );
    let s_s = cosign::server_partial(&r_s, &s, &ch.c).unwrap();
    assert_eq!(
        hex::encode(s_s.to_bytes()),
        "821b061a4ef14d1f990d1a3a884d472b4b3a0d6a3d215323b212ae909d0bce19"
    );
    let sig = owner
        .finish(&key, &o, &s.public(), &r_s.public(), &ch, &s_s)
        .unwrap();
    assert_eq!(
        hex::encode(sig),
        "af4a3a1ae41b387efd9fa6b0bb997b20de34973b2a6680de0153285db6809b0d\
         2a710f46f335e7816c974510c58293c1a5f77475dc4d6aa3e159cf511684506a"
    );
    assert!(bip340::verify(&key.output_key(), &m, &sig));
}

/// §2.5's vector.
#[test]
fn key_update_vector() {
    let (o1, s1, x1, o2) = (rep(0x11), rep(0x23), rep(0x7d), rep(0x8f));
    let p = CoinKey::from_shares(&s1.public(), &o1.public()).unwrap().p;
    let t1 = keyupdate::sender_t1(&o1, &x1).unwrap();
    assert_eq!(t1.to_bytes(), [0x8e; 32]);
    assert!(keyupdate::t1_is_valid(&t1, &o1.public(), &x1.public()));
    let (t2, s2_pub) = keyupdate::receiver_update(&t1, &o2, &p).unwrap();
    assert_eq!(
        hex::encode(t2.to_bytes()),
        "fefefefefefefefefefefefefefefefdb9addbe5ae479f3abed15d8bcf354040"
    );
    assert_eq!(
        hex::encode(ser33(&s2_pub)),
        "031fd22aba903a3ee542ba62dca598bd19da4e0af9001ff0d5cefbb3878b2aaaf4"
    );
    let s2 = keyupdate::server_update(&s1, &t2, &x1, &s2_pub).unwrap();
    assert_eq!(s2.add(&o2).unwrap(), s1.add(&o1).unwrap());
    assert_eq!(
        statechain_core::scalar::add_points(&s2_pub, &o2.public()).unwrap(),
        p
    );
}

fn spec_g_leaf() -> Leaf {
    let (r_s, r_o, b, m) = (rep(0x35), rep(0x47), rep(0x59), [0x6b; 32]);
    let key = CoinKey::from_shares(&rep(0x23).public(), &rep(0x11).public())
        .expect("valid vector values");
    let owner = OwnerSession::new(r_o, b, m);
    let ch = owner
        .challenge(&key, &r_s.public())
        .expect("valid vector values");
    let a = rep(0x9a);
    let com = owner.commitment();
    let digest = auth::digest(
        &[0xaa; 32],
        Op::SignSecond,
        &[0xbb; 16],
        &[0xcc; 32],
        &[&ser33(&r_s.public()), &com, &ch.c.to_bytes()],
    );
    Leaf {
        statechain_id: [0xbb; 16],
        seq: 1,
        prev: [0xcc; 32],
        body: Body::Signature(Signature {
            n: 1,
            server_nonce: r_s.public(),
            commitment: com,
            challenge: ch.c,
            auth_sig: bip340::sign(&a, &digest, &[0; 32]),
        }),
    }
}

/// §3.2's and §5.1's vectors.
#[test]
fn auth_digest_and_leaf_vectors() {
    let a = rep(0x9a);
    assert_eq!(
        hex::encode(bip340::xonly_of(&a).serialize()),
        "0c7184a51f2f0160d59dfab5a7fcc580c27b6be8754fc0726bbbc6d3f5557f28"
    );
    let leaf = spec_g_leaf();
    let digest = leaf.auth_digest(&[0xaa; 32]);
    assert_eq!(
        hex::encode(digest),
        "1a5a200dce0a61db8a6427a2450dd79cdf9633ff0c4e0c2912676277483882e8"
    );
    assert_eq!(
        hex::encode(leaf.body.auth_sig()),
        "bdd87e2ba0629e2b66eab3d4fb1dbcb3c28bf2c63119bd5d5f5980e8ab963617\
         b1c7106aa06119bc3aba206c0b15341eb6677ec58e968b750559e1b0ab6424cd"
    );
    let bytes = leaf.encode();
    assert_eq!(bytes.len(), 223);
    assert_eq!(
        hex::encode(leaf.hash()),
        "3a3ea0dc15f5b248ef5dbbad857ff943f8ff473270491f61316173fb82c73b05"
    );
    assert_eq!(Leaf::decode(&bytes).unwrap(), leaf);
}

fn run_python() -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../tools/statechain-vectors.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn sign_int(s: Sign) -> i64 {
    match s {
        Sign::Plus => 1,
        Sign::Minus => -1,
    }
}

/// Everything the co-signing derives, as the Python script names it.
fn ours(vals: [Scalar; 5], m: [u8; 32]) -> BTreeMap<String, serde_json::Value> {
    let [o, s, r_s, r_o, b] = vals;
    let key = CoinKey::from_shares(&s.public(), &o.public()).expect("valid vector values");
    let owner = OwnerSession::new(r_o, b, m);
    let ch = owner
        .challenge(&key, &r_s.public())
        .expect("valid vector values");
    let s_s = cosign::server_partial(&r_s, &s, &ch.c).expect("valid vector values");
    let sig = owner
        .finish(&key, &o, &s.public(), &r_s.public(), &ch, &s_s)
        .expect("valid vector values");
    let mut out = BTreeMap::new();
    out.insert("P".into(), hex::encode(ser33(&key.p)).into());
    out.insert("g_P".into(), sign_int(key.g_p).into());
    out.insert("xQ".into(), hex::encode(xbytes(&key.q)).into());
    out.insert("g_Q".into(), sign_int(key.g_q).into());
    out.insert("com".into(), hex::encode(owner.commitment()).into());
    out.insert("R_star".into(), hex::encode(ser33(&ch.r_star)).into());
    out.insert("sigma".into(), sign_int(ch.sigma).into());
    out.insert("c".into(), hex::encode(ch.c.to_bytes()).into());
    out.insert("s_s".into(), hex::encode(s_s.to_bytes()).into());
    out.insert("sig".into(), hex::encode(sig).into());
    out
}

/// A second vector set covering all eight `(g_P, g_Q, σ)` combinations,
/// computed by `tools/statechain-vectors.py` with plain integers and
/// recomputed here on libsecp256k1; plus the spec vectors through Python.
#[test]
fn an_independent_python_implementation_agrees() {
    let theirs = run_python();
    // The spec's vectors, through Python too.
    let spec = &theirs["spec"];
    let mine = ours(
        [rep(0x11), rep(0x23), rep(0x35), rep(0x47), rep(0x59)],
        [0x6b; 32],
    );
    for (k, v) in &mine {
        assert_eq!(&spec[k], v, "spec vector field {k}");
    }
    assert_eq!(
        spec["t2"],
        "fefefefefefefefefefefefefefefefdb9addbe5ae479f3abed15d8bcf354040"
    );
    let leaf = spec_g_leaf();
    assert_eq!(theirs["auth"]["g_leaf_hash"], hex::encode(leaf.hash()));
    assert_eq!(theirs["auth"]["sig"], hex::encode(leaf.body.auth_sig()));

    let cases = theirs["parities"].as_array().expect("parities");
    let mut combos = std::collections::BTreeSet::new();
    for case in cases {
        let inputs: Vec<[u8; 32]> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| h32(x.as_str().unwrap()))
            .collect();
        let vals = [0, 1, 2, 3, 4].map(|i| Scalar::from_bytes(&inputs[i]).unwrap());
        let mine = ours(vals, inputs[5]);
        for (k, v) in &mine {
            assert_eq!(&case[k], v, "field {k} of case {:?}", case["inputs"]);
        }
        combos.insert((
            mine["g_P"].to_string(),
            mine["g_Q"].to_string(),
            mine["sigma"].to_string(),
        ));
    }
    assert_eq!(combos.len(), 8, "every parity combination is covered");
}
