//! Signed Capabilities (keyserver.md §3.7): what a server offers, signed
//! by the key the chain says is current at SIGNINGPOS, so a client never
//! takes URLs, token keys or methods on the server's unsigned word.

use crate::lcj_record;

lcj_record! {
    /// LIMITS.
    pub struct Limits {
        /// Entries per FetchHashChain reply.
        max_chunk: u64 = "MAXCHUNK",
        /// Stored KeyInits per SIGKEY.
        max_key_inits: u64 = "MAXKEYINITS",
        /// KeyInits per AddKeyInit call.
        max_key_inits_per_call: u64 = "MAXKEYINITSPERCALL",
        /// Largest request body.
        max_request_bytes: u64 = "MAXREQUESTBYTES",
    }
}

lcj_record! {
    /// PRICES in tokens (0 when tokens are disabled).
    pub struct Prices {
        /// Per KeyInit.
        add_key_init: u64 = "ADDKEYINIT",
        /// Per CreateUID.
        create_uid: u64 = "CREATEUID",
        /// Per UpdateUID.
        update_uid: u64 = "UPDATEUID",
    }
}

lcj_record! {
    /// CAPABILITIES.
    pub struct Capabilities {
        /// Served domains.
        domains: Vec<String> = "DOMAINS",
        /// The latest entry at signing (b64(153)).
        key_hash_chain_entry: String = "KEYHASHCHAINENTRY",
        /// Its position.
        key_hash_chain_pos: u64 = "KEYHASHCHAINPOS",
        /// Checkpoint and tile base URLs.
        key_hash_chain_uris: Vec<String> = "KEYHASHCHAINURIS",
        /// Equal to DOMAINS in v1.
        key_init_repository_uris: Vec<String> = "KEYINITREPOSITORYURIS",
        /// JSON-RPC URLs.
        key_repository_uris: Vec<String> = "KEYREPOSITORYURIS",
        /// `keyserver@<primary domain>`.
        keyserver_identity: String = "KEYSERVERIDENTITY",
        /// LIMITS.
        limits: Limits = "LIMITS",
        /// Methods served.
        methods: Vec<String> = "METHODS",
        /// The log origin.
        origin: String = "ORIGIN",
        /// PRICES.
        prices: Prices = "PRICES",
        /// Position of the keyserver UID whose SIGKEY signs this.
        signing_pos: u64 = "SIGNINGPOS",
        /// [that key] (b64(32)).
        sig_pub_keys: Vec<String> = "SIGPUBKEYS",
        /// When signed.
        timestamp: u64 = "TIMESTAMP",
        /// Redeemable token_key_ids (b64).
        tkn_accepted: Vec<String> = "TKNACCEPTED",
        /// The current token issuer SPKI (b64), or "".
        tkn_pub_key: String = "TKNPUBKEY",
        /// `required` or `disabled`.
        tokens: String = "TOKENS",
        /// "1.0".
        version: String = "VERSION",
        /// Witness vkeys (informative only).
        witnesses: Vec<String> = "WITNESSES",
    }
}

lcj_record! {
    /// The signed object FetchCapabilities returns.
    pub struct SignedCapabilities {
        /// The capabilities.
        capabilities: Capabilities = "CAPABILITIES",
        /// signer(SIGNINGPOS) over `capabilities`.
        signature: String = "SIGNATURE",
    }
}

/// The methods of v1 (§2.2), in sorted order as METHODS carries them.
pub const METHODS: &[&str] = &[
    "KeyInitRepository.AddKeyInit",
    "KeyInitRepository.FetchKeyInit",
    "KeyInitRepository.FlushKeyInit",
    "KeyRepository.Capabilities",
    "KeyRepository.CreateUID",
    "KeyRepository.FetchHashChain",
    "KeyRepository.FetchLastHashChain",
    "KeyRepository.FetchUID",
    "KeyRepository.LookupUID",
    "KeyRepository.UpdateUID",
];
