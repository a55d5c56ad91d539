//! The LSS relay messages between broker and signer (notes §3.2), in the
//! reference's hand-written msgpack (notes §2.4): a data variant is a 1-entry
//! map `{Variant: {field: value, …}}` with fields in declaration order; byte
//! arrays are msgpack `bin`; `Muts` is an array of `[key, [version, value]]`;
//! `None` is nil. Two quirks are reproduced exactly when encoding:
//! `Msg::PutConflict` and `Response::PutConflictConfirmed` are a 1-entry map
//! holding only the key, with no value (not valid msgpack in general; the
//! reference's decoder expects it). Decoding also accepts the well-formed
//! spellings (a bare string, or the key followed by nil).

use crate::WireError;

/// Stored mutations: `(key, (version, value))`, as the reference's `Muts`.
pub type Muts = Vec<(String, (u64, Vec<u8>))>;

/// Broker → signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Init step 1: the LSS server's public key.
    Init {
        /// Compressed secp256k1 key.
        server_pubkey: [u8; 33],
    },
    /// Init step 2: everything stored (and the server's MAC over it).
    Created(BrokerMutations),
    /// A put was stored; the server's MAC proves it.
    Stored(BrokerMutations),
    /// A put conflicted.
    PutConflict,
    /// Init step 1 with several LSS providers (Lightkeeper's `quorum-v1`
    /// extension; a sphinx-key signer does not know it).
    Providers(Providers),
    /// Init step 2 with several providers: each answering provider's state,
    /// MAC and signed checkpoint.
    States(Vec<ProviderState>),
    /// A put stored by several providers: their receipts.
    Receipts(Receipts),
}

/// The receipts for a put with several providers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipts {
    /// At least the write quorum's.
    pub receipts: Vec<Receipt>,
    /// Providers the broker saw refuse a put as behind (a version
    /// conflict): the signer resyncs to repair them. Encoded only when
    /// non-empty, as bytes (one index each).
    pub behind: Vec<u8>,
}

/// Most providers a quorum message may name.
pub const MAX_PROVIDERS: usize = 16;

/// How a signer's error report starts when an LSS MAC did not verify (the
/// broker counts these apart from other signer errors).
pub const MAC_MISMATCH: &str = "LSS MAC mismatch";

/// The LSS providers the broker relays to (`quorum-v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Providers {
    /// Each provider's server key, in the broker's order (the index every
    /// later quorum message uses).
    pub server_pubkeys: Vec<[u8; 33]>,
    /// How many providers must store a put before it counts.
    pub write_quorum: u64,
}

/// A client's last verified checkpoint of one provider, as it sends it
/// (`lss_proto::Verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The checkpoint's log size.
    pub size: u64,
    /// SHA-256 of its signed note.
    pub note: [u8; 32],
}

/// One provider's answer to the full read of init step 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderState {
    /// Its index in [`Providers::server_pubkeys`].
    pub provider: u64,
    /// The server's MAC over the signer's nonce and `muts`.
    pub server_hmac: [u8; 32],
    /// Everything it stores for the signer.
    pub muts: Muts,
    /// Its signed checkpoint (`lss_proto::Attestation::checkpoint`).
    pub checkpoint: Vec<u8>,
    /// The bundle the checkpoint signs.
    pub bundle: Vec<u8>,
}

/// One provider's receipt for a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Its index in [`Providers::server_pubkeys`].
    pub provider: u64,
    /// The server's MAC over exactly the mutations put.
    pub server_hmac: [u8; 32],
    /// Its signed checkpoint after the put.
    pub checkpoint: Vec<u8>,
    /// The bundle the checkpoint signs.
    pub bundle: Vec<u8>,
}

/// What the broker hands the signer from LSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMutations {
    /// The server's MAC, when there is one.
    pub server_hmac: Option<[u8; 32]>,
    /// The entries.
    pub muts: Muts,
}

/// Signer → broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Init step 1: the signer's LSS credentials and a fresh nonce.
    Init(InitResponse),
    /// Init step 2: the signer's new mutations and their client MAC.
    Created(SignerMutations),
    /// A request's mutations, to be stored before the reply is released.
    VlsMuts(SignerMutations),
    /// The conflict is acknowledged.
    PutConflictConfirmed,
    /// Init step 1 with several providers: one account per provider.
    Accounts(QuorumInit),
    /// Mutations for several providers (init step 2 and every request):
    /// one MAC and checkpoint reference per provider.
    QuorumMuts(QuorumMutations),
}

/// The signer's identity at each provider (`quorum-v1`; framed MACs and the
/// verifiable log are implied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumInit {
    /// Its namespace (the same at every provider).
    pub client_id: [u8; 33],
    /// Nonce for the full reads of step 2.
    pub nonce: [u8; 32],
    /// One per provider, in the broker's order.
    pub accounts: Vec<ProviderAccount>,
}

/// The signer at one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAccount {
    /// `SHA-256(shared secret with this provider)`.
    pub auth_token: [u8; 32],
    /// Its last verified checkpoint of this provider, if any.
    pub seen: Option<Seen>,
}

