//! Evidence files (keyserver.md §6.6): self-contained proof that the
//! keyserver misbehaved, checkable offline by anyone holding the pin.
//!
//! The key schedule inside the file starts at the pinned genesis: entry 0
//! must have the pinned H_0, link to H_{−1}, belong to the pinned identity
//! and carry a reply signed by the key its own UID publishes. That key (and
//! any later schedule UID, each continuing the last) is what the accused
//! replies must be signed by. As the spec says, a schedule shows that a key
//! was published, not that no rotation happened in between.
//!
//! `takeover` is proven by two server-signed replies for one identity, the
//! later one breaking the rules against the earlier in a way no honest
//! history allows whatever lies between them: its MSGCOUNT is the next one
//! but neither the earlier SIGKEY nor its escrow key signed it (or it swaps
//! the escrow key under USERSIGNATURE), or its MSGCOUNT is not larger at
//! all, or its TIMESTAMP is smaller. Both replies must be within two years
//! of each other (a reclaim needs the quarantine to pass first), so a
//! legitimately reclaimed name is never "proven" taken over.

use ed25519_dalek::VerifyingKey;

use crate::entry::GENESIS_PREV;
use crate::lcj::Lcj;
use crate::lcj_record;
use crate::rules::{self, IdentityState, ROLLOVER};
use crate::uid::UidMessageReply;

/// The `TYPE` of a takeover file.
pub const TAKEOVER: &str = "takeover";
/// The `TYPE` of a file showing a signed reply for a position that the
/// server's own signed checkpoint fills with another entry.
pub const REPLY_NOT_IN_LOG: &str = "reply-not-in-log";
/// The `TYPE` of a file with two conflicting checkpoints (an LKEV blob).
pub const FORK: &str = "fork";
/// The `TYPE` of a file showing a signed LookupUID answer that leaves out
/// an entry of the identity below its TREESIZE.
pub const OMITTED_LOOKUP: &str = "omitted-lookup";
/// The `TYPE` of a file showing a one-time KeyInit served again after the
/// server signed that serving it deleted it.
pub const KEYINIT_REUSE: &str = "keyinit-reuse";
/// The `TYPE` of a file showing a KeyInit served under the server's
/// receipt that fails the owner's checks (§6.5) at the receipt's time.
pub const BAD_KEYINIT: &str = "bad-keyinit";
/// The `TYPE` of a file showing a signed reply whose UID does not match the
/// identity's chain entry it names.
pub const BAD_UID: &str = "bad-uid";
/// The `TYPE` of a file showing signed Capabilities whose KEYHASHCHAINENTRY
/// is not the entry the server's own checkpoint has at KEYHASHCHAINPOS.
pub const BAD_CAPABILITIES: &str = "bad-capabilities";

lcj_record! {
    /// An evidence file.
    pub struct Evidence {
        /// `takeover` (other types: keyserver.md §6.6).
        kind: String = "TYPE",
        /// The log origin.
        origin: String = "ORIGIN",
        /// `keyserver@<domain>:<hex H_0>`.
        pin: String = "PIN",
        /// The keyserver's UID replies from genesis to the signing key.
        key_schedule: Vec<UidMessageReply> = "KEYSCHEDULE",
        /// The identity concerned (publishing it is the victim's choice).
        identity: String = "IDENTITY",
        /// The accused replies, in chain order.
        replies: Vec<UidMessageReply> = "REPLIES",
        /// `reply-not-in-log`: b64 of a signed checkpoint note beyond the
        /// reply's position ("" otherwise).
        checkpoint: String = "CHECKPOINT",
        /// `reply-not-in-log`: the entry (b64(153)) the checkpoint has at
        /// that position ("" otherwise).
        entry: String = "ENTRY",
        /// `reply-not-in-log`: its inclusion proof ([] otherwise).
        proof: Vec<String> = "PROOF",
        /// `fork`: the tlog.md §7.8 LKEV blob, unchanged (b64; "" otherwise);
        /// `tlog-cli verify-evidence` checks it too, given the key.
        lkev: String = "LKEV",
        /// `omitted-lookup`: the server's LookupReply ([] otherwise).
        lookup: Vec<crate::keyinit::LookupReply> = "LOOKUP",
        /// `omitted-lookup`: its signature ("" otherwise).
        lookup_signature: String = "LOOKUPSIGNATURE",
        /// `omitted-lookup`: the position of ENTRY, left out of the answer.
        position: u64 = "POSITION",
        /// `keyinit-reuse`: the signed DispersalReceipts, in serving order;
        /// `bad-keyinit`: the one receipt ([] otherwise).
        dispersals: Vec<crate::keyinit::SignedDispersal> = "DISPERSALS",
        /// `bad-keyinit`: the KeyInit served ([] otherwise).
        key_inits: Vec<crate::keyinit::KeyInit> = "KEYINITS",
        /// `bad-capabilities`: the signed Capabilities ([] otherwise).
        capabilities: Vec<crate::capabilities::SignedCapabilities> = "CAPABILITIES",
    }
}

