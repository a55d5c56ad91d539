//! The signing core against real VLS: init, signing checked
//! cryptographically, duplicates, restarts, and hostile input.

use secp256k1::ecdh::SharedSecret;
use secp256k1::{Secp256k1, SecretKey};
use sphinx_signer::core::{Core, CoreError, Mode, Outgoing};
use sphinx_signer::run::node_key;
use sphinx_signer::Network;
use sphinx_wire::hsmd::Frame;
use sphinx_wire::serial;
use vls_protocol_signer::lightning_signer::bitcoin::blockdata::constants::genesis_block;
use vls_protocol_signer::vls_protocol::model::{Bip32KeyVersion, PubKey};
use vls_protocol_signer::vls_protocol::msgs::{self, SerBolt};

const SEED: [u8; 32] = [7; 32];

fn request(seq: u16, dbid: u64, message: &dyn SerBolt) -> Vec<u8> {
    let peer_id = if dbid == 0 { [0; 33] } else { peer() };
    serial::Request {
        seq,
        peer_id,
        dbid,
        frame: Frame::from_message(&message.as_vec()).expect("frame"),
    }
    .encode()
    .expect("encode")
}

fn peer() -> [u8; 33] {
    let key = SecretKey::from_slice(&[9; 32]).expect("key");
    key.public_key(&Secp256k1::new()).serialize()
}

fn hsmd_init(network: Network) -> msgs::HsmdInit {
    msgs::HsmdInit {
        key_version: Bip32KeyVersion {
            pubkey_version: 0x043587cf,
            privkey_version: 0x04358394,
        },
        chain_params: genesis_block(network).block_hash(),
        encryption_key: None,
        dev_privkey: None,
        dev_bip32_seed: None,
        dev_channel_secrets: None,
        dev_channel_secrets_shaseed: None,
        hsm_wire_min_version: 2,
        hsm_wire_max_version: 6,
    }
}

fn reply(payload: &[u8], seq: u16) -> msgs::Message {
    let response = serial::Response::decode(payload).expect("response");
    assert_eq!(response.seq, seq);
    msgs::from_vec(response.frame.message()).expect("reply parses")
}

/// A request in local mode: always answered at once.
fn local(core: &mut Core, request: &[u8]) -> Result<Vec<u8>, CoreError> {
    match core.handle(request)? {
        Outgoing::Reply(reply) => Ok(reply),
        Outgoing::Persist(_) => panic!("local mode stores nothing in LSS"),
    }
}

fn started(dir: &std::path::Path) -> Core {
    let mut core = Core::open(Network::Regtest, SEED, dir, Mode::Local).expect("open");
    let payload = core
        .init(&request(0, 0, &hsmd_init(Network::Regtest)))
        .expect("init");
    let msgs::Message::HsmdInitReplyV4(init) = reply(&payload, 0) else {
        panic!("not a V4 init reply");
    };
    let (node_id, _) = node_key(Network::Regtest, &SEED);
    assert_eq!(init.node_id.0, node_id.serialize(), "node id from the seed");
    assert_eq!(init.hsm_version, 6);
    core
}

#[test]
fn ecdh_matches_the_other_side_and_duplicates_get_the_cached_reply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut core = started(dir.path());
    let other = SecretKey::from_slice(&[3; 32]).expect("key");
    let point = other.public_key(&Secp256k1::new());
    let req = request(
        1,
        0,
        &msgs::Ecdh {
            point: PubKey(point.serialize()),
        },
    );
    let payload = local(&mut core, &req).expect("ecdh");
    let msgs::Message::EcdhReply(ecdh) = reply(&payload, 1) else {
        panic!("not an ECDH reply");
    };
    let (node_id, _) = node_key(Network::Regtest, &SEED);
    assert_eq!(
        ecdh.secret.0,
        SharedSecret::new(&node_id, &other).secret_bytes()
    );

    // The same request again: the same bytes back, from the cache.
    assert_eq!(local(&mut core, &req).expect("duplicate"), payload);
    // The same sequence with other bytes is a new request (a restarted
    // broker counts from 1 again), answered for what it asks.
    let other_req = request(
        2,
        0,
        &msgs::Ecdh {
            point: PubKey(node_id.serialize()),
        },
    );
    let payload = local(&mut core, &other_req).expect("a new request");
    let msgs::Message::EcdhReply(again) = reply(&payload, 2) else {
        panic!("not an ECDH reply");
    };
    assert_ne!(again.secret.0, ecdh.secret.0);
}

