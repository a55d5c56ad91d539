//! The broker core and the signer core against each other, in memory, with a
//! virtual clock: no sockets, no sleeps, no threads. Messages travel through
//! a queue the test can drop, duplicate or reorder; LSS is an in-memory
//! store that applies `lss-core`'s rules (tokens, MACs, the version rule),
//! so every MAC the signer checks is a real one. The real signer core (VLS
//! over redb in a temporary directory) answers.
//!
//! The harness checks one invariant after every timeout it delivers: a
//! deadline that fired was cleared (`poll_timeout` moved past `now`), so the
//! driver can never spin.

mod driver;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lss_core::{KeyValue, MacScheme, ServerKey, PUT_CLIENT_NONCE, PUT_SERVER_NONCE};
use sphinx_broker::core::{Action, BrokerCore, Input, LssCall, LssResult, OpId, RequestError};
use sphinx_broker::link::LinkEvent;
use sphinx_broker::lss::RelayError;
use sphinx_signer::core::{Core, Mode, Out};
use sphinx_signer::Network;
use sphinx_wire::lss::{ProviderState, Receipt, Receipts};
use sphinx_wire::topics::Suffix;
use vls_protocol::model::PubKey;
use vls_protocol::msgs::{self, Message, SerBolt};
use vls_protocol_signer::lightning_signer::util::clock::ManualClock;

const TIMEOUT: Duration = Duration::from_secs(30);
const CID: &str = "00112233445566778899aabbccddeeff";

/// One client's keys: version and value.
type Namespace = BTreeMap<String, (i64, Vec<u8>)>;

/// LSS in memory, with the server's rules.
struct Lss {
    key: ServerKey,
    data: BTreeMap<Vec<u8>, Namespace>,
    /// Puts applied.
    puts: usize,
    /// Puts asked for, applied or not.
    put_calls: usize,
    /// The next put is applied but its answer is lost: the relay retries and
    /// meets its own write as a conflict.
    lose_next_reply: bool,
    /// Calls are never answered (a hung server).
    hung: bool,
    /// Puts are never answered.
    hang_puts: bool,
    /// Whether Info advertises framed MACs.
    offers_framed: bool,
}

fn scheme(account: &sphinx_broker::lss::Account) -> MacScheme {
    if account.framed {
        MacScheme::Framed
    } else {
        MacScheme::Unframed
    }
}

impl Lss {
    fn new() -> Lss {
        Lss {
            key: ServerKey::new(
                lss_core::secp256k1::SecretKey::from_slice(&[0x5e; 32]).expect("key"),
            ),
            data: BTreeMap::new(),
            puts: 0,
            put_calls: 0,
            lose_next_reply: false,
            hung: false,
            hang_puts: false,
            offers_framed: true,
        }
    }