/// Why an evidence file proves nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// Not an evidence file of a known type.
    #[error("not a known evidence file: {0}")]
    Format(String),
    /// The key schedule does not start at the pin or does not verify.
    #[error("the key schedule does not verify from the pin: {0}")]
    Schedule(String),
    /// A reply is not signed by the scheduled key of its position.
    #[error("reply {0} is not signed by the scheduled key")]
    Unsigned(usize),
    /// The replies are consistent with an honest history.
    #[error("no misbehaviour shown: {0}")]
    NotProven(String),
}

/// The pin's identity and H_0.
fn parse_pin(pin: &str) -> Option<(String, [u8; 32])> {
    let (identity, h) = pin.rsplit_once(':')?;
    if h.len() != 64 {
        return None;
    }
    let mut h0 = [0u8; 32];
    for (i, b) in h0.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some((identity.to_string(), h0))
}

/// The schedule: (position, key) from the pinned genesis on.
pub fn verify_schedule(
    pin: &str,
    schedule: &[UidMessageReply],
) -> Result<Vec<(u64, VerifyingKey)>, EvidenceError> {
    let bad = |why: &str| EvidenceError::Schedule(why.to_string());
    let (identity, h0) = parse_pin(pin).ok_or_else(|| bad("the pin does not parse"))?;
    let genesis = schedule.first().ok_or_else(|| bad("empty"))?;
    if genesis.entry.hashchain_pos != 0 {
        return Err(bad("the first UID is not entry 0"));
    }
    let entry = genesis.chain_entry().map_err(|e| bad(&e.to_string()))?;
    if entry.hash() != &h0 || entry.check_link(&GENESIS_PREV).is_err() {
        return Err(bad("entry 0 is not the pinned genesis"));
    }
    let mut keys: Vec<(u64, VerifyingKey)> = Vec::new();
    let mut prev: Option<IdentityState> = None;
    let mut last_pos = None;
    for (i, reply) in schedule.iter().enumerate() {
        let pos = reply.entry.hashchain_pos;
        if last_pos.is_some_and(|p| pos <= p) {
            return Err(bad("the schedule is not in chain order"));
        }
        let (entry, msg) = reply
            .open_for(&identity)
            .map_err(|e| bad(&format!("UID {i}: {e}")))?;
        let profiled = msg
            .check_profile()
            .map_err(|e| bad(&format!("UID {i}: {e}")))?;
        if !msg.signed_by(&profiled.sig_key, &msg.self_signature) {
            return Err(bad("a schedule UID is not self-signed"));
        }
        match &prev {
            None => rules::check_creation_signatures(&msg, &profiled),
            Some(p) => rules::check_update(Some(p), &msg, reply.entry.timestamp),
        }
        .map_err(|e| bad(&format!("UID {i} does not continue the schedule: {e}")))?;
        // Each key signs from its own position on (keyserver.md §3.8).
        if !reply.signed_by(&profiled.sig_key) {
            return Err(bad("a schedule reply is not signed by its own key"));
        }
        keys.push((pos, profiled.sig_key));
        prev = Some(IdentityState::of(&msg, pos, *entry.uid_index()));
        last_pos = Some(pos);
    }
    Ok(keys)
}

