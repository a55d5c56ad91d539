//! Payment-token decoders (keyserver.md §5) on arbitrary bytes: Token,
//! TokenRequest, TokenResponse, the wallet's pending record and issuer
//! SPKIs, and redemption of whatever parses as a token under a real key.
//! No panic; whatever decodes re-encodes to the same bytes; nothing the
//! fuzzer makes verifies.
#![no_main]

use std::sync::OnceLock;

use ks_core::token::{
    challenge_digest, IssuerKey, IssuerSecret, OsRng, Pending, Token, TokenRequest, TokenResponse,
};
use libfuzzer_sys::fuzz_target;

fn issuer() -> &'static IssuerSecret {
    static KEY: OnceLock<IssuerSecret> = OnceLock::new();
    KEY.get_or_init(|| IssuerSecret::generate(&mut OsRng).expect("keygen"))
}

fuzz_target!(|data: &[u8]| {
    let secret = issuer();
    let digest = challenge_digest("example.org", "example.org/kt/v1");
    if let Ok(t) = Token::parse(data) {
        assert_eq!(t.to_bytes(), data);
        // A token made up by the fuzzer never redeems.
        assert!(t
            .verify(&digest, std::slice::from_ref(secret.public()))
            .is_err());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Token::from_b64(s);
    }
    if let Ok(r) = TokenRequest::parse(data) {
        assert_eq!(r.to_bytes(), data);
        // The issuer signs or refuses; it does not panic.
        let _ = secret.sign(&r);
    }
    if let Ok(r) = TokenResponse::parse(data) {
        assert_eq!(r.to_bytes(), data);
    }
    if let Ok(p) = Pending::parse(data) {
        assert_eq!(p.to_bytes(), data);
        if let Ok(r) = TokenResponse::parse(&data[..256]) {
            let _ = secret.public().finalize(&digest, &p, &r);
        }
    }
    if let Ok(k) = IssuerKey::from_spki(data) {
        assert_eq!(k.spki(), data);
    }
});