    fn call(&mut self, call: LssCall) -> LssResult {
        match call {
            LssCall::ServerKey => {
                LssResult::ServerKey(Ok(vec![(self.key.server_id(), self.offers_framed)]))
            }
            LssCall::GetAll {
                accounts, nonce, ..
            } => {
                let account = accounts[0];
                let (client, secret) = self
                    .key
                    .authenticate(&account.client_id, &account.token)
                    .expect("the relay presents the signer's token");
                let kvs: Vec<KeyValue> = self
                    .data
                    .get(client.as_bytes().as_slice())
                    .into_iter()
                    .flatten()
                    .map(|(k, (v, value))| KeyValue::new(k.clone(), *v, value.clone()))
                    .collect();
                let mac = scheme(&account).mac(&secret, &nonce, &kvs).0;
                let muts = kvs
                    .into_iter()
                    .map(|kv| (kv.key, (kv.version as u64, kv.value)))
                    .collect();
                LssResult::State(Ok(vec![ProviderState {
                    provider: 0,
                    server_hmac: mac,
                    muts,
                    checkpoint: Vec::new(),
                    bundle: Vec::new(),
                }]))
            }
            LssCall::Put {
                accounts,
                muts,
                puts,
                ..
            } => {
                let (account, client_mac) = (accounts[0], puts[0].client_hmac);
                self.put_calls += 1;
                let (client, secret) = self
                    .key
                    .authenticate(&account.client_id, &account.token)
                    .expect("token");
                let kvs: Vec<KeyValue> = muts
                    .iter()
                    .map(|(k, (v, value))| KeyValue::new(k.clone(), *v as i64, value.clone()))
                    .collect();
                if !scheme(&account)
                    .mac(&secret, PUT_CLIENT_NONCE, &kvs)
                    .verify(&client_mac)
                {
                    // lssd: INVALID_ARGUMENT, which the relay does not retry.
                    let why = "invalid client MAC".to_string();
                    return LssResult::Stored(Err(RelayError::Failed(why)));
                }
                let space = self.data.entry(client.as_bytes().to_vec()).or_default();
                let conflicts = kvs
                    .iter()
                    .filter(|kv| {
                        !lss_core::accepts(kv.version, space.get(&kv.key).map(|(v, _)| *v))
                    })
                    .count();
                if conflicts > 0 {
                    return LssResult::Stored(Err(RelayError::Conflict(conflicts)));
                }
                for kv in &kvs {
                    space.insert(kv.key.clone(), (kv.version, kv.value.clone()));
                }
                self.puts += 1;
                if std::mem::take(&mut self.lose_next_reply) {
                    // The retry of the same put: every key is now at its version.
                    return LssResult::Stored(Err(RelayError::Conflict(kvs.len())));
                }
                LssResult::Stored(Ok(Receipts {
                    receipts: vec![Receipt {
                        provider: 0,
                        server_hmac: scheme(&account).mac(&secret, PUT_SERVER_NONCE, &kvs).0,
                        checkpoint: Vec::new(),
                        bundle: Vec::new(),
                    }],
                    behind: Vec::new(),
                }))
            }
        }
    }
}

/// Something in transit.
#[derive(Debug, Clone)]
enum Msg {
    ToSigner(Suffix, Vec<u8>),
    ToBroker(LinkEvent),
}

struct World {
    now: Instant,
    broker: BrokerCore,
    signer: Core,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
    lss: Lss,
    /// Messages in flight, delivered in order.
    wire: VecDeque<Msg>,
    /// LSS calls not yet answered.
    calls: VecDeque<(OpId, LssCall)>,
    replies: HashMap<u64, Result<Vec<u8>, RequestError>>,
    next_id: u64,
    /// Drops messages to the signer while true.
    signer_deaf: bool,
    /// Called on each message before delivery: `false` drops it.
    filter: Box<dyn FnMut(&Msg) -> bool>,
    /// Called on each message to the broker: `true` delivers it twice.
    duplicate: Box<dyn FnMut(&Msg) -> bool>,
    published: Vec<(Suffix, Vec<u8>)>,
    /// What the signer announces in `hello`.
    max_packet: usize,
    /// Errors the broker reported for the control API.
    errors: Vec<String>,
    /// The broker is hostile: it regroups the next put of two or more
    /// entries into one (the first entry's value followed by the others'
    /// key, version and value), keeping the signer's MAC.
    regroup_next_put: bool,
    /// What it did: the entry it stored, and the keys it swallowed.
    regrouped: Option<(String, Vec<u8>, Vec<String>)>,
}

impl World {
    fn new(network: Network) -> World {
        Self::with(network, false)
    }