/// Checks an evidence file offline; `Ok` names what it proves.
pub fn verify(e: &Evidence) -> Result<String, EvidenceError> {
    if e.kind == REPLY_NOT_IN_LOG {
        return verify_reply_not_in_log(e);
    }
    if e.kind == FORK {
        return verify_fork(e);
    }
    if e.kind == OMITTED_LOOKUP {
        return verify_omitted_lookup(e);
    }
    if e.kind == KEYINIT_REUSE {
        return verify_keyinit_reuse(e);
    }
    if e.kind == BAD_KEYINIT {
        return verify_bad_keyinit(e);
    }
    if e.kind == BAD_CAPABILITIES {
        return verify_bad_capabilities(e);
    }
    if e.kind == BAD_UID {
        return verify_bad_uid(e);
    }
    if e.kind != TAKEOVER {
        return Err(EvidenceError::Format(format!(
            "type {:?} is not checked by this version",
            e.kind
        )));
    }
    let keys = verify_schedule(&e.pin, &e.key_schedule)?;
    let signer = |pos: u64| keys.iter().rev().find(|(p, _)| *p <= pos).map(|(_, k)| *k);
    let [earlier, later] = e.replies.as_slice() else {
        return Err(EvidenceError::Format("a takeover names two replies".into()));
    };
    for (i, r) in [earlier, later].into_iter().enumerate() {
        let key = signer(r.entry.hashchain_pos).ok_or(EvidenceError::Unsigned(i))?;
        if !r.signed_by(&key) {
            return Err(EvidenceError::Unsigned(i));
        }
        if r.entry.origin != e.origin {
            return Err(EvidenceError::Format(format!(
                "reply {i} is of another origin"
            )));
        }
    }
    let not = |why: &str| EvidenceError::NotProven(why.to_string());
    let (e1, m1) = earlier
        .open_for(&e.identity)
        .map_err(|x| not(&format!("the earlier reply: {x}")))?;
    let (_, m2) = later
        .open_for(&e.identity)
        .map_err(|x| not(&format!("the later reply: {x}")))?;
    let (p1, p2) = (earlier.entry.hashchain_pos, later.entry.hashchain_pos);
    if p1 >= p2 {
        return Err(not("the replies are not in chain order"));
    }
    let (t1, t2) = (earlier.entry.timestamp, later.entry.timestamp);
    if t2 < t1 {
        return Ok(format!(
            "the server signed a later position ({p2}) with an earlier TIMESTAMP"
        ));
    }
    if t2 >= t1.saturating_add(2 * ROLLOVER) {
        return Err(not("two years apart: a reclaim may lie between them"));
    }
    let (c1, c2) = (m1.content.msg_count, m2.content.msg_count);
    if c2 <= c1 {
        return Ok(format!(
            "{} got MSGCOUNT {c2} at position {p2} after MSGCOUNT {c1} at {p1}, within two years",
            e.identity
        ));
    }
    if c2 == c1 + 1 {
        let prev = IdentityState::of(&m1, p1, *e1.uid_index());
        return match rules::check_update(Some(&prev), &m2, t2) {
            Err(why) => Ok(format!(
                "the server accepted an update of {} at position {p2} that its owner did not authorise: {why}",
                e.identity
            )),
            Ok(()) => Err(not("the later UID is a valid update of the earlier")),
        };
    }
    Err(not("a MSGCOUNT gap alone is not provable from two replies"))
}