#[test]
fn channels_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut core = started(dir.path());
        let new = msgs::NewChannel {
            peer_id: PubKey(peer()),
            dbid: 1,
        };
        let payload = local(&mut core, &request(1, 0, &new)).expect("new channel");
        assert!(matches!(
            reply(&payload, 1),
            msgs::Message::NewChannelReply(_)
        ));
    }
    let mut core = started(dir.path());
    let point = msgs::GetPerCommitmentPoint {
        commitment_number: 0,
    };
    let payload = local(&mut core, &request(2, 1, &point)).expect("known channel");
    assert!(matches!(
        reply(&payload, 2),
        msgs::Message::GetPerCommitmentPointReply(_)
    ));
    // A channel never created is an error, and the core carries on.
    let err = core
        .handle(&request(3, 7, &point))
        .expect_err("unknown channel");
    assert!(matches!(err, CoreError::Refused { .. }), "{err}");
    let payload = local(&mut core, &request(4, 1, &point)).expect("still serving");
    assert!(matches!(
        reply(&payload, 4),
        msgs::Message::GetPerCommitmentPointReply(_)
    ));
}

#[test]
fn hostile_input_is_an_error_and_never_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut core = Core::open(Network::Regtest, SEED, dir.path(), Mode::Local).expect("open");
    let ecdh = msgs::Ecdh {
        point: PubKey(peer()),
    };
    assert!(matches!(
        local(&mut core, &request(1, 0, &ecdh)),
        Err(CoreError::NotInitialised(_))
    ));
    // Another chain, impossible versions, not an init at all.
    let err = core
        .init(&request(0, 0, &hsmd_init(Network::Bitcoin)))
        .expect_err("mainnet node on a regtest signer");
    assert!(err.to_string().contains("another chain"), "{err}");
    let mut bad_versions = hsmd_init(Network::Regtest);
    bad_versions.hsm_wire_min_version = 7;
    bad_versions.hsm_wire_max_version = 9;
    assert!(matches!(
        core.init(&request(0, 0, &bad_versions)),
        Err(CoreError::BadInit(_))
    ));
    assert!(matches!(
        core.init(&request(0, 0, &ecdh)),
        Err(CoreError::BadInit(_))
    ));
    for garbage in [
        &b""[..],
        &[0xAA, 0x55][..],
        &[0u8; 60][..],
        &[0xAA, 0x55, 0, 1][..],
    ] {
        assert!(core.init(garbage).is_err());
        assert!(local(&mut core, garbage).is_err());
    }
    drop(core);
    let mut core = started(dir.path());
    // An unknown type, a truncated body, an invalid point.
    let unknown = serial::Request {
        seq: 5,
        peer_id: [0; 33],
        dbid: 0,
        frame: Frame {
            ty: 4242,
            body: vec![1, 2, 3],
        },
    };
    assert!(local(&mut core, &unknown.encode().expect("encode")).is_err());
    let truncated = serial::Request {
        seq: 6,
        peer_id: [0; 33],
        dbid: 0,
        frame: Frame {
            ty: 1,
            body: vec![2; 10],
        },
    };
    assert!(local(&mut core, &truncated.encode().expect("encode")).is_err());
    let bad_point = msgs::Ecdh {
        point: PubKey([5; 33]),
    };
    assert!(local(&mut core, &request(7, 0, &bad_point)).is_err());
    // A message for a channel handler sent to the root (VLS would panic).
    let point = msgs::GetPerCommitmentPoint {
        commitment_number: 0,
    };
    assert!(local(&mut core, &request(8, 0, &point)).is_err());
    // Still serving.
    assert!(local(&mut core, &request(9, 0, &ecdh)).is_ok());
}

/// Key separation: the node host asks hsmd's SignMessage for the node key's
/// signature over a control message or a login timestamp, to turn it into
/// an operator's command or a signer login.
#[test]
fn signmessage_refuses_what_would_be_a_control_message_or_login_token() {
    use sphinx_wire::control::{self, ControlMessage};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut core = started(dir.path());
    let node = node_key(Network::Regtest, &SEED).0;
    let attacker = format!("payee:{}", node);
    let mut body = control::encode(&ControlMessage::UpdateAllowlist(vec![attacker]));
    body.extend_from_slice(&1u64.to_be_bytes());
    let login = 1_800_000_000u32.to_be_bytes().to_vec();
    for (seq, message) in [(20, body.clone()), (21, login)] {
        let err = local(
            &mut core,
            &request(
                seq,
                0,
                &msgs::SignMessage {
                    message: message.into(),
                },
            ),
        )
        .expect_err("reserved shape refused");
        assert!(err.to_string().contains("control message"), "{err}");
    }
    // An ordinary message is still signed, by the node key.
    let text = b"I own this node".to_vec();
    let signed = local(
        &mut core,
        &request(
            22,
            0,
            &msgs::SignMessage {
                message: text.clone().into(),
            },
        ),
    )
    .expect("ordinary message signed");
    let msgs::Message::SignMessageReply(r) = reply(&signed, 22) else {
        panic!("not a SignMessage reply");
    };
    let mut compact = [0u8; 64];
    compact.copy_from_slice(&r.signature.0[..64]);
    let id = secp256k1::ecdsa::RecoveryId::from_i32(i32::from(r.signature.0[64])).expect("id");
    let sig = secp256k1::ecdsa::RecoverableSignature::from_compact(&compact, id).expect("sig");
    let digest = sha256d(&[&b"Lightning Signed Message:"[..], &text].concat());
    let recovered = Secp256k1::new()
        .recover_ecdsa(&secp256k1::Message::from_digest(digest), &sig)
        .expect("recover");
    assert_eq!(recovered, node);
    // Even a Lightning Signed Message over the control body (what a signer
    // without the rule would give) is not a control message to this one.
    let forged = control::sign_compat(
        &ControlMessage::UpdateAllowlist(vec![]),
        2,
        &node_key(Network::Regtest, &SEED).1,
    );
    let Outgoing::Reply(bytes) = core.control(&forged).expect("answered") else {
        panic!("a forgery stored something");
    };
    assert!(matches!(
        control::decode(&bytes),
        Ok(control::ControlResponse::Error(e)) if e.contains("not signed")
    ));
}

