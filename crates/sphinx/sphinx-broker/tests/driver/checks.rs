//! Checks shared by the end-to-end tests: start broker and signer, and
//! drive signing requests whose replies are verified cryptographically.

use secp256k1::ecdh::SharedSecret;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message as Digest, PublicKey, Secp256k1, SecretKey, XOnlyPublicKey};
use sha2::{Digest as _, Sha256};
use sphinx_signer::Network;
use vls_protocol::model::{PubKey, Sha256 as WireSha256};
use vls_protocol::msgs::{self, Message};
use vls_protocol_signer::lightning_signer::bitcoin::hashes::{sha256, Hash};
use vls_protocol_signer::lightning_signer::lightning_invoice::{
    Currency, InvoiceBuilder, PaymentSecret, RawBolt11Invoice,
};

use super::{hsmd_init, Broker, Hsmd, Proc, SignerHome};

pub fn key(byte: u8) -> SecretKey {
    SecretKey::from_slice(&[byte; 32]).expect("key")
}

fn recover(digest: [u8; 32], sig: &[u8; 65]) -> PublicKey {
    let id = RecoveryId::from_i32(i32::from(sig[64])).expect("recovery id");
    let sig = RecoverableSignature::from_compact(&sig[..64], id).expect("signature");
    Secp256k1::new()
        .recover_ecdsa(&Digest::from_digest(digest), &sig)
        .expect("recovers")
}

/// Starts broker and signer, runs CLN's init, returns the init reply.
pub fn started(dir: &std::path::Path) -> (Broker, SignerHome, Proc, msgs::HsmdInitReplyV4) {
    let home = SignerHome::create(&dir.join("signer"));
    let owner = home.node_id().to_string();
    let mut broker = Broker::start(dir, &["--owner", &owner]);
    // CLN sends HsmdInit at once; the broker holds it until a signer answers.
    broker.master.send(&hsmd_init(Network::Regtest));
    let signer = home.start(&broker.url(), &[]);
    let Some(Message::HsmdInitReplyV4(init)) = broker.master.recv() else {
        panic!("no V4 init reply");
    };
    assert_eq!(
        init.node_id.0,
        home.node_id().serialize(),
        "node id from the seed"
    );
    assert_eq!(init.hsm_version, 6, "negotiated the newest common version");
    (broker, home, signer, init)
}

pub fn ecdh(hsmd: &mut Hsmd, home: &SignerHome, other: u8) {
    let other = key(other);
    let point = other.public_key(&Secp256k1::new());
    let Message::EcdhReply(reply) = hsmd.call(&msgs::Ecdh {
        point: PubKey(point.serialize()),
    }) else {
        panic!("not an ECDH reply");
    };
    assert_eq!(
        reply.secret.0,
        SharedSecret::new(&home.node_id(), &other).secret_bytes()
    );
}

/// A BOLT 11 invoice (regtest) and the `SignInvoice` request for it.
pub fn invoice(
    description: &str,
    payment_hash: [u8; 32],
    msat: u64,
) -> (RawBolt11Invoice, msgs::SignInvoice) {
    let raw = InvoiceBuilder::new(Currency::Regtest)
        .description(description.into())
        .payment_hash(sha256::Hash::from_byte_array(payment_hash))
        .payment_secret(PaymentSecret([5; 32]))
        .current_timestamp()
        .min_final_cltv_expiry_delta(144)
        .amount_milli_satoshis(msat)
        .build_raw()
        .expect("invoice");
    let (hrp, data) = raw.to_raw();
    let request = msgs::SignInvoice {
        u5bytes: data.iter().map(|fe| fe.to_u8()).collect::<Vec<_>>().into(),
        hrp: hrp.into_bytes().into(),
    };
    (raw, request)
}