/// Mutations to put at every provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumMutations {
    /// The entries (the same everywhere).
    pub muts: Muts,
    /// One per provider, in the broker's order.
    pub puts: Vec<ProviderPut>,
    /// Init step 2 only: providers to bring up to date first. Encoded only
    /// when non-empty.
    pub repairs: Vec<Repair>,
}

/// A provider that is behind, and the signer's MACs for the puts that bring
/// it up to the newest state (`lss_verify::quorum::repair_steps` from its
/// state to `source`'s, both as the broker relayed them in `States`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The provider behind.
    pub provider: u64,
    /// The provider whose state it is brought to.
    pub source: u64,
    /// One client MAC per step, in order (concatenated on the wire).
    pub macs: Vec<[u8; 32]>,
}

/// What differs per provider in a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPut {
    /// The client MAC under this provider's shared secret.
    pub client_hmac: [u8; 32],
    /// The signer's last verified checkpoint of this provider.
    pub seen: Option<Seen>,
}

/// The signer's LSS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitResponse {
    /// Compressed public key: the LSS namespace.
    pub client_id: [u8; 33],
    /// `SHA-256(shared secret)`.
    pub auth_token: [u8; 32],
    /// Nonce for the Get of step 2 (`None` when the signer already has state).
    pub nonce: Option<[u8; 32]>,
    /// Lightkeeper signers: every LSS MAC of this signer is framed (the
    /// `framed-mac-v1` extension). Encoded as a fourth field `framed_mac`
    /// (bin, one byte 1) only when set, so a sphinx-key signer's bytes are
    /// unchanged.
    pub framed_mac: bool,
}

/// Mutations with the signer's MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerMutations {
    /// `shared_hmac(shared, 0x01, muts)`.
    pub client_hmac: [u8; 32],
    /// The entries.
    pub muts: Muts,
}

// ---- encoding ----

fn map(out: &mut Vec<u8>, len: u32) {
    let _ = rmp::encode::write_map_len(out, len);
}

fn string(out: &mut Vec<u8>, s: &str) {
    let _ = rmp::encode::write_str(out, s);
}

fn bin(out: &mut Vec<u8>, b: &[u8]) {
    let _ = rmp::encode::write_bin(out, b);
}

fn opt_bin(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => bin(out, b),
        None => {
            let _ = rmp::encode::write_nil(out);
        }
    }
}

fn muts(out: &mut Vec<u8>, muts: &Muts) {
    let _ = rmp::encode::write_array_len(out, muts.len() as u32);
    for (key, (version, value)) in muts {
        let _ = rmp::encode::write_array_len(out, 2);
        string(out, key);
        let _ = rmp::encode::write_array_len(out, 2);
        let _ = rmp::encode::write_uint(out, *version);
        bin(out, value);
    }
}

fn uint(out: &mut Vec<u8>, n: u64) {
    let _ = rmp::encode::write_uint(out, n);
}

/// `{variant: {fields}}`: the outer shape of every data variant.
fn variant(out: &mut Vec<u8>, name: &str, fields: u32) {
    map(out, 1);
    string(out, name);
    map(out, fields);
}

/// A list of maps, each written by `item`.
fn list<T>(out: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    let _ = rmp::encode::write_array_len(out, items.len() as u32);
    for i in items {
        item(out, i);
    }
}

/// `seen_size` and `seen_note` (nil when the client has no checkpoint).
fn seen(out: &mut Vec<u8>, seen: Option<&Seen>) {
    string(out, "seen_size");
    uint(out, seen.map_or(0, |s| s.size));
    string(out, "seen_note");
    opt_bin(out, seen.map(|s| s.note.as_slice()));
}

/// `{variant: <key only>}`: the reference's unit-variant quirk.
fn quirk_unit(out: &mut Vec<u8>, variant: &str) {
    map(out, 1);
    string(out, variant);
}

