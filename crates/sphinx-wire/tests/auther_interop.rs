//! Login tokens against the reference's own token code, the crates.io
//! `sphinx-auther` 0.1.12 (what sphinx-key devices and broker use): tokens it
//! makes pass our check, tokens we make recover and verify with it, and its
//! published test vector recovers to the same key with both.

use sphinx_auther::secp256k1 as their_secp;
use sphinx_auther::token::Token;
use sphinx_wire::login;

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
    let key = login::check(&username, &password, now(), 60).expect("accepted");
    assert_eq!(key.serialize(), public.serialize());
}

#[test]
fn our_tokens_recover_and_verify_with_theirs() {
    let secret = secp256k1::SecretKey::from_slice(&[0x42; 32]).expect("key");
    let public = secret.public_key(&secp256k1::Secp256k1::signing_only());
    let password = login::password(&secret, now() as u32);
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
    let (timestamp, ours) = login::recover(vector).expect("recover");
    assert_eq!(ours.serialize(), theirs.serialize());
    let username = hex::encode(ours.serialize());
    assert!(login::check(&username, vector, u64::from(timestamp) + 30, 60).is_ok());
    assert!(matches!(
        login::check(&username, vector, now(), 60),
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
    // Ours, opened by theirs.
    let bytes = control::sign(&msg, 9, &ours_secret);
    let (body, nonce) =
        sphinx_auther::nonce::parse_msg_no_nonce(&bytes, &public).expect("theirs verifies ours");
    assert_eq!((body, nonce), (control::encode(&msg), 9));
    // Theirs, opened by ours.
    let theirs =
        sphinx_auther::nonce::build_msg(&control::encode(&msg), &secret, 10).expect("build");
    assert_eq!(control::open(&theirs, &ours_public), Ok((msg, 10)));
}
