//! Login tokens against the reference's own token code, the crates.io
//! `sphinx-auther` 0.1.12 (what sphinx-key devices and broker use): tokens it
//! makes pass our check, tokens we make recover and verify with it, and its
//! published test vector recovers to the same key with both.

use sphinx_auther::secp256k1 as their_secp;
use sphinx_auther::token::Token;
use sphinx_wire::login;

const COMPAT: login::Rules = login::Rules {
    window_secs: 60,
    compat: true,
};
const CID: &str = "0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn their_tokens_pass_our_check() {
    let secret = their_secp::SecretKey::from_slice(&[0xcd; 32]).expect("key");
    let public = their_secp::PublicKey::from_secret_key(&their_secp::Secp256k1::new(), &secret);
    let password = Token::new().sign_to_base64(&secret).expect("their token");
    let username = hex::encode(public.serialize());
    let login = login::check(&username, &password, CID, now() * 1000, COMPAT).expect("accepted");
    assert_eq!(login.key.serialize(), public.serialize());
    // Only where sphinx-key compatibility is on.
    let strict = login::Rules {
        compat: false,
        ..COMPAT
    };
    assert_eq!(
        login::check(&username, &password, CID, now() * 1000, strict),
        Err(login::LoginError::CompatRefused)
    );
}

#[test]
fn our_tokens_recover_and_verify_with_theirs() {
    let secret = secp256k1::SecretKey::from_slice(&[0x42; 32]).expect("key");
    let public = secret.public_key(&secp256k1::Secp256k1::signing_only());
    let password = login::compat_password(&secret, now() as u32);
    let token = Token::from_base64(&password).expect("their parser");
    let recovered = token.recover().expect("their recovery");
    assert_eq!(recovered.serialize(), public.serialize());
    token.verify(&recovered).expect("their verification");
}

#[test]
fn their_published_vector_recovers_the_same_key_with_both() {
    // The token in sphinx-auther's own tests (made in 2022, so long expired).
    let vector = "YvM0wyAZBWdHaVsS4sqy-ub3X0JRx7zVTY9O6aL0q_CIV9zOKykO_grPE4DSelinHNX9pTFZ3wEoLhg5QT7EVZpOlj0x";
    let theirs = Token::from_base64(vector)
        .expect("parse")
        .recover()
        .expect("recover");
    let ours = login::recover(vector, CID).expect("recover");
    assert_eq!(ours.key.serialize(), theirs.serialize());
    let username = hex::encode(ours.key.serialize());
    assert!(login::check(&username, vector, CID, ours.timestamp_ms + 30_000, COMPAT).is_ok());
    assert!(matches!(
        login::check(&username, vector, CID, now() * 1000, COMPAT),
        Err(login::LoginError::Expired { .. })
    ));
}

#[test]
fn control_envelopes_interoperate_with_the_reference() {
    use sphinx_wire::control::{self, ControlMessage};
    let secret = sphinx_auther::secp256k1::SecretKey::from_slice(&[0x42; 32]).expect("key");
    let public = secret.public_key(&sphinx_auther::secp256k1::Secp256k1::new());
    let ours_secret = secp256k1::SecretKey::from_slice(&[0x42; 32]).expect("key");
    let ours_public = secp256k1::PublicKey::from_slice(&public.serialize()).expect("key");
    let msg = ControlMessage::QueryAllowlist;
    // Ours in sphinx-key's form, opened by theirs.
    let bytes = control::sign_compat(&msg, 9, &ours_secret);
    let (body, nonce) =
        sphinx_auther::nonce::parse_msg_no_nonce(&bytes, &public).expect("theirs verifies ours");
    assert_eq!((body, nonce), (control::encode(&msg), 9));
    // Theirs, opened by ours.
    let theirs =
        sphinx_auther::nonce::build_msg(&control::encode(&msg), &secret, 10).expect("build");
    assert_eq!(
        control::open(&theirs, &ours_public, true),
        Ok((msg.clone(), 10))
    );
    // A signer not configured for sphinx-key refuses theirs: hsmd's
    // SignMessage makes the same signature for anyone on the node host.
    assert_eq!(
        control::open(&theirs, &ours_public, false),
        Err(control::ControlError::Signature)
    );
    // And theirs does not accept our own domain's signature.
    let tagged = control::sign(&msg, 11, &ours_secret);
    assert!(sphinx_auther::nonce::parse_msg_no_nonce(&tagged, &public).is_err());
}