impl Msg {
    /// The bytes the reference broker sends.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Msg::Init { server_pubkey } => {
                map(&mut out, 1);
                string(&mut out, "Init");
                map(&mut out, 1);
                string(&mut out, "server_pubkey");
                bin(&mut out, server_pubkey);
            }
            Msg::Created(m) | Msg::Stored(m) => {
                map(&mut out, 1);
                string(
                    &mut out,
                    if matches!(self, Msg::Created(_)) {
                        "Created"
                    } else {
                        "Stored"
                    },
                );
                map(&mut out, 2);
                string(&mut out, "server_hmac");
                opt_bin(&mut out, m.server_hmac.as_ref().map(|h| h.as_slice()));
                string(&mut out, "muts");
                muts(&mut out, &m.muts);
            }
            Msg::PutConflict => quirk_unit(&mut out, "PutConflict"),
            Msg::Providers(p) => {
                variant(&mut out, "Providers", 2);
                string(&mut out, "providers");
                list(&mut out, &p.server_pubkeys, |out, key| {
                    map(out, 1);
                    string(out, "server_pubkey");
                    bin(out, key);
                });
                string(&mut out, "write_quorum");
                uint(&mut out, p.write_quorum);
            }
            Msg::States(states) => {
                variant(&mut out, "States", 1);
                string(&mut out, "states");
                list(&mut out, states, |out, s| {
                    map(out, 5);
                    string(out, "provider");
                    uint(out, s.provider);
                    string(out, "server_hmac");
                    bin(out, &s.server_hmac);
                    string(out, "muts");
                    muts(out, &s.muts);
                    string(out, "checkpoint");
                    bin(out, &s.checkpoint);
                    string(out, "bundle");
                    bin(out, &s.bundle);
                });
            }
            Msg::Receipts(Receipts { receipts, behind }) => {
                variant(&mut out, "Receipts", if behind.is_empty() { 1 } else { 2 });
                if !behind.is_empty() {
                    string(&mut out, "behind");
                    bin(&mut out, behind);
                }
                string(&mut out, "receipts");
                list(&mut out, receipts, |out, r| {
                    map(out, 4);
                    string(out, "provider");
                    uint(out, r.provider);
                    string(out, "server_hmac");
                    bin(out, &r.server_hmac);
                    string(out, "checkpoint");
                    bin(out, &r.checkpoint);
                    string(out, "bundle");
                    bin(out, &r.bundle);
                });
            }
        }
        out
    }

    /// Parses a broker message.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(bytes);
        let variant = r.variant()?;
        let msg = match variant.as_str() {
            "PutConflict" => {
                r.unit_value()?;
                Msg::PutConflict
            }
            "Init" => {
                let mut f = r.fields(&["server_pubkey"])?;
                Msg::Init {
                    server_pubkey: f.fixed("server_pubkey")?,
                }
            }
            "Created" | "Stored" => {
                let mut f = r.fields(&["server_hmac", "muts"])?;
                let m = BrokerMutations {
                    server_hmac: f.opt_fixed("server_hmac")?,
                    muts: f.muts("muts")?,
                };
                if variant == "Created" {
                    Msg::Created(m)
                } else {
                    Msg::Stored(m)
                }
            }
            "Providers" => {
                let mut f = r.fields(&["providers", "write_quorum"])?;
                let server_pubkeys = f
                    .list("providers")?
                    .into_iter()
                    .map(|mut p| p.fixed("server_pubkey"))
                    .collect::<Result<Vec<_>, _>>()?;
                let write_quorum = f.uint("write_quorum")?;
                if server_pubkeys.is_empty()
                    || write_quorum == 0
                    || write_quorum > server_pubkeys.len() as u64
                {
                    return Err(malformed(
                        "a write quorum must be between 1 and the number of providers",
                    ));
                }
                Msg::Providers(Providers {
                    server_pubkeys,
                    write_quorum,
                })
            }
            "States" => {
                let mut f = r.fields(&["states"])?;
                Msg::States(
                    f.list("states")?
                        .into_iter()
                        .map(|mut s| {
                            Ok(ProviderState {
                                provider: s.uint("provider")?,
                                server_hmac: s.fixed("server_hmac")?,
                                muts: s.muts("muts")?,
                                checkpoint: s.bytes("checkpoint")?,
                                bundle: s.bytes("bundle")?,
                            })
                        })
                        .collect::<Result<_, WireError>>()?,
                )
            }
            "Receipts" => {
                let mut f = r.fields_with(&["receipts"], &["behind"])?;
                let behind = match f.take_opt("behind") {
                    None => Vec::new(),
                    Some(Value::Bin(b)) if b.len() <= MAX_PROVIDERS => b,
                    Some(_) => return Err(malformed("behind must be at most 16 bytes")),
                };
                let receipts = f
                    .list("receipts")?
                    .into_iter()
                    .map(|mut s| {
                        Ok(Receipt {
                            provider: s.uint("provider")?,
                            server_hmac: s.fixed("server_hmac")?,
                            checkpoint: s.bytes("checkpoint")?,
                            bundle: s.bytes("bundle")?,
                        })
                    })
                    .collect::<Result<_, WireError>>()?;
                Msg::Receipts(Receipts { receipts, behind })
            }
            other => return Err(malformed(format!("unknown Msg variant {other:?}"))),
        };
        r.end()?;
        Ok(msg)
    }
}