/// `reply-not-in-log`: the reply for position p is signed by the key of p;
/// the checkpoint (size N > p) by the key of N − 1; the entry at p is in
/// that checkpoint's tree by its proof; and it is not the reply's entry.
fn verify_reply_not_in_log(e: &Evidence) -> Result<String, EvidenceError> {
    let keys = verify_schedule(&e.pin, &e.key_schedule)?;
    let signer = |pos: u64| keys.iter().rev().find(|(p, _)| *p <= pos).map(|(_, k)| *k);
    let format = |why: &str| EvidenceError::Format(why.to_string());
    let [reply] = e.replies.as_slice() else {
        return Err(format("reply-not-in-log names one reply"));
    };
    let p = reply.entry.hashchain_pos;
    let key = signer(p).ok_or(EvidenceError::Unsigned(0))?;
    if !reply.signed_by(&key) || reply.entry.origin != e.origin {
        return Err(EvidenceError::Unsigned(0));
    }
    let (entry, size) = entry_in_checkpoint(e, p, &signer)?;
    if crate::b64::encode(&entry.0) == reply.entry.hashchain_entry {
        return Err(EvidenceError::NotProven(
            "the reply's entry is the one in the log".into(),
        ));
    }
    Ok(format!(
        "the server promised position {p} to a UID and then signed a tree of size {size} with another entry there"
    ))
}

/// ENTRY is at position `p` of the tree CHECKPOINT signs (by the key the
/// schedule gives its size), by PROOF; the entry and the tree size.
fn entry_in_checkpoint(
    e: &Evidence,
    p: u64,
    signer: &dyn Fn(u64) -> Option<VerifyingKey>,
) -> Result<(crate::entry::Entry, u64), EvidenceError> {
    use tlog_core::note::{KeyType, Note, VerifierKey};
    let format = |why: &str| EvidenceError::Format(why.to_string());
    let note_bytes =
        crate::b64::decode(&e.checkpoint).ok_or_else(|| format("CHECKPOINT is not base64"))?;
    let note = Note::parse(&note_bytes).map_err(|x| format(&format!("CHECKPOINT: {x}")))?;
    let cp = tlog_core::Checkpoint::parse(note.text())
        .map_err(|x| format(&format!("CHECKPOINT: {x}")))?;
    if cp.origin != e.origin || cp.size <= p {
        return Err(format(
            "the checkpoint is of another log or does not cover the position",
        ));
    }
    let log_key = signer(cp.size - 1).ok_or(EvidenceError::Unsigned(1))?;
    let verifier = VerifierKey::new(&cp.origin, KeyType::Ed25519, log_key)
        .map_err(|x| format(&x.to_string()))?;
    note.verify(&[verifier])
        .map_err(|_| EvidenceError::Unsigned(1))?;
    let raw = crate::b64::decode(&e.entry).ok_or_else(|| format("ENTRY is not base64"))?;
    let entry = crate::entry::Entry::from_bytes(&raw).map_err(|x| format(&x.to_string()))?;
    let proof: Vec<[u8; 32]> = e
        .proof
        .iter()
        .map(|h| crate::b64::exact::<32>(h).ok_or_else(|| format("PROOF holds a non-hash")))
        .collect::<Result<_, _>>()?;
    tlog_core::merkle::verify_inclusion(p, cp.size, &entry.leaf_hash(), &proof, &cp.root).map_err(
        |x| EvidenceError::NotProven(format!("the entry is not at {p} in the checkpoint: {x}")),
    )?;
    Ok((entry, cp.size))
}