    fn with(network: Network, allow_unframed: bool) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_800_000_000)));
        let signer = Core::open(network, [3; 32], dir.path(), Mode::Lss)
            .expect("open")
            .with_clock(clock.clone())
            .allow_unframed_macs(allow_unframed);
        World {
            now: Instant::now(),
            broker: BrokerCore::new(TIMEOUT, true, 64 << 20),
            signer,
            clock,
            _dir: dir,
            lss: Lss::new(),
            wire: VecDeque::new(),
            calls: VecDeque::new(),
            replies: HashMap::new(),
            next_id: 1,
            signer_deaf: false,
            filter: Box::new(|_| true),
            duplicate: Box::new(|_| false),
            published: Vec::new(),
            max_packet: 64 << 20,
            errors: Vec::new(),
            regroup_next_put: false,
            regrouped: None,
        }
    }

    fn input(&mut self, input: Input) {
        self.broker.handle(self.now, input);
        self.collect();
    }

    /// Moves the broker's actions onto the wire.
    fn collect(&mut self) {
        while let Some(action) = self.broker.poll_action() {
            match action {
                Action::Publish {
                    cid,
                    suffix,
                    payload,
                } => {
                    assert_eq!(cid, CID);
                    self.wire.push_back(Msg::ToSigner(suffix, payload));
                }
                Action::Lss { op, call, .. } => self.calls.push_back((op, call)),
                Action::Reply { id, result } => {
                    assert!(self.replies.insert(id, result).is_none(), "answered twice");
                }
                Action::SignerError(e) => self.errors.push(e.message),
            }
        }
    }

    /// Delivers everything in transit (and answers LSS) until quiet.
    fn settle(&mut self) {
        loop {
            if let Some(msg) = self.wire.pop_front() {
                if !(self.filter)(&msg) {
                    continue;
                }
                match msg {
                    Msg::ToSigner(suffix, payload) => {
                        if self.signer_deaf {
                            continue;
                        }
                        let nonce = [self.next_id as u8; 32];
                        self.next_id += 1;
                        for out in self.signer.dispatch(suffix, &payload, nonce) {
                            let event = match out {
                                Out::Publish(suffix, payload) => LinkEvent::Message {
                                    cid: CID.into(),
                                    suffix,
                                    payload: payload.into(),
                                },
                                Out::Resync => LinkEvent::Hello {
                                    cid: CID.into(),
                                    max_packet: self.max_packet,
                                },
                            };
                            if let LinkEvent::Message {
                                suffix, payload, ..
                            } = &event
                            {
                                self.published.push((*suffix, payload.to_vec()));
                            }
                            self.wire.push_back(Msg::ToBroker(event));
                        }
                    }
                    Msg::ToBroker(event) => {
                        let copy = (self.duplicate)(&Msg::ToBroker(event.clone()));
                        self.input(Input::Link(event.clone()));
                        if copy {
                            self.input(Input::Link(event));
                        }
                    }
                }
                continue;
            }
            let answered = |call: &LssCall, lss: &Lss| {
                !(lss.hung || lss.hang_puts && matches!(call, LssCall::Put { .. }))
            };
            if let Some(i) = self.calls.iter().position(|(_, c)| answered(c, &self.lss)) {
                if let Some((op, call)) = self.calls.remove(i) {
                    let call = self.tamper(call);
                    let result = self.lss.call(call);
                    self.input(Input::Lss { op, result });
                    continue;
                }
            }
            break;
        }
    }

    /// Moves the virtual clock by `by`, firing whatever is due.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.clock.set(self.clock_now() + by);
        while self.broker.poll_timeout().is_some_and(|t| t <= self.now) {
            self.broker.handle_timeout(self.now);
            assert!(
                self.broker.poll_timeout().is_none_or(|t| t > self.now),
                "a deadline that fired was not cleared: the driver would spin"
            );
            self.collect();
        }
        self.settle();
    }

    /// What a hostile broker does to a put on its way to LSS.
    fn tamper(&mut self, call: LssCall) -> LssCall {
        match call {
            LssCall::Put {
                accounts,
                muts,
                puts,
                verify,
                repairs,
            } if self.regroup_next_put && muts.len() >= 2 => {
                self.regroup_next_put = false;
                let mut entries = muts.into_iter();
                let (key, (version, mut value)) = entries.next().expect("two entries");
                let mut swallowed = Vec::new();
                for (k, (v, val)) in entries {
                    value.extend_from_slice(k.as_bytes());
                    value.extend_from_slice(&(v as i64).to_be_bytes());
                    value.extend_from_slice(&val);
                    swallowed.push(k);
                }
                self.regrouped = Some((key.clone(), value.clone(), swallowed));
                LssCall::Put {
                    accounts,
                    muts: vec![(key, (version, value))],
                    puts,
                    verify,
                    repairs,
                }
            }
            other => other,
        }
    }

    fn clock_now(&self) -> Duration {
        use vls_protocol_signer::lightning_signer::util::clock::Clock;
        self.clock.now()
    }

    fn hello(&mut self) {
        let max_packet = self.max_packet;
        self.input(Input::Link(LinkEvent::Hello {
            cid: CID.into(),
            max_packet,
        }));
        self.settle();
    }

    fn send(&mut self, message: &dyn SerBolt) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.input(Input::Request {
            id,
            peer_id: [0; 33],
            dbid: 0,
            message: message.as_vec(),
        });
        self.settle();
        id
    }

    fn reply(&mut self, id: u64) -> Option<Result<Message, RequestError>> {
        self.replies
            .remove(&id)
            .map(|r| r.map(|bytes| msgs::from_vec(bytes).expect("a reply parses")))
    }

    /// CLN's HsmdInit, answered by the signer.
    fn init(&mut self) -> Result<Message, RequestError> {
        let id = self.next_id;
        self.next_id += 1;
        self.input(Input::Init {
            id,
            message: driver::hsmd_init(Network::Regtest).as_vec(),
        });
        self.settle();
        self.reply(id).expect("init answered")
    }

    fn ready(network: Network) -> World {
        let mut world = World::new(network);
        world.hello();
        assert!(matches!(world.init(), Ok(Message::HsmdInitReplyV4(_))));
        world
    }
}

