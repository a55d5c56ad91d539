//! Signatures over LCJ with a context (keyserver.md §3.1):
//! `sig_input(ctx, obj) = "lightkeeper-keyserver-v1:" ‖ ctx ‖ 0x0A ‖ LCJ(obj)`.
//! The context keeps a signature made for one purpose from being replayed
//! as another; Ed25519 is verified with `verify_strict` (tlog.md §3.4).

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::b64;
use crate::lcj::Lcj;

/// The purposes a keyserver signature can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ctx {
    /// A user's UIDCONTENT (SELF, USER and ESCROW signatures).
    UidContent,
    /// A KeyInit's CONTENTS.
    KeyinitContents,
    /// The server's ENTRY of a UIDMessageReply.
    UidReply,
    /// The server's receipt for an accepted KeyInit.
    KeyinitReceipt,
    /// The server's receipt for a served KeyInit.
    KeyinitDispersal,
    /// The server's Capabilities.
    Capabilities,
    /// A user's FlushRequest.
    FlushRequest,
    /// The server's FlushReceipt.
    FlushReceipt,
    /// The server's LookupReply.
    LookupReply,
}

impl Ctx {
    /// The context string.
    pub fn as_str(self) -> &'static str {
        match self {
            Ctx::UidContent => "uid-content",
            Ctx::KeyinitContents => "keyinit-contents",
            Ctx::UidReply => "uid-reply",
            Ctx::KeyinitReceipt => "keyinit-receipt",
            Ctx::KeyinitDispersal => "keyinit-dispersal",
            Ctx::Capabilities => "capabilities",
            Ctx::FlushRequest => "flush-request",
            Ctx::FlushReceipt => "flush-receipt",
            Ctx::LookupReply => "lookup-reply",
        }
    }
}

/// The signed bytes.
pub fn sig_input<T: Lcj>(ctx: Ctx, obj: &T) -> Vec<u8> {
    let mut m = b"lightkeeper-keyserver-v1:".to_vec();
    m.extend_from_slice(ctx.as_str().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(&obj.to_lcj());
    m
}

/// Signs `obj` for `ctx`; the b64 signature.
pub fn sign<T: Lcj>(key: &SigningKey, ctx: Ctx, obj: &T) -> String {
    b64::encode(&key.sign(&sig_input(ctx, obj)).to_bytes())
}

/// Whether `signature` (b64(64)) is `key`'s over `obj` for `ctx`.
pub fn verify<T: Lcj>(key: &VerifyingKey, ctx: Ctx, obj: &T, signature: &str) -> bool {
    let Some(sig) = b64::exact::<64>(signature) else {
        return false;
    };
    key.verify_strict(
        &sig_input(ctx, obj),
        &ed25519_dalek::Signature::from_bytes(&sig),
    )
    .is_ok()
}
