//! tlog.md §3.5: after a key rotation the log signs new checkpoints with
//! the previous key too, for a transition, so a verifier that knows only
//! the old key (a plain witness, a client not yet updated) keeps
//! accepting them; once the transition ends, only the new key signs.

use std::sync::Arc;
use std::time::Duration;

use tlog_core::note::{KeyType, Note, SignerKey};
use tlog_node::{LogNode, NodeError};
use tlog_store::{LogOptions, LogStore, RedbLogStore};

const ORIGIN: &str = "rotating.example/log";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Appends one entry and waits until a checkpoint of the new size is
/// published; returns its note.
async fn append_one(node: &LogNode<RedbLogStore>, entry: &[u8]) -> Note {
    let appended = node
        .store()
        .append(node.log_id(), vec![entry.to_vec()])
        .await
        .expect("append");
    let size = appended.last().expect("one appended").index + 1;
    let mut published = node.published();
    loop {
        if let Some(p) = published.borrow_and_update().clone() {
            if p.size >= size {
                return Note::parse(&p.note).expect("a note");
            }
        }
        published.changed().await.expect("the checkpointer runs");
    }
}

#[tokio::test]
async fn the_previous_key_signs_during_the_transition_and_not_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Signer keys are not Clone (secrets): each use derives its own.
    let key = |seed: u8| SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[seed; 32]).expect("key");
    let (old, new) = (key(1).verifier(), key(2).verifier());
    let store = Arc::new(RedbLogStore::open(&dir.path().join("log.redb")).expect("store"));
    let node = LogNode::start(
        store,
        key(2),
        LogOptions::default(),
        Duration::from_millis(20),
        tlog_node::submit::Publish::default(),
    )
    .await
    .expect("start");

    node.sign_also_with(key(1), now() + 3_600)
        .expect("a key of this log");
    let during = append_one(&node, b"during").await;
    during
        .verify(std::slice::from_ref(&old))
        .expect("a verifier that knows only the old key accepts it");
    during
        .verify(std::slice::from_ref(&new))
        .expect("one that knows the new key too");
    assert_eq!(during.signatures()[0].id, new.id(), "the new key first");

    // The transition is over: the old key no longer signs.
    node.sign_also_with(key(1), now() - 1)
        .expect("a key of this log");
    let after = append_one(&node, b"after").await;
    after
        .verify(std::slice::from_ref(&new))
        .expect("the new key signs");
    assert!(
        after.verify(std::slice::from_ref(&old)).is_err(),
        "no old-key signature after the transition: {}",
        String::from_utf8_lossy(&after.to_bytes())
    );
    assert_eq!(after.signatures().len(), 1);
}

#[tokio::test]
async fn only_a_log_key_of_this_origin_can_be_the_previous_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[1; 32]).expect("key");
    let store = Arc::new(RedbLogStore::open(&dir.path().join("log.redb")).expect("store"));
    let node = LogNode::start(
        store.clone(),
        key,
        LogOptions::default(),
        Duration::from_millis(20),
        tlog_node::submit::Publish::default(),
    )
    .await
    .expect("start");
    let other = SignerKey::from_seed("other.example/log", KeyType::Ed25519, &[3; 32])
        .expect("other origin");
    assert!(matches!(
        node.sign_also_with(other, now() + 60),
        Err(NodeError::KeyName { .. })
    ));
    let cosigner = SignerKey::from_seed(ORIGIN, KeyType::Cosignature, &[4; 32]).expect("cosigner");
    assert!(matches!(
        node.sign_also_with(cosigner, now() + 60),
        Err(NodeError::NotALogKey(_))
    ));
    let mirror_dir = tempfile::tempdir().expect("tempdir");
    let mirror_store =
        Arc::new(RedbLogStore::open(&mirror_dir.path().join("m.redb")).expect("store"));
    let mirror = LogNode::mirror(mirror_store, ORIGIN).await.expect("mirror");
    let old = SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[5; 32]).expect("old");
    assert!(matches!(
        mirror.sign_also_with(old, now() + 60),
        Err(NodeError::Mirror)
    ));
}