/// `keyinit-reuse`: two DispersalReceipts of this origin for one
/// KEYINITHASH, each signed by a key of the schedule; the first says ONETIME
/// (the server deleted the KeyInit when serving it), the second is no
/// earlier. An honest server never serves a KEYINITHASH again after that:
/// the deleted KeyInit is gone, and a re-upload of it is answered from the
/// seen table without storing it.
fn verify_keyinit_reuse(e: &Evidence) -> Result<String, EvidenceError> {
    let keys = verify_schedule(&e.pin, &e.key_schedule)?;
    let format = |why: &str| EvidenceError::Format(why.to_string());
    let [first, again] = e.dispersals.as_slice() else {
        return Err(format("keyinit-reuse names two receipts"));
    };
    for (i, d) in [first, again].into_iter().enumerate() {
        let signed = keys.iter().any(|(_, k)| {
            crate::sig::verify(
                k,
                crate::sig::Ctx::KeyinitDispersal,
                &d.receipt,
                &d.signature,
            )
        });
        if !signed {
            return Err(EvidenceError::Unsigned(i));
        }
        if d.receipt.origin != e.origin {
            return Err(format("a receipt of another origin"));
        }
    }
    let not = |why: &str| EvidenceError::NotProven(why.to_string());
    let (a, b) = (&first.receipt, &again.receipt);
    if a.key_init_hash != b.key_init_hash || a.sig_key_hash != b.sig_key_hash {
        return Err(not("the receipts are for different KeyInits"));
    }
    if !a.one_time {
        return Err(not(
            "the first receipt does not say the KeyInit was deleted",
        ));
    }
    if b.timestamp < a.timestamp {
        return Err(not("the second receipt is the earlier one"));
    }
    Ok(format!(
        "the server signed at {} that serving one-time KeyInit {} deleted it, and served it again at {}",
        a.timestamp, a.key_init_hash, b.timestamp
    ))
}

/// `bad-keyinit`: a DispersalReceipt signed by a schedule key binds a
/// KeyInit (KEYINITHASH) to an owner (SIGKEYHASH); the owner's UID reply,
/// signed by the key of its position, gives the SIGKEY with that hash and
/// the owner's repositories; and the KeyInit fails §6.5 against them at the
/// receipt's TIMESTAMP (a signature not the owner's, another key's KeyInit,
/// outside its window, a bad anchor). The server checks all of that when a
/// KeyInit is published, so serving one that fails is its doing.
fn verify_bad_keyinit(e: &Evidence) -> Result<String, EvidenceError> {
    let keys = verify_schedule(&e.pin, &e.key_schedule)?;
    let signer = |pos: u64| keys.iter().rev().find(|(p, _)| *p <= pos).map(|(_, k)| *k);
    let format = |why: &str| EvidenceError::Format(why.to_string());
    let not = |why: &str| EvidenceError::NotProven(why.to_string());
    let ([served], [ki], [owner]) = (
        e.dispersals.as_slice(),
        e.key_inits.as_slice(),
        e.replies.as_slice(),
    ) else {
        return Err(format(
            "bad-keyinit names one receipt, one KeyInit and one UID reply",
        ));
    };
    let r = &served.receipt;
    let signed = keys.iter().any(|(_, k)| {
        crate::sig::verify(k, crate::sig::Ctx::KeyinitDispersal, r, &served.signature)
    });
    if !signed || r.origin != e.origin {
        return Err(EvidenceError::Unsigned(0));
    }
    if r.key_init_hash != ki.hash() {
        return Err(not("the receipt is for another KeyInit"));
    }
    let key = signer(owner.entry.hashchain_pos).ok_or(EvidenceError::Unsigned(1))?;
    if !owner.signed_by(&key) || owner.entry.origin != e.origin {
        return Err(EvidenceError::Unsigned(1));
    }
    let (_, msg) = owner
        .open_for(&e.identity)
        .map_err(|x| not(&format!("the UID reply: {x}")))?;
    let sig_key = msg
        .content
        .sig_key
        .verifying_key()
        .ok_or_else(|| not("the UID has no SIGKEY"))?;
    if crate::keyinit::sig_key_hash(sig_key.as_bytes()) != r.sig_key_hash {
        return Err(not("the UID's SIGKEY is not the receipt's owner"));
    }
    match crate::keyinit::check_keyinit(
        ki,
        &sig_key,
        &msg.content.repo_uris,
        crate::keyinit::Window::Fetch,
        r.timestamp,
    ) {
        Err(why) => Ok(format!(
            "the server served, as {}'s, a KeyInit that fails the owner's checks at its own time: {why}",
            e.identity
        )),
        Ok(_) => Err(not("the KeyInit passes every check")),
    }
}

