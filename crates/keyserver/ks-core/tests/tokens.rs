//! Payment tokens (keyserver.md §5): issuance and redemption round trips,
//! every way a token can be wrong, and interop with the `privacypass`
//! crate (RFC 9578 type 0x0002) in both directions.

use blind_rsa_signatures::DefaultRng;
use ks_core::token::{
    challenge, challenge_digest, IssuerKey, IssuerSecret, Pending, Token, TokenError, TokenRequest,
    TokenResponse, PENDING_LEN, REQUEST_LEN, TOKEN_LEN,
};
use privacypass::auth::authenticate::TokenChallenge;
use privacypass::public_tokens::server::{IssuerServer, OriginServer};
use privacypass::test_utils::nonce_store::MemoryNonceStore;
use privacypass::test_utils::public_memory_store::{IssuerMemoryKeyStore, OriginMemoryKeyStore};
use privacypass::{Deserialize as _, Serialize as _, TokenType};
use proptest::prelude::*;
use std::sync::OnceLock;

const ISSUER: &str = "keys.example.org";
const ORIGIN: &str = "keys.example.org/kt/v1";

/// One issuer key for the whole file (key generation is the slow part).
fn issuer() -> &'static IssuerSecret {
    static KEY: OnceLock<IssuerSecret> = OnceLock::new();
    KEY.get_or_init(|| IssuerSecret::generate(&mut DefaultRng).expect("keygen"))
}

fn digest() -> [u8; 32] {
    challenge_digest(ISSUER, ORIGIN)
}

fn nonce(n: u8) -> [u8; 32] {
    let mut b = [n; 32];
    b[0] = 0xa5;
    b
}

/// The whole issuance: blind, sign, finalize.
fn mint(secret: &IssuerSecret, n: u8) -> Token {
    let key = secret.public();
    let (request, pending) = key
        .blind(&digest(), nonce(n), &mut DefaultRng)
        .expect("blind");
    // Over the wire and back, as between ks-cli and keyserverd.
    let request = TokenRequest::parse(&request.to_bytes()).expect("request");
    let response = secret.sign(&request).expect("sign");
    let response = TokenResponse::parse(&response.to_bytes()).expect("response");
    let pending = Pending::parse(&pending.to_bytes()).expect("pending");
    key.finalize(&digest(), &pending, &response)
        .expect("finalize")
}

#[test]
fn a_token_issued_blindly_verifies_and_round_trips() {
    let secret = issuer();
    let token = mint(secret, 1);
    assert_eq!(token.to_bytes().len(), TOKEN_LEN);
    let again = Token::from_b64(&token.to_b64()).expect("b64");
    assert_eq!(again, token);
    again
        .verify(&digest(), std::slice::from_ref(secret.public()))
        .expect("verifies");
    // The PEM round trip keeps the key (the key file).
    let pem = secret.to_pem().expect("pem");
    let read = IssuerSecret::from_pem(&pem).expect("read pem");
    assert_eq!(read.public().key_id(), secret.public().key_id());
    let spki = IssuerKey::from_spki(secret.public().spki()).expect("spki");
    assert_eq!(spki.key_id(), secret.public().key_id());
    // Debug never shows the secret or the token's nonce.
    assert!(!format!("{read:?}").contains("BEGIN"));
    assert!(format!("{token:?}").contains("redacted"));
}