/// The requests of the notes' §5.3 item 6, each checked.
pub fn exercise(master: &mut Hsmd, home: &SignerHome, init: &msgs::HsmdInitReplyV4) {
    let node_id = home.node_id();
    assert!(matches!(master.call(&msgs::Memleak {}), Message::MemleakReply(r) if !r.result));
    ecdh(master, home, 3);

    // SignMessage: sha256d("Lightning Signed Message:" ‖ msg), recoverable.
    let text = b"lightkeeper says hello".to_vec();
    let Message::SignMessageReply(reply) = master.call(&msgs::SignMessage {
        message: text.clone().into(),
    }) else {
        panic!("not a SignMessage reply");
    };
    let inner = Sha256::new()
        .chain_update(b"Lightning Signed Message:")
        .chain_update(&text)
        .finalize();
    assert_eq!(
        recover(Sha256::digest(inner).into(), &reply.signature.0),
        node_id
    );

    // SignInvoice: a BOLT 11 invoice built here; the signature recovers to
    // the node over the invoice's signable hash.
    let (raw, request) = invoice("coffee", [4; 32], 25_000);
    let Message::SignInvoiceReply(reply) = master.call(&request) else {
        panic!("not a SignInvoice reply");
    };
    assert_eq!(recover(raw.signable_hash(), &reply.signature.0), node_id);

    // SignBolt12: BIP-340 over the tagged merkle root; without a tweak by
    // the node key, with one by the init reply's bolt12 key tweaked by
    // sha256(bolt12 ‖ tweak), as CLN does.
    let merkle_root = [6u8; 32];
    let tag = Sha256::new()
        .chain_update(b"lightning")
        .chain_update(b"invoice")
        .chain_update(b"signature")
        .finalize();
    let digest: [u8; 32] = Sha256::new()
        .chain_update(tag)
        .chain_update(tag)
        .chain_update(merkle_root)
        .finalize()
        .into();
    let bolt12 = PublicKey::from_slice(&init.bolt12.0).expect("bolt12 key");
    let tweak = b"offer-tweak".to_vec();
    let tweak_scalar: [u8; 32] = Sha256::new()
        .chain_update(bolt12.serialize())
        .chain_update(&tweak)
        .finalize()
        .into();
    let tweaked = bolt12
        .add_exp_tweak(
            &Secp256k1::new(),
            &secp256k1::Scalar::from_be_bytes(tweak_scalar).expect("scalar"),
        )
        .expect("tweak");
    for (public_tweak, signer_key) in [(Vec::new(), node_id), (tweak, tweaked)] {
        let Message::SignBolt12Reply(reply) = master.call(&msgs::SignBolt12 {
            message_name: vls_protocol::serde_bolt::WireString(b"invoice".to_vec()),
            field_name: vls_protocol::serde_bolt::WireString(b"signature".to_vec()),
            merkle_root: WireSha256(merkle_root),
            public_tweak: public_tweak.into(),
        }) else {
            panic!("not a SignBolt12 reply");
        };
        let signature =
            secp256k1::schnorr::Signature::from_slice(&reply.signature.0).expect("schnorr");
        Secp256k1::new()
            .verify_schnorr(
                &signature,
                &Digest::from_digest(digest),
                &XOnlyPublicKey::from(signer_key),
            )
            .expect("BOLT 12 signature verifies");
    }

    // A channel: created, its basepoints stable, its commitment points
    // served on its own client connection.
    let peer = key(9).public_key(&Secp256k1::new()).serialize();
    assert!(matches!(
        master.call(&msgs::NewChannel {
            peer_id: PubKey(peer),
            dbid: 1
        }),
        Message::NewChannelReply(_)
    ));
    let basepoints = || msgs::GetChannelBasepoints {
        node_id: PubKey(peer),
        dbid: 1,
    };
    let Message::GetChannelBasepointsReply(first) = master.call(&basepoints()) else {
        panic!("not a basepoints reply");
    };
    let funding = PublicKey::from_slice(&first.funding.0).expect("funding key is a point");
    assert_ne!(funding, node_id);
    let Message::GetChannelBasepointsReply(again) = master.call(&basepoints()) else {
        panic!("not a basepoints reply");
    };
    assert_eq!(again.funding.0, first.funding.0, "deterministic");

    let mut channel = master.client(peer, 1);
    let point = |channel: &mut Hsmd, n| {
        let Message::GetPerCommitmentPointReply(r) = channel.call(&msgs::GetPerCommitmentPoint {
            commitment_number: n,
        }) else {
            panic!("not a commitment point");
        };
        PublicKey::from_slice(&r.point.0).expect("a point")
    };
    assert_ne!(point(&mut channel, 0), point(&mut channel, 1));
    ecdh(&mut channel, home, 4);
}

/// Broker on LSS (`lss_urls`, one or several), owned by `home`'s node, with
/// CLN's init sent; the caller starts signers.
pub fn lss_broker(
    dir: &std::path::Path,
    lss_urls: &str,
    home: &SignerHome,
    extra: &[&str],
) -> Broker {
    let owner = home.node_id().to_string();
    let mut args = vec!["--owner", owner.as_str()];
    args.extend_from_slice(extra);
    let mut broker = Broker::start_lss(dir, lss_urls, &args);
    broker.master.send(&hsmd_init(Network::Regtest));
    broker
}

/// The peer of the test channels.
pub fn peer() -> [u8; 33] {
    key(9).public_key(&Secp256k1::new()).serialize()
}

/// Opens channel `dbid` with [`peer`]: a request whose changes are stored.
pub fn new_channel(hsmd: &mut Hsmd, dbid: u64) {
    let reply = hsmd.call(&msgs::NewChannel {
        peer_id: PubKey(peer()),
        dbid,
    });
    assert!(matches!(reply, Message::NewChannelReply(_)), "{reply:?}");
}

/// The channel is known to the signer (its commitment points are served).
pub fn knows_channel(master: &mut Hsmd, dbid: u64) {
    let mut channel = master.client(peer(), dbid);
    let reply = channel.call(&msgs::GetPerCommitmentPoint {
        commitment_number: 0,
    });
    assert!(
        matches!(reply, Message::GetPerCommitmentPointReply(_)),
        "{reply:?}"
    );
}