/// `bad-uid`: a reply signed by the key of its position names an entry of
/// IDENTITY (its HashID and IDKEY unlock it), and its UID is not that
/// entry's: the blob's prefix is not the entry's UIDIndex, its plaintext
/// does not hash to U or is not canonical, or the UID inside is another
/// identity's or not self-signed. The server builds the entry from the UID
/// it accepted, so none of that happens honestly. A file without IDENTITY
/// (a mirror's, which cannot know it) proves only a blob whose prefix is
/// not its entry's UIDIndex.
fn verify_bad_uid(e: &Evidence) -> Result<String, EvidenceError> {
    let keys = verify_schedule(&e.pin, &e.key_schedule)?;
    let signer = |pos: u64| keys.iter().rev().find(|(p, _)| *p <= pos).map(|(_, k)| *k);
    let not = |why: &str| EvidenceError::NotProven(why.to_string());
    let [reply] = e.replies.as_slice() else {
        return Err(EvidenceError::Format("bad-uid names one reply".into()));
    };
    let p = reply.entry.hashchain_pos;
    let key = signer(p).ok_or(EvidenceError::Unsigned(0))?;
    if !reply.signed_by(&key) || reply.entry.origin != e.origin {
        return Err(EvidenceError::Unsigned(0));
    }
    let entry = reply
        .chain_entry()
        .map_err(|x| not(&format!("the reply's entry: {x}")))?;
    // Without IDENTITY (a mirror's file, keyserver.md §8) only what anyone
    // can check is proven: the blob starts with another UIDIndex than its
    // entry's. With it, the file is about that identity's entry.
    if e.identity.is_empty() {
        let index = crate::b64::decode(&reply.entry.uid_message_encrypted);
        if index
            .filter(|b| b.len() >= 32)
            .map(|b| b[..32] == entry.uid_index()[..])
            == Some(true)
        {
            return Err(not(
                "without IDENTITY, only a wrong UIDIndex prefix is proven",
            ));
        }
        return Ok(format!(
            "the server signed a reply for the entry at {p} whose UID is not that entry's: its blob does not start with the entry's UIDIndex"
        ));
    }
    entry
        .unlock(&e.identity)
        .map_err(|_| not("the entry is not the identity's"))?;
    let why = match reply.open_for(&e.identity) {
        Err(x) => x.to_string(),
        Ok((_, msg)) if msg.content.identity != e.identity => {
            format!("it holds a UID of {}", msg.content.identity)
        }
        Ok((_, msg)) => match msg.check_profile() {
            Err(x) => format!("its UID breaks the v1 profile: {x}"),
            Ok(profiled) if !msg.signed_by(&profiled.sig_key, &msg.self_signature) => {
                "its UID is not self-signed".into()
            }
            Ok(_) => return Err(not("the reply binds a valid UID to its entry")),
        },
    };
    Ok(format!(
        "the server signed a reply for {}'s entry at {p} whose UID is not that entry's: {why}",
        e.identity
    ))
}

/// `bad-capabilities`: Capabilities signed by the key the schedule gives
/// SIGNINGPOS name KEYHASHCHAINENTRY as the entry at KEYHASHCHAINPOS; the
/// server's checkpoint and PROOF put another ENTRY there.
fn verify_bad_capabilities(e: &Evidence) -> Result<String, EvidenceError> {
    let keys = verify_schedule(&e.pin, &e.key_schedule)?;
    let signer = |pos: u64| keys.iter().rev().find(|(p, _)| *p <= pos).map(|(_, k)| *k);
    let [signed] = e.capabilities.as_slice() else {
        return Err(EvidenceError::Format(
            "bad-capabilities names one Capabilities object".into(),
        ));
    };
    let c = &signed.capabilities;
    let key = signer(c.signing_pos).ok_or(EvidenceError::Unsigned(0))?;
    if !crate::sig::verify(&key, crate::sig::Ctx::Capabilities, c, &signed.signature)
        || c.origin != e.origin
    {
        return Err(EvidenceError::Unsigned(0));
    }
    let p = c.key_hash_chain_pos;
    if e.position != p {
        return Err(EvidenceError::Format(
            "POSITION is not KEYHASHCHAINPOS".into(),
        ));
    }
    let (entry, size) = entry_in_checkpoint(e, p, &signer)?;
    if crate::b64::encode(&entry.0) == c.key_hash_chain_entry {
        return Err(EvidenceError::NotProven(
            "KEYHASHCHAINENTRY is the entry in the log".into(),
        ));
    }
    Ok(format!(
        "the server's signed Capabilities name another entry at {p} than its tree of size {size} holds"
    ))
}