fn new_channel(dbid: u64) -> msgs::NewChannel {
    msgs::NewChannel {
        peer_id: PubKey([2; 33]),
        dbid,
    }
}

#[test]
fn requests_store_their_changes_in_lss_before_the_reply() {
    let mut world = World::ready(Network::Regtest);
    let puts = world.lss.puts;
    let id = world.send(&new_channel(1));
    assert!(matches!(
        world.reply(id),
        Some(Ok(Message::NewChannelReply(_)))
    ));
    assert_eq!(world.lss.puts, puts + 1, "the channel's record is in LSS");
}

#[test]
fn a_put_whose_answer_was_lost_is_recognised_and_answered_once() {
    let mut world = World::ready(Network::Regtest);
    let puts = world.lss.puts;
    let hits = world.signer.cache_hits();
    world.lss.lose_next_reply = true;
    let id = world.send(&new_channel(1));
    // The relay met its own write as a conflict; the signer resynced, found
    // exactly its changes in LSS, and answered the resent request from its
    // held reply.
    assert!(
        matches!(world.reply(id), Some(Ok(Message::NewChannelReply(_)))),
        "answered"
    );
    assert_eq!(world.lss.puts, puts + 1, "stored once");
    assert_eq!(
        world.signer.cache_hits(),
        hits + 1,
        "the resent request was answered with the held reply, not signed again"
    );
    let replies = world
        .published
        .iter()
        .filter(|(s, _)| *s == Suffix::VlsRes)
        .count();
    assert_eq!(replies, 1, "one reply");
    // And the node goes on.
    let id = world.send(&new_channel(2));
    assert!(matches!(
        world.reply(id),
        Some(Ok(Message::NewChannelReply(_)))
    ));
}

#[test]
fn a_duplicated_lss_res_is_put_once() {
    let mut world = World::ready(Network::Regtest);
    let puts = world.lss.put_calls;
    // MQTT redelivers every lss-res: the copy arrives while the put runs.
    world.duplicate = Box::new(|m| {
        matches!(
            m,
            Msg::ToBroker(LinkEvent::Message {
                suffix: Suffix::LssRes,
                ..
            })
        )
    });
    let id = world.send(&new_channel(4));
    assert!(matches!(
        world.reply(id),
        Some(Ok(Message::NewChannelReply(_)))
    ));
    assert_eq!(
        world.lss.put_calls,
        puts + 1,
        "one put for one set of changes"
    );
    // A copy after the request was answered starts no put either.
    let lss_res = world
        .published
        .iter()
        .rev()
        .find(|(s, _)| *s == Suffix::LssRes)
        .expect("changes")
        .1
        .clone();
    world.signer_deaf = true;
    let _pending = world.send(&new_channel(5));
    world.input(Input::Link(LinkEvent::Message {
        cid: CID.into(),
        suffix: Suffix::LssRes,
        payload: lss_res.into(),
    }));
    world.settle();
    assert_eq!(
        world.lss.put_calls,
        puts + 1,
        "an old request's changes: no put"
    );
}

#[test]
fn a_signer_that_reconnects_mid_request_gets_it_again() {
    let mut world = World::ready(Network::Regtest);
    // The request reaches the signer, but its reply is lost with the
    // connection.
    world.filter = Box::new(|m| {
        !matches!(
            m,
            Msg::ToBroker(LinkEvent::Message {
                suffix: Suffix::VlsRes,
                ..
            })
        )
    });
    let id = world.send(&new_channel(1));
    assert!(world.reply(id).is_none(), "no reply yet");
    world.filter = Box::new(|_| true);
    world.input(Input::Link(LinkEvent::Gone { cid: CID.into() }));
    world.hello();
    // Resent with the same sequence number: answered from the cache.
    assert!(matches!(
        world.reply(id),
        Some(Ok(Message::NewChannelReply(_)))
    ));
}