fn sha256d(bytes: &[u8]) -> [u8; 32] {
    use vls_protocol_signer::lightning_signer::bitcoin::hashes::{sha256d, Hash};
    sha256d::Hash::hash(bytes).to_byte_array()
}

mod control {
    use super::*;
    use sphinx_wire::control::{self, ControlMessage, ControlResponse, Interval, Policy};

    fn send(core: &mut Core, message: &ControlMessage, nonce: u64) -> ControlResponse {
        let secret = node_key(Network::Regtest, &SEED).1;
        match core
            .control(&control::sign(message, nonce, &secret))
            .expect("answered")
        {
            Outgoing::Reply(bytes) => control::decode(&bytes).expect("a response"),
            Outgoing::Persist(_) => panic!("local mode stores nothing in LSS"),
        }
    }

    fn payee(byte: u8) -> String {
        let key = SecretKey::from_slice(&[byte; 32]).expect("key");
        format!("payee:{}", key.public_key(&Secp256k1::new()))
    }

    #[test]
    fn signed_updates_persist_and_replays_or_forgeries_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut core = started(dir.path());
        assert_eq!(
            send(&mut core, &ControlMessage::Nonce, 0),
            ControlResponse::Nonce(0)
        );
        let list = vec![payee(1), payee(2)];
        let update = ControlMessage::UpdateAllowlist(list.clone());
        assert_eq!(
            send(&mut core, &update, 1),
            ControlResponse::AllowlistUpdated(list.clone())
        );
        // The same message again (a replay), one too far ahead, and one
        // signed by another key: refused, nothing changes.
        assert!(
            matches!(send(&mut core, &update, 1), ControlResponse::Error(e) if e.contains("nonce"))
        );
        assert!(matches!(
            send(&mut core, &ControlMessage::QueryAllowlist, 30),
            ControlResponse::Error(_)
        ));
        let stranger = SecretKey::from_slice(&[77; 32]).expect("key");
        let forged = control::sign(&ControlMessage::UpdateAllowlist(vec![]), 2, &stranger);
        let Outgoing::Reply(bytes) = core.control(&forged).expect("answered") else {
            panic!("a forgery stored something");
        };
        assert!(
            matches!(control::decode(&bytes), Ok(ControlResponse::Error(e)) if e.contains("not signed"))
        );
        assert!(matches!(
            core.control(b"garbage").expect("answered"),
            Outgoing::Reply(_)
        ));

        let policy = Policy {
            msat_per_interval: 5_000_000,
            interval: Interval::Hourly,
            htlc_limit_msat: 1_000,
        };
        assert_eq!(
            send(&mut core, &ControlMessage::UpdatePolicy(policy), 2),
            ControlResponse::PolicyUpdated(policy)
        );
        assert_eq!(
            send(&mut core, &ControlMessage::Nonce, 0),
            ControlResponse::Nonce(2)
        );
        assert!(matches!(
            send(&mut core, &ControlMessage::ResetKeys, 3),
            ControlResponse::Error(e) if e.contains("host signer")
        ));

        // After a restart: allowlist, policy and nonce are still there.
        drop(core);
        let mut core = started(dir.path());
        let ControlResponse::AllCurrent {
            policy: p,
            allowlist,
            ..
        } = send(&mut core, &ControlMessage::QueryAll, 4)
        else {
            panic!("not AllCurrent");
        };
        let (mut allowlist, mut list) = (allowlist, list);
        allowlist.sort();
        list.sort();
        assert_eq!((p, allowlist), (policy, list), "a set: compared sorted");
        assert!(
            matches!(send(&mut core, &update, 4), ControlResponse::Error(_)),
            "nonce 4 is used"
        );
    }
}