/// `omitted-lookup`: a LookupReply signed by the key of TREESIZE − 1 lists
/// the identity's positions below TREESIZE; ENTRY, at POSITION below
/// TREESIZE by a signed checkpoint and its proof, is the identity's (its
/// HashID matches) and is not listed.
fn verify_omitted_lookup(e: &Evidence) -> Result<String, EvidenceError> {
    let keys = verify_schedule(&e.pin, &e.key_schedule)?;
    let signer = |pos: u64| keys.iter().rev().find(|(p, _)| *p <= pos).map(|(_, k)| *k);
    let format = |why: &str| EvidenceError::Format(why.to_string());
    let [lookup] = e.lookup.as_slice() else {
        return Err(format("omitted-lookup names one LookupReply"));
    };
    if lookup.origin != e.origin || lookup.identity != e.identity || lookup.tree_size == 0 {
        return Err(format("the LookupReply is of another log or identity"));
    }
    let key = signer(lookup.tree_size - 1).ok_or(EvidenceError::Unsigned(0))?;
    if !crate::sig::verify(
        &key,
        crate::sig::Ctx::LookupReply,
        lookup,
        &e.lookup_signature,
    ) {
        return Err(EvidenceError::Unsigned(0));
    }
    let p = e.position;
    let not = |why: &str| EvidenceError::NotProven(why.to_string());
    if p >= lookup.tree_size {
        return Err(not("the entry is beyond the answer's TREESIZE"));
    }
    if lookup.hc_positions.contains(&p) {
        return Err(not("the answer lists the position"));
    }
    let (entry, _) = entry_in_checkpoint(e, p, &signer)?;
    let name = crate::entry::Name::new(&e.identity);
    if !crate::entry::Midstate::of(entry.nonce()).matches(&entry, &name) {
        return Err(not("the entry is not the identity's"));
    }
    Ok(format!(
        "the server's signed LookupUID answer for {} below size {} leaves out its entry at {p}",
        e.identity, lookup.tree_size
    ))
}

/// `fork`: two checkpoints of this origin, signed by one scheduled key,
/// whose trees conflict (tlog.md §7.8).
fn verify_fork(e: &Evidence) -> Result<String, EvidenceError> {
    use tlog_core::note::{KeyType, VerifierKey};
    let keys = verify_schedule(&e.pin, &e.key_schedule)?;
    let trusted: Vec<VerifierKey> = keys
        .iter()
        .filter_map(|(_, k)| VerifierKey::new(&e.origin, KeyType::Ed25519, *k).ok())
        .collect();
    let blob = crate::b64::decode(&e.lkev)
        .ok_or_else(|| EvidenceError::Format("LKEV is not base64".into()))?;
    let lkev = tlog_core::Evidence::verify(&blob, &trusted)
        .map_err(|x| EvidenceError::NotProven(x.to_string()))?;
    let size = |n: &tlog_core::note::Note| {
        tlog_core::Checkpoint::parse(n.text())
            .map(|c| c.size)
            .unwrap_or(0)
    };
    Ok(format!(
        "the server signed conflicting trees of {} (sizes {} and {})",
        e.origin,
        size(&lkev.note_a),
        size(&lkev.note_b)
    ))
}

impl Evidence {
    /// The file's bytes (LCJ).
    pub fn to_file(&self) -> Vec<u8> {
        self.to_lcj()
    }
}