#[test]
fn stale_and_reordered_replies_are_ignored() {
    let mut world = World::ready(Network::Regtest);
    let first = world.send(&new_channel(1));
    assert!(world.reply(first).is_some());
    let old_reply = world
        .published
        .iter()
        .rev()
        .find(|(s, _)| *s == Suffix::VlsRes)
        .expect("a reply")
        .1
        .clone();
    // The next request is held by a deaf signer; the old reply arrives
    // again (reordered or replayed): it answers nothing.
    world.signer_deaf = true;
    let second = world.send(&new_channel(2));
    world.input(Input::Link(LinkEvent::Message {
        cid: CID.into(),
        suffix: Suffix::VlsRes,
        payload: old_reply.into(),
    }));
    assert!(
        world.reply(second).is_none(),
        "a stale reply answers nothing"
    );
    // Past its deadline it fails, and the clock moves on.
    world.advance(TIMEOUT + Duration::from_secs(1));
    assert!(matches!(
        world.reply(second),
        Some(Err(RequestError::Deadline(_)))
    ));
    assert_eq!(
        world.broker.poll_timeout(),
        None,
        "nothing left to wait for"
    );
}

/// Hole 7: a signer that stays connected but never finishes an LSS step
/// used to make the broker's loop spin at 100 % CPU (its deadline stayed in
/// `next_deadline` after it passed). The harness's own check in `advance`
/// fails on that; here every LSS step gets stuck in turn.
#[test]
fn a_signer_stuck_in_any_lss_step_is_dropped_at_its_deadline() {
    // Step 1 (the server key never comes: LSS hangs).
    let mut world = World::new(Network::Regtest);
    world.lss.hung = true;
    world.hello();
    assert_eq!(world.broker.signers()[0].state, "lss-credentials");
    world.advance(TIMEOUT + Duration::from_secs(1));
    assert!(world.broker.signers().is_empty(), "dropped");
    assert_eq!(world.broker.poll_timeout(), None);

    // Step 2: the signer never answers init-2.
    let mut world = World::new(Network::Regtest);
    world.filter = Box::new(|m| {
        !matches!(
            m,
            Msg::ToBroker(LinkEvent::Message {
                suffix: Suffix::Init2Res,
                ..
            })
        )
    });
    world.hello();
    assert_eq!(world.broker.signers()[0].state, "lss-state");
    world.advance(TIMEOUT + Duration::from_secs(1));
    assert!(world.broker.signers().is_empty(), "dropped");
    assert_eq!(world.broker.poll_timeout(), None);

    // Step 2 again: the new node's records are never stored (LSS hangs on puts).
    let mut world = World::new(Network::Regtest);
    world.lss.hang_puts = true;
    world.hello();
    assert_eq!(world.broker.signers()[0].state, "lss-storing");
    world.advance(TIMEOUT + Duration::from_secs(1));
    assert!(world.broker.signers().is_empty(), "dropped");
    assert_eq!(world.broker.poll_timeout(), None);

    // HsmdInit sent, never answered.
    let mut world = World::new(Network::Regtest);
    world.filter = Box::new(|m| !matches!(m, Msg::ToSigner(Suffix::Init3Msg, _)));
    world.hello();
    let id = world.next_id;
    world.input(Input::Init {
        id,
        message: driver::hsmd_init(Network::Regtest).as_vec(),
    });
    world.settle();
    assert_eq!(world.broker.signers()[0].state, "initialising");
    world.advance(TIMEOUT + Duration::from_secs(1));
    assert!(world.broker.signers().is_empty(), "dropped");
}

#[test]
fn a_signer_on_another_chain_fails_hsmd_init_naming_both() {
    let mut world = World::new(Network::Testnet);
    world.hello();
    let err = world.init().expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("another chain"), "{text}");
    assert!(text.contains("chain genesis"), "{text}");
    assert!(
        text.contains("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"),
        "names the node's regtest genesis: {text}"
    );
}