impl Response {
    /// The bytes the reference signer sends.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Response::Init(i) => {
                map(&mut out, 1);
                string(&mut out, "Init");
                map(&mut out, if i.framed_mac { 4 } else { 3 });
                string(&mut out, "client_id");
                bin(&mut out, &i.client_id);
                string(&mut out, "auth_token");
                bin(&mut out, &i.auth_token);
                string(&mut out, "nonce");
                opt_bin(&mut out, i.nonce.as_ref().map(|n| n.as_slice()));
                if i.framed_mac {
                    string(&mut out, "framed_mac");
                    bin(&mut out, &[1]);
                }
            }
            Response::Created(m) | Response::VlsMuts(m) => {
                map(&mut out, 1);
                string(
                    &mut out,
                    if matches!(self, Response::Created(_)) {
                        "Created"
                    } else {
                        "VlsMuts"
                    },
                );
                map(&mut out, 2);
                string(&mut out, "client_hmac");
                bin(&mut out, &m.client_hmac);
                string(&mut out, "muts");
                muts(&mut out, &m.muts);
            }
            Response::PutConflictConfirmed => quirk_unit(&mut out, "PutConflictConfirmed"),
            Response::Accounts(q) => {
                variant(&mut out, "Accounts", 3);
                string(&mut out, "client_id");
                bin(&mut out, &q.client_id);
                string(&mut out, "nonce");
                bin(&mut out, &q.nonce);
                string(&mut out, "accounts");
                list(&mut out, &q.accounts, |out, a| {
                    map(out, 3);
                    string(out, "auth_token");
                    bin(out, &a.auth_token);
                    seen(out, a.seen.as_ref());
                });
            }
            Response::QuorumMuts(q) => {
                variant(
                    &mut out,
                    "QuorumMuts",
                    if q.repairs.is_empty() { 2 } else { 3 },
                );
                string(&mut out, "muts");
                muts(&mut out, &q.muts);
                string(&mut out, "puts");
                list(&mut out, &q.puts, |out, p| {
                    map(out, 3);
                    string(out, "client_hmac");
                    bin(out, &p.client_hmac);
                    seen(out, p.seen.as_ref());
                });
                if !q.repairs.is_empty() {
                    string(&mut out, "repairs");
                    list(&mut out, &q.repairs, |out, r| {
                        map(out, 3);
                        string(out, "provider");
                        uint(out, r.provider);
                        string(out, "source");
                        uint(out, r.source);
                        string(out, "macs");
                        bin(out, &r.macs.concat());
                    });
                }
            }
        }
        out
    }

    /// Parses a signer response.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(bytes);
        let variant = r.variant()?;
        let response = match variant.as_str() {
            "PutConflictConfirmed" => {
                r.unit_value()?;
                Response::PutConflictConfirmed
            }
            "Init" => {
                let mut f =
                    r.fields_with(&["client_id", "auth_token", "nonce"], &["framed_mac"])?;
                Response::Init(InitResponse {
                    client_id: f.fixed("client_id")?,
                    auth_token: f.fixed("auth_token")?,
                    nonce: f.opt_fixed("nonce")?,
                    framed_mac: match f.take_opt("framed_mac") {
                        None => false,
                        Some(Value::Bin(b)) if b == [1] => true,
                        Some(_) => return Err(malformed("framed_mac must be the byte 1")),
                    },
                })
            }
            "Created" | "VlsMuts" => {
                let mut f = r.fields(&["client_hmac", "muts"])?;
                let m = SignerMutations {
                    client_hmac: f.fixed("client_hmac")?,
                    muts: f.muts("muts")?,
                };
                if variant == "Created" {
                    Response::Created(m)
                } else {
                    Response::VlsMuts(m)
                }
            }
            "Accounts" => {
                let mut f = r.fields(&["client_id", "nonce", "accounts"])?;
                Response::Accounts(QuorumInit {
                    client_id: f.fixed("client_id")?,
                    nonce: f.fixed("nonce")?,
                    accounts: f
                        .list("accounts")?
                        .into_iter()
                        .map(|mut a| {
                            Ok(ProviderAccount {
                                auth_token: a.fixed("auth_token")?,
                                seen: a.seen()?,
                            })
                        })
                        .collect::<Result<_, WireError>>()?,
                })
            }
            "QuorumMuts" => {
                let mut f = r.fields_with(&["muts", "puts"], &["repairs"])?;
                let repairs = match f.take_opt("repairs") {
                    None => Vec::new(),
                    Some(Value::List(items)) => items
                        .into_iter()
                        .map(|mut r| {
                            let macs = r.bytes("macs")?;
                            if macs.len() % 32 != 0 {
                                return Err(malformed("repair MACs are 32 bytes each"));
                            }
                            Ok(Repair {
                                provider: r.uint("provider")?,
                                source: r.uint("source")?,
                                macs: macs
                                    .chunks_exact(32)
                                    .map(|c| c.try_into().expect("32 bytes"))
                                    .collect(),
                            })
                        })
                        .collect::<Result<_, WireError>>()?,
                    Some(_) => return Err(malformed("repairs must be a list")),
                };
                Response::QuorumMuts(QuorumMutations {
                    repairs,
                    muts: f.muts("muts")?,
                    puts: f
                        .list("puts")?
                        .into_iter()
                        .map(|mut p| {
                            Ok(ProviderPut {
                                client_hmac: p.fixed("client_hmac")?,
                                seen: p.seen()?,
                            })
                        })
                        .collect::<Result<_, WireError>>()?,
                })
            }
            other => return Err(malformed(format!("unknown Response variant {other:?}"))),
        };
        r.end()?;
        Ok(response)
    }
}

// ---- decoding ----

fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

/// A msgpack value this protocol uses.
#[derive(Debug)]
enum Value {
    Nil,
    Bin(Vec<u8>),
    Uint(u64),
    Muts(Muts),
    /// A `quorum-v1` list of maps, one per provider.
    List(Vec<Fields>),
}

