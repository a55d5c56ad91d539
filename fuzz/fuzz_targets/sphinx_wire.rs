//! Every remote-signer decoder (hsmd frames, serial headers, LSS relay
//! messages, topics, login tokens, control envelopes, the SignMessage
//! filter) on arbitrary bytes: no panic, and what decodes re-encodes to
//! something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sphinx_wire::{control, hsmd, login, lss, serial, signed, topics};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((frame, used))) = hsmd::decode(data) {
        assert!(used <= data.len());
        let again = frame.encode().expect("a decoded frame encodes");
        assert_eq!(hsmd::decode(&again), Ok(Some((frame, again.len()))));
    }
    if let Ok(request) = serial::Request::decode(data) {
        let bytes = request.encode().expect("encodes");
        assert_eq!(serial::Request::decode(&bytes), Ok(request));
    }
    if let Ok(response) = serial::Response::decode(data) {
        let bytes = response.encode().expect("encodes");
        assert_eq!(serial::Response::decode(&bytes), Ok(response));
    }
    if let Ok(msg) = lss::Msg::decode(data) {
        assert_eq!(lss::Msg::decode(&msg.encode()), Ok(msg));
    }
    if let Ok(response) = lss::Response::decode(data) {
        assert_eq!(lss::Response::decode(&response.encode()), Ok(response));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((cid, suffix)) = topics::parse(text) {
            assert_eq!(topics::topic(cid, suffix), text);
        }
        let _ = login::recover(text, "0123456789abcdef0123456789abcdef");
        let rules = login::Rules {
            window_secs: 60,
            compat: true,
        };
        let _ = login::check(text, text, text, 1_700_000_000_000, rules);
    }
    if let Ok((token, limit)) = login::parse_hello(data) {
        assert_eq!(
            login::parse_hello(&login::hello_payload(token, limit)),
            Ok((token, limit))
        );
    }
    // A control envelope never panics to open. And the SignMessage filter
    // is exact: bytes it lets the signer sign never open as a control
    // message, even in sphinx-key's signature form.
    let secret = secp256k1::SecretKey::from_slice(&[7; 32]).expect("key");
    let public = secret.public_key(&secp256k1::Secp256k1::signing_only());
    let _ = control::open(data, &public, true);
    if !signed::is_reserved_message(data) {
        let signature = signed::sign(signed::Domain::LightningMessage, data, &secret);
        let envelope = [data, &signature[..]].concat();
        assert!(control::open(&envelope, &public, true).is_err());
    }
});