/// Hole 5: a state larger than one MQTT packet used to make the signer
/// reconnect forever. Here a 5 MiB state restores; one over the signer's
/// announced limit is refused once, with the settings to change named.
#[test]
fn a_large_state_restores_and_one_over_the_limit_is_a_clear_error() {
    let mut world = World::ready(Network::Regtest);
    // 5 MiB more in the signer's namespace (keys VLS does not use).
    let space = world
        .lss
        .data
        .values_mut()
        .next()
        .expect("the signer's namespace");
    for i in 0..5u8 {
        space.insert(format!("zz-padding/{i}"), (0, vec![i; 1 << 20]));
    }
    world.input(Input::Link(LinkEvent::Gone { cid: CID.into() }));
    // A signer that takes 1 MiB packets: refused, saying why.
    world.max_packet = 1 << 20;
    world.hello();
    assert!(world.broker.signers().is_empty(), "not admitted");
    let error = world.errors.last().expect("an error for the operator");
    assert!(error.contains("mqtt_max_packet_mib"), "{error}");
    assert!(error.contains("init-2-msg"), "{error}");
    // With the default limit it restores (the restore is MAC-checked) and signs.
    world.max_packet = 64 << 20;
    world.hello();
    assert_eq!(world.broker.signers()[0].state, "ready");
    let id = world.send(&new_channel(9));
    assert!(matches!(
        world.reply(id),
        Some(Ok(Message::NewChannelReply(_)))
    ));
}

/// Hole 4: the reference's MACs hash `key ‖ version ‖ value` with no
/// framing, so a broker can regroup a put's entries into one and the server
/// stores garbage under a valid acknowledgement. Shown first with the
/// reference's MACs (the attack works: that is why they are refused by
/// default), then with framed MACs (the put is refused; the signer commits
/// nothing and withholds the reply).
#[test]
fn a_regrouped_put_passes_unframed_macs_and_is_caught_by_framed_ones() {
    // Find a request with two or more changes: a new node's first channel.
    let attack = |allow_unframed: bool| {
        let mut world = World::with(Network::Regtest, allow_unframed);
        world.hello();
        assert!(matches!(world.init(), Ok(Message::HsmdInitReplyV4(_))));
        world.regroup_next_put = true;
        let mut answered = None;
        for dbid in 1..=4 {
            let id = world.send(&new_channel(dbid));
            if world.regrouped.is_some() {
                answered = Some(world.reply(id));
                break;
            }
            assert!(world.reply(id).is_some());
        }
        assert!(
            world.regrouped.is_some(),
            "no put with two entries to regroup"
        );
        (answered.expect("the attacked request"), world)
    };
    // The reference's MACs: the signer is told its changes are stored and
    // replies, but LSS holds one entry where there should be several.
    let (answer, world) = attack(true);
    assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
    let space = world.lss.data.values().next().expect("namespace");
    let (key, value, swallowed) = world.regrouped.clone().expect("regrouped");
    assert_eq!(
        space.get(&key).map(|(_, v)| v),
        Some(&value),
        "LSS stores the regrouped entry"
    );
    for key in swallowed {
        assert!(!space.contains_key(&key), "{key} was never stored");
    }

    // Framed MACs: the server refuses the put; the request fails instead of
    // being answered on a backup that does not exist.
    let (answer, mut world) = attack(false);
    assert!(
        matches!(answer, Some(Err(RequestError::Lss(ref e))) if e.contains("client MAC")),
        "{answer:?}"
    );
    // The signer committed nothing: after a resync it serves on.
    world.input(Input::Link(LinkEvent::Gone { cid: CID.into() }));
    world.hello();
    let id = world.send(&new_channel(9));
    assert!(matches!(
        world.reply(id),
        Some(Ok(Message::NewChannelReply(_)))
    ));
}

#[test]
fn a_signer_requiring_framed_macs_is_refused_by_a_broker_whose_server_lacks_them() {
    let mut world = World::new(Network::Regtest);
    world.lss.offers_framed = false;
    world.hello();
    assert!(world.broker.signers().is_empty(), "not admitted");
    let error = world.errors.last().expect("an error for the operator");
    assert!(error.contains("--allow-unframed-lss-macs"), "{error}");
    // Opted out, it runs (with the reference's MACs).
    let mut world = World::with(Network::Regtest, true);
    world.lss.offers_framed = false;
    world.hello();
    assert!(matches!(world.init(), Ok(Message::HsmdInitReplyV4(_))));
}