/// The fields of each element of a `quorum-v1` list field: required, then
/// optional. Elements hold no lists, so nesting is one level at most.
fn element_schema(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "providers" => &["server_pubkey"],
        "states" => &["provider", "server_hmac", "muts", "checkpoint", "bundle"],
        "receipts" => &["provider", "server_hmac", "checkpoint", "bundle"],
        "accounts" => &["auth_token", "seen_size", "seen_note"],
        "puts" => &["client_hmac", "seen_size", "seen_note"],
        "repairs" => &["provider", "source", "macs"],
        _ => return None,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn marker(&mut self) -> Result<rmp::Marker, WireError> {
        rmp::decode::read_marker(&mut self.0).map_err(|_| malformed("truncated"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if len > self.0.len() {
            return Err(WireError::Truncated {
                needed: len - self.0.len(),
            });
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn be(&mut self, n: usize) -> Result<u64, WireError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn str_of(&mut self, marker: rmp::Marker) -> Result<String, WireError> {
        let len = match marker {
            rmp::Marker::FixStr(n) => usize::from(n),
            rmp::Marker::Str8 => self.be(1)? as usize,
            rmp::Marker::Str16 => self.be(2)? as usize,
            rmp::Marker::Str32 => self.be(4)? as usize,
            other => return Err(malformed(format!("expected a string, found {other:?}"))),
        };
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| malformed("string is not UTF-8"))
    }

    fn string(&mut self) -> Result<String, WireError> {
        let marker = self.marker()?;
        self.str_of(marker)
    }

    fn map_len_of(&mut self, marker: rmp::Marker) -> Result<usize, WireError> {
        match marker {
            rmp::Marker::FixMap(n) => Ok(usize::from(n)),
            rmp::Marker::Map16 => Ok(self.be(2)? as usize),
            rmp::Marker::Map32 => Ok(self.be(4)? as usize),
            other => Err(malformed(format!("expected a map, found {other:?}"))),
        }
    }

    fn array_len(&mut self) -> Result<usize, WireError> {
        match self.marker()? {
            rmp::Marker::FixArray(n) => Ok(usize::from(n)),
            rmp::Marker::Array16 => Ok(self.be(2)? as usize),
            rmp::Marker::Array32 => Ok(self.be(4)? as usize),
            other => Err(malformed(format!("expected an array, found {other:?}"))),
        }
    }

    fn uint(&mut self) -> Result<u64, WireError> {
        let marker = self.marker()?;
        self.uint_of(marker)
    }

    fn uint_of(&mut self, marker: rmp::Marker) -> Result<u64, WireError> {
        match marker {
            rmp::Marker::FixPos(n) => Ok(u64::from(n)),
            rmp::Marker::U8 => self.be(1),
            rmp::Marker::U16 => self.be(2),
            rmp::Marker::U32 => self.be(4),
            rmp::Marker::U64 => self.be(8),
            other => Err(malformed(format!(
                "expected an unsigned integer, found {other:?}"
            ))),
        }
    }

    fn bin_of(&mut self, marker: rmp::Marker) -> Result<Vec<u8>, WireError> {
        let len = match marker {
            rmp::Marker::Bin8 => self.be(1)? as usize,
            rmp::Marker::Bin16 => self.be(2)? as usize,
            rmp::Marker::Bin32 => self.be(4)? as usize,
            other => return Err(malformed(format!("expected bin, found {other:?}"))),
        };
        Ok(self.take(len)?.to_vec())
    }

    /// The outer `{Variant: …}` (or a bare variant string).
    fn variant(&mut self) -> Result<String, WireError> {
        let marker = self.marker()?;
        if let rmp::Marker::FixStr(_)
        | rmp::Marker::Str8
        | rmp::Marker::Str16
        | rmp::Marker::Str32 = marker
        {
            return self.str_of(marker);
        }
        if self.map_len_of(marker)? != 1 {
            return Err(malformed("the outer map must have one entry"));
        }
        self.string()
    }

    /// After a unit variant's key: nothing (the quirk) or nil.
    fn unit_value(&mut self) -> Result<(), WireError> {
        if self.0.is_empty() {
            return Ok(());
        }
        match self.marker()? {
            rmp::Marker::Null => Ok(()),
            other => Err(malformed(format!(
                "a unit variant has no value, found {other:?}"
            ))),
        }
    }

    /// A struct's fields, each exactly once, none unknown.
    fn fields(&mut self, names: &[&'static str]) -> Result<Fields, WireError> {
        self.fields_with(names, &[])
    }

    /// Every one of `names`, and any of `optional`, each once.
    fn fields_with(
        &mut self,
        names: &[&'static str],
        optional: &[&'static str],
    ) -> Result<Fields, WireError> {
        let marker = self.marker()?;
        let len = self.map_len_of(marker)?;
        if len < names.len() || len > names.len() + optional.len() {
            return Err(malformed(format!(
                "expected {} fields, found {len}",
                names.len()
            )));
        }
        let mut values = Vec::with_capacity(len);
        for _ in 0..len {
            let name = self.string()?;
            let Some(&known) = names.iter().chain(optional).find(|n| **n == name) else {
                return Err(malformed(format!("unknown field {name:?}")));
            };
            if values.iter().any(|(n, _)| *n == known) {
                return Err(malformed(format!("field {name:?} twice")));
            }
            let value = if known == "muts" {
                Value::Muts(self.muts()?)
            } else if let Some(schema) = element_schema(known) {
                let len = self.array_len()?;
                if len > MAX_PROVIDERS {
                    return Err(malformed(format!(
                        "{known} lists {len} providers, more than {MAX_PROVIDERS}"
                    )));
                }
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.fields(schema)?);
                }
                Value::List(items)
            } else {
                match self.marker()? {
                    rmp::Marker::Null => Value::Nil,
                    marker @ (rmp::Marker::FixPos(_)
                    | rmp::Marker::U8
                    | rmp::Marker::U16
                    | rmp::Marker::U32
                    | rmp::Marker::U64) => Value::Uint(self.uint_of(marker)?),
                    marker => Value::Bin(self.bin_of(marker)?),
                }
            };
            values.push((known, value));
        }
        Ok(Fields(values))
    }

    fn muts(&mut self) -> Result<Muts, WireError> {
        let len = self.array_len()?;
        // Each entry takes at least 5 bytes: never trust `len` beyond that.
        if len > self.0.len() / 5 {
            return Err(WireError::Truncated {
                needed: len * 5 - self.0.len(),
            });
        }
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            if self.array_len()? != 2 {
                return Err(malformed("a mutation is [key, [version, value]]"));
            }
            let key = self.string()?;
            if self.array_len()? != 2 {
                return Err(malformed("a mutation value is [version, value]"));
            }
            let version = self.uint()?;
            let marker = self.marker()?;
            out.push((key, (version, self.bin_of(marker)?)));
        }
        Ok(out)
    }

    fn end(&self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

#[derive(Debug)]
struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    fn take_opt(&mut self, name: &str) -> Option<Value> {
        let i = self.0.iter().position(|(n, _)| *n == name)?;
        Some(self.0.swap_remove(i).1)
    }

    fn take(&mut self, name: &str) -> Result<Value, WireError> {
        let i = self
            .0
            .iter()
            .position(|(n, _)| *n == name)
            .ok_or_else(|| malformed(format!("missing field {name:?}")))?;
        Ok(self.0.swap_remove(i).1)
    }

    fn fixed<const N: usize>(&mut self, name: &str) -> Result<[u8; N], WireError> {
        match self.take(name)? {
            Value::Bin(b) => b
                .try_into()
                .map_err(|b: Vec<u8>| malformed(format!("{name} is {} bytes, not {N}", b.len()))),
            _ => Err(malformed(format!("{name} must be {N} bytes"))),
        }
    }

    fn opt_fixed<const N: usize>(&mut self, name: &str) -> Result<Option<[u8; N]>, WireError> {
        match self.take(name)? {
            Value::Nil => Ok(None),
            Value::Bin(b) => b
                .try_into()
                .map(Some)
                .map_err(|b: Vec<u8>| malformed(format!("{name} is {} bytes, not {N}", b.len()))),
            _ => Err(malformed(format!("{name} must be bytes or nil"))),
        }
    }

    fn bytes(&mut self, name: &str) -> Result<Vec<u8>, WireError> {
        match self.take(name)? {
            Value::Bin(b) => Ok(b),
            _ => Err(malformed(format!("{name} must be bytes"))),
        }
    }

    fn uint(&mut self, name: &str) -> Result<u64, WireError> {
        match self.take(name)? {
            Value::Uint(n) => Ok(n),
            _ => Err(malformed(format!("{name} must be an unsigned integer"))),
        }
    }

    fn list(&mut self, name: &str) -> Result<Vec<Fields>, WireError> {
        match self.take(name)? {
            Value::List(items) => Ok(items),
            _ => Err(malformed(format!("{name} must be a list"))),
        }
    }

    /// `seen_size` and `seen_note`: none when the note is nil.
    fn seen(&mut self) -> Result<Option<Seen>, WireError> {
        let size = self.uint("seen_size")?;
        Ok(self.opt_fixed("seen_note")?.map(|note| Seen { size, note }))
    }

    fn muts(&mut self, name: &str) -> Result<Muts, WireError> {
        match self.take(name)? {
            Value::Muts(m) => Ok(m),
            _ => Err(malformed(format!("{name} must be an array"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex_str(s: &str) -> String {
        hex::encode(s.as_bytes())
    }

    /// Golden vectors, written from the msgpack spec and the reference's
    /// shapes (notes §2.4, §3.2): prefix byte by prefix byte.
    #[test]
    fn golden_vectors() {
        let cases: Vec<(Vec<u8>, String)> = vec![
            (
                Msg::Init {
                    server_pubkey: [2; 33],
                }
                .encode(),
                format!(
                    "81a4{}81ad{}c421{}",
                    hex_str("Init"),
                    hex_str("server_pubkey"),
                    "02".repeat(33)
                ),
            ),
            (
                Msg::PutConflict.encode(),
                format!("81ab{}", hex_str("PutConflict")),
            ),
            (
                Response::PutConflictConfirmed.encode(),
                format!("81b4{}", hex_str("PutConflictConfirmed")),
            ),
            (
                Msg::Created(BrokerMutations {
                    server_hmac: None,
                    muts: vec![],
                })
                .encode(),
                format!(
                    "81a7{}82ab{}c0a4{}90",
                    hex_str("Created"),
                    hex_str("server_hmac"),
                    hex_str("muts")
                ),
            ),
            (
                Response::VlsMuts(SignerMutations {
                    client_hmac: [0xaa; 32],
                    muts: vec![("k".into(), (1, vec![1])), ("n".into(), (300, vec![]))],
                })
                .encode(),
                format!(
                    "81a7{}82ab{}c420{}a4{}92 92a1{}9201c40101 92a1{}92cd012cc400",
                    hex_str("VlsMuts"),
                    hex_str("client_hmac"),
                    "aa".repeat(32),
                    hex_str("muts"),
                    hex_str("k"),
                    hex_str("n")
                )
                .replace(' ', ""),
            ),
            (
                Response::Init(InitResponse {
                    client_id: [3; 33],
                    auth_token: [0x55; 32],
                    nonce: None,
                    framed_mac: false,
                })
                .encode(),
                format!(
                    "81a4{}83a9{}c421{}aa{}c420{}a5{}c0",
                    hex_str("Init"),
                    hex_str("client_id"),
                    "03".repeat(33),
                    hex_str("auth_token"),
                    "55".repeat(32),
                    hex_str("nonce")
                ),
            ),
            (
                // Lightkeeper's extension: a fourth field, only when set.
                Response::Init(InitResponse {
                    client_id: [3; 33],
                    auth_token: [0x55; 32],
                    nonce: None,
                    framed_mac: true,
                })
                .encode(),
                format!(
                    "81a4{}84a9{}c421{}aa{}c420{}a5{}c0aa{}c40101",
                    hex_str("Init"),
                    hex_str("client_id"),
                    "03".repeat(33),
                    hex_str("auth_token"),
                    "55".repeat(32),
                    hex_str("nonce"),
                    hex_str("framed_mac")
                ),
            ),
            (
                Msg::Stored(BrokerMutations {
                    server_hmac: Some([0x11; 32]),
                    muts: vec![],
                })
                .encode(),
                format!(
                    "81a6{}82ab{}c420{}a4{}90",
                    hex_str("Stored"),
                    hex_str("server_hmac"),
                    "11".repeat(32),
                    hex_str("muts")
                ),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(hex::encode(&bytes), expected);
        }
    }

    #[test]
    fn unit_variants_decode_in_every_spelling() {
        let quirk = Msg::PutConflict.encode();
        assert_eq!(Msg::decode(&quirk).expect("quirk"), Msg::PutConflict);
        let mut with_nil = quirk.clone();
        with_nil.push(0xc0);
        assert_eq!(Msg::decode(&with_nil).expect("nil"), Msg::PutConflict);
        let bare = [&[0xab][..], b"PutConflict"].concat();
        assert_eq!(Msg::decode(&bare).expect("bare"), Msg::PutConflict);
        assert_eq!(
            Response::decode(&Response::PutConflictConfirmed.encode()).expect("quirk"),
            Response::PutConflictConfirmed
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        let good = Msg::Stored(BrokerMutations {
            server_hmac: Some([1; 32]),
            muts: vec![("a".into(), (7, vec![9; 10]))],
        })
        .encode();
        for cut in 0..good.len() {
            assert!(Msg::decode(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(Msg::decode(&trailing), Err(WireError::Trailing(1)));
        // A hmac of the wrong size, an unknown variant, a Response as a Msg.
        let short = Msg::Init {
            server_pubkey: [2; 33],
        }
        .encode();
        let mut bad = short.clone();
        bad.truncate(bad.len() - 34);
        bad.extend_from_slice(&[0xc4, 0x20]);
        bad.extend_from_slice(&[2; 32]);
        assert!(Msg::decode(&bad).is_err());
        assert!(Msg::decode(&Response::PutConflictConfirmed.encode()).is_err());
        assert!(Response::decode(&Msg::PutConflict.encode()).is_err());
        // An array claiming 2^32 mutations is refused without allocating.
        let mut huge = Vec::new();
        map(&mut huge, 1);
        string(&mut huge, "Stored");
        map(&mut huge, 2);
        string(&mut huge, "server_hmac");
        huge.push(0xc0);
        string(&mut huge, "muts");
        huge.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(Msg::decode(&huge).is_err());
    }

    #[test]
    fn quorum_messages_golden_and_refusals() {
        let providers = Msg::Providers(Providers {
            server_pubkeys: vec![[2; 33]],
            write_quorum: 1,
        });
        assert_eq!(
            hex::encode(providers.encode()),
            format!(
                "81a9{}82a9{}9181ad{}c421{}ac{}01",
                hex_str("Providers"),
                hex_str("providers"),
                hex_str("server_pubkey"),
                "02".repeat(33),
                hex_str("write_quorum")
            )
        );
        // A quorum of 0, or larger than the providers, is refused.
        for (n, w) in [(1, 0), (1, 2), (0, 0)] {
            let m = Msg::Providers(Providers {
                server_pubkeys: vec![[2; 33]; n],
                write_quorum: w,
            });
            assert!(Msg::decode(&m.encode()).is_err(), "{n} {w}");
        }
        // More than MAX_PROVIDERS entries are refused before parsing them.
        let many = Msg::Receipts(Receipts {
            receipts: vec![
                Receipt {
                    provider: 0,
                    server_hmac: [0; 32],
                    checkpoint: vec![],
                    bundle: vec![],
                };
                MAX_PROVIDERS + 1
            ],
            behind: vec![],
        });
        assert!(Msg::decode(&many.encode()).is_err());
        // A list element missing a field, or a uint where bytes belong.
        let mut bad = Vec::new();
        variant(&mut bad, "Receipts", 1);
        string(&mut bad, "receipts");
        list(&mut bad, &[()], |out, ()| {
            map(out, 4);
            string(out, "provider");
            bin(out, &[0]);
            string(out, "server_hmac");
            bin(out, &[0; 32]);
            string(out, "checkpoint");
            bin(out, &[]);
            string(out, "bundle");
            bin(out, &[]);
        });
        assert!(Msg::decode(&bad).is_err());
        let states = Msg::States(vec![ProviderState {
            provider: 1,
            server_hmac: [7; 32],
            muts: vec![("k".into(), (3, vec![1, 2]))],
            checkpoint: b"note".to_vec(),
            bundle: vec![9; 40],
        }])
        .encode();
        for cut in 0..states.len() {
            assert!(Msg::decode(&states[..cut]).is_err(), "cut {cut}");
        }
    }

    fn muts_strategy() -> impl Strategy<Value = Muts> {
        proptest::collection::vec(
            (
                "[a-z/é]{0,12}",
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..300),
            ),
            0..6,
        )
        .prop_map(|v| v.into_iter().map(|(k, ver, val)| (k, (ver, val))).collect())
    }

    proptest! {
        #[test]
        fn round_trips(muts in muts_strategy(), hmac: [u8; 32], some: bool) {
            let msgs = [
                Msg::Created(BrokerMutations { server_hmac: some.then_some(hmac), muts: muts.clone() }),
                Msg::Stored(BrokerMutations { server_hmac: Some(hmac), muts: muts.clone() }),
            ];
            for m in msgs {
                prop_assert_eq!(Msg::decode(&m.encode()).expect("decode"), m);
            }
            let r = Response::VlsMuts(SignerMutations { client_hmac: hmac, muts: muts.clone() });
            prop_assert_eq!(Response::decode(&r.encode()).expect("decode"), r);
        }

        #[test]
        fn quorum_messages_round_trip(
            muts in muts_strategy(),
            hmac: [u8; 32],
            n in 1usize..=MAX_PROVIDERS,
            size: u64,
            blob in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let seen = |i: usize| i.is_multiple_of(2).then_some(Seen { size, note: hmac });
            let msgs = [
                Msg::Providers(Providers {
                    server_pubkeys: vec![[3; 33]; n],
                    write_quorum: n as u64,
                }),
                Msg::States((0..n).map(|i| ProviderState {
                    provider: i as u64,
                    server_hmac: hmac,
                    muts: muts.clone(),
                    checkpoint: blob.clone(),
                    bundle: blob.clone(),
                }).collect()),
                Msg::Receipts(Receipts {
                    receipts: (0..n).map(|i| Receipt {
                        provider: i as u64,
                        server_hmac: hmac,
                        checkpoint: blob.clone(),
                        bundle: vec![],
                    }).collect(),
                    behind: (0..n as u8).filter(|i| i % 3 == 0).collect(),
                }),
            ];
            for m in msgs {
                prop_assert_eq!(Msg::decode(&m.encode()).expect("decode"), m);
            }
            let responses = [
                Response::Accounts(QuorumInit {
                    client_id: [2; 33],
                    nonce: hmac,
                    accounts: (0..n).map(|i| ProviderAccount { auth_token: hmac, seen: seen(i) }).collect(),
                }),
                Response::QuorumMuts(QuorumMutations {
                    muts,
                    puts: (0..n).map(|i| ProviderPut { client_hmac: hmac, seen: seen(i) }).collect(),
                    repairs: (0..n % 3).map(|i| Repair {
                        provider: i as u64,
                        source: 2,
                        macs: vec![hmac; i],
                    }).collect(),
                }),
            ];
            for r in responses {
                prop_assert_eq!(Response::decode(&r.encode()).expect("decode"), r);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Msg::decode(&bytes);
            let _ = Response::decode(&bytes);
        }
    }
}