#[test]
fn wrong_tokens_are_refused() {
    let secret = issuer();
    let accepted = std::slice::from_ref(secret.public());
    let token = mint(secret, 2);
    // Another deployment's challenge.
    assert_eq!(
        token.verify(&challenge_digest(ISSUER, "other.example/kt/v1"), accepted),
        Err(TokenError::WrongChallenge)
    );
    // A key not accepted here.
    let other = IssuerSecret::generate(&mut DefaultRng).expect("keygen");
    assert_eq!(
        token.verify(&digest(), std::slice::from_ref(other.public())),
        Err(TokenError::UnknownKey)
    );
    // A token of the other key, relabelled as ours.
    let mut forged = mint(&other, 3);
    forged.key_id = *secret.public().key_id();
    assert_eq!(
        forged.verify(&digest(), accepted),
        Err(TokenError::BadSignature)
    );
    // Any changed nonce or authenticator bit.
    let mut bytes = token.to_bytes();
    bytes[5] ^= 1;
    let changed = Token::parse(&bytes).expect("parses");
    assert_eq!(
        changed.verify(&digest(), accepted),
        Err(TokenError::BadSignature)
    );
    let mut bytes = token.to_bytes();
    bytes[TOKEN_LEN - 1] ^= 1;
    let changed = Token::parse(&bytes).expect("parses");
    assert_eq!(
        changed.verify(&digest(), accepted),
        Err(TokenError::BadSignature)
    );
    // Wrong type, wrong lengths, not base64.
    let mut bytes = token.to_bytes();
    bytes[1] = 1;
    assert!(matches!(
        Token::parse(&bytes),
        Err(TokenError::Malformed { .. })
    ));
    assert!(Token::parse(&token.to_bytes()[1..]).is_err());
    assert!(Token::from_b64("not base64!").is_err());
    // The issuer refuses a request for another key, and a blinded message
    // out of range; a bad response is refused at finalize.
    let (mut request, pending) = secret
        .public()
        .blind(&digest(), nonce(4), &mut DefaultRng)
        .expect("blind");
    request.truncated_key_id ^= 1;
    assert_eq!(secret.sign(&request), Err(TokenError::UnknownKey));
    request.truncated_key_id ^= 1;
    let mut huge = request.clone();
    huge.blinded_msg = [0xff; 256];
    assert!(secret.sign(&huge).is_err());
    // The other key's modulus may be smaller than ours, so our blinded
    // message can be out of its range: clear the top byte, which puts it
    // below any 2048-bit modulus (the response is wrong either way).
    let mut blinded_msg = request.blinded_msg;
    blinded_msg[0] = 0;
    let response = other.sign(&TokenRequest {
        truncated_key_id: other.public().key_id()[31],
        blinded_msg,
    });
    let response = response.expect("the other key signs anything in range");
    assert_eq!(
        secret.public().finalize(&digest(), &pending, &response),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn keys_must_be_canonical_rsa_pss_spkis() {
    let spki = issuer().public().spki().to_vec();
    assert!(IssuerKey::from_spki(&[]).is_err());
    assert!(IssuerKey::from_spki(&spki[..spki.len() - 1]).is_err());
    assert!(IssuerKey::from_spki(&vec![0x30; 4096]).is_err());
    let mut longer = spki.clone();
    longer.push(0);
    assert!(IssuerKey::from_spki(&longer).is_err());
    assert!(IssuerSecret::from_pem(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    .is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// The decoders never panic and accept exactly their lengths.
    #[test]
    fn decoders_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let t = Token::parse(&bytes);
        prop_assert_eq!(t.is_ok(), bytes.len() == TOKEN_LEN && bytes[..2] == [0, 2]);
        if let Ok(t) = t {
            prop_assert_eq!(t.to_bytes(), bytes.clone());
        }
        let r = TokenRequest::parse(&bytes);
        prop_assert_eq!(r.is_ok(), bytes.len() == REQUEST_LEN && bytes[..2] == [0, 2]);
        if let Ok(r) = r {
            prop_assert_eq!(r.to_bytes(), bytes.clone());
        }
        prop_assert_eq!(TokenResponse::parse(&bytes).is_ok(), bytes.len() == 256);
        prop_assert_eq!(Pending::parse(&bytes).is_ok(), bytes.len() == PENDING_LEN);
        let _ = IssuerKey::from_spki(&bytes);
    }
}

#[test]
fn the_challenge_is_rfc_9578s() {
    let theirs = TokenChallenge::new(TokenType::Public, ISSUER, None, &[ORIGIN.to_string()]);
    assert_eq!(
        challenge(ISSUER, ORIGIN),
        theirs.serialize().expect("serialize")
    );
    assert_eq!(digest(), theirs.digest().expect("digest"));
}

/// A privacypass client and issuer against ours, both ways; and our token
/// redeemed by privacypass's origin.
#[tokio::test]
async fn interoperates_with_privacypass() {
    let secret = issuer();
    let theirs = TokenChallenge::new(TokenType::Public, ISSUER, None, &[ORIGIN.to_string()]);
    let pk =
        blind_rsa_signatures::PublicKeySha384PSSDeterministic::from_spki(secret.public().spki())
            .expect("their view of our key");

    // Their client, our issuer, our verifier.
    let (request, state) =
        privacypass::public_tokens::TokenRequest::new(&mut DefaultRng, pk.clone(), &theirs)
            .expect("their request");
    let ours = TokenRequest::parse(&request.tls_serialize_detached().expect("ser")).expect("parse");
    let response = secret.sign(&ours).expect("sign");
    let response =
        privacypass::public_tokens::TokenResponse::tls_deserialize_exact(response.to_bytes())
            .expect("their response");
    let token = response.issue_token(&state).expect("their token");
    let token = Token::parse(&token.tls_serialize_detached().expect("ser")).expect("our parse");
    token
        .verify(&digest(), std::slice::from_ref(secret.public()))
        .expect("their token verifies here");

    // Our token, their origin.
    let keys = OriginMemoryKeyStore::default();
    use privacypass::public_tokens::server::OriginKeyStore as _;
    keys.insert(secret.public().key_id()[31], pk.clone()).await;
    let nonces = MemoryNonceStore::default();
    let ours = mint(secret, 9);
    let parsed = privacypass::public_tokens::PublicToken::tls_deserialize_exact(ours.to_bytes())
        .expect("their parse");
    OriginServer::new()
        .redeem_token(&keys, &nonces, parsed.clone())
        .await
        .expect("our token redeems there");
    // And they refuse it a second time, as we do.
    assert!(OriginServer::new()
        .redeem_token(&keys, &nonces, parsed)
        .await
        .is_err());

    // Our client, their issuer.
    let issuer_keys = IssuerMemoryKeyStore::default();
    let their_pk = IssuerServer::new()
        .create_keypair(&mut DefaultRng, &issuer_keys)
        .await
        .expect("their key");
    let their_key = IssuerKey::from_spki(&their_pk.to_spki().expect("spki")).expect("our view");
    let (request, pending) = their_key
        .blind(&digest(), nonce(10), &mut DefaultRng)
        .expect("blind");
    let request =
        privacypass::public_tokens::TokenRequest::tls_deserialize_exact(request.to_bytes())
            .expect("their parse");
    let response = IssuerServer::new()
        .issue_token_response(&issuer_keys, request)
        .await
        .expect("they sign");
    let response =
        TokenResponse::parse(&response.tls_serialize_detached().expect("ser")).expect("parse");
    let token = their_key
        .finalize(&digest(), &pending, &response)
        .expect("finalize");
    token
        .verify(&digest(), std::slice::from_ref(&their_key))
        .expect("verifies");
}
