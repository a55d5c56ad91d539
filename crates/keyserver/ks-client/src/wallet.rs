//! The token wallet (keyserver.md §5, §6.1): blinded requests kept until
//! the issuer answers, finished tokens checked under the keyserver's
//! verified issuer key before they are kept, and spending that loses no
//! token: a token leaves the wallet only when a call it paid for
//! succeeded, or when the server says it is spent or invalid.

use ks_core::b64;
use ks_core::capabilities::Capabilities;
use ks_core::lcj::Value;
use ks_core::token::{challenge_digest, IssuerKey, OsRng, Pending, Token, TokenResponse};
use sha2::{Digest, Sha256};

use crate::store::{WalletBatch, WalletChange};
use crate::{bad, now, random, Client, ClientError};

/// The most tokens requested at once (the issuer's limit per call).
pub const MAX_REQUEST: usize = 4096;

/// A token request file's contents (`ks-cli tokens request`).
#[derive(Clone, Debug)]
pub struct TokenRequests {
    /// Pairs the issuer's answer with the secrets kept here.
    pub batch: String,
    /// b64 TokenRequests, for `keyserverd tokens sign` or
    /// `POST /admin/tokens/issue`.
    pub requests: Vec<String>,
}

/// What the verified Capabilities say about tokens.
struct Issuer {
    /// SHA-256 of the deployment's TokenChallenge.
    digest: [u8; 32],
    /// TKNPUBKEY.
    current: IssuerKey,
    /// TKNACCEPTED (b64 key ids).
    accepted: Vec<String>,
}

impl Client {
    /// The verified Capabilities (fetched and checked once per client).
    fn verified_capabilities(&mut self) -> Result<Capabilities, ClientError> {
        match &self.capabilities {
            Some(c) => Ok(c.capabilities.clone()),
            None => Ok(self.capabilities()?.capabilities),
        }
    }

    /// The deployment's challenge digest and its current issuer key, from
    /// verified Capabilities; `None` when tokens are disabled.
    fn issuer(&mut self) -> Result<Option<Issuer>, ClientError> {
        let caps = self.verified_capabilities()?;
        if caps.tokens == "disabled" {
            return Ok(None);
        }
        if caps.tokens != "required" {
            return Err(bad(format!("TOKENS is {:?}", caps.tokens)));
        }
        let spki = b64::decode(&caps.tkn_pub_key).ok_or_else(|| bad("TKNPUBKEY is not base64"))?;
        let key = IssuerKey::from_spki(&spki).map_err(|e| bad(format!("TKNPUBKEY: {e}")))?;
        let issuer_name = caps
            .domains
            .first()
            .ok_or_else(|| bad("Capabilities list no domain"))?;
        Ok(Some(Issuer {
            digest: challenge_digest(issuer_name, &caps.origin),
            current: key,
            accepted: caps.tkn_accepted,
        }))
    }

    /// Blinds `count` fresh tokens for the keyserver's verified issuer key
    /// and keeps their secrets; the requests go to the issuer.
    pub fn request_tokens(&mut self, count: usize) -> Result<TokenRequests, ClientError> {
        if count == 0 || count > MAX_REQUEST {
            return Err(ClientError::Usage(format!(
                "request 1 to {MAX_REQUEST} tokens at a time"
            )));
        }
        let Issuer {
            digest,
            current: key,
            ..
        } = self
            .issuer()?
            .ok_or_else(|| ClientError::Usage("this keyserver has tokens disabled".into()))?;
        let mut requests = Vec::with_capacity(count);
        let mut pending = Vec::with_capacity(count);
        for _ in 0..count {
            let (request, p) = key
                .blind(&digest, random(), &mut OsRng)
                .map_err(|e| ClientError::Storage(format!("blinding: {e}")))?;
            requests.push(b64::encode(&request.to_bytes()));
            pending.push(b64::encode(&p.to_bytes()));
        }
        let mut h = Sha256::new();
        for r in &requests {
            h.update(r.as_bytes());
        }
        let batch = hex::encode(&h.finalize()[..8]);
        let record = WalletBatch {
            created: now(),
            key: b64::encode(key.spki()),
            pending,
        };
        self.wallet_change(WalletChange {
            put_batch: Some((&batch, &record)),
            ..Default::default()
        })?;
        self.batches.insert(batch.clone(), record);
        Ok(TokenRequests { batch, requests })
    }

    /// Takes the issuer's answer: `{"Batch", "TokenResponses"}` (to a
    /// request made here; without `Batch`, the newest one), or finished
    /// tokens `{"Tokens"}` (`keyserverd tokens mint`). Every token must
    /// verify under an issuer key the keyserver's verified Capabilities
    /// accept, or nothing is kept. Returns how many were added.
    pub fn finalize_tokens(&mut self, answer: &serde_json::Value) -> Result<usize, ClientError> {
        let Issuer {
            digest,
            current,
            accepted,
        } = self
            .issuer()?
            .ok_or_else(|| ClientError::Usage("this keyserver has tokens disabled".into()))?;
        let strings = |member: &str| -> Result<Option<Vec<String>>, ClientError> {
            match answer.get(member) {
                None => Ok(None),
                Some(v) => v
                    .as_array()
                    .ok_or_else(|| bad(format!("{member} is not a list")))?
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| bad(format!("{member}: not a string")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
            }
        };
        let mut tokens = Vec::new();
        let mut done_batch = None;
        if let Some(finished) = strings("Tokens")? {
            for (i, s) in finished.iter().enumerate() {
                let t = Token::from_b64(s).map_err(|e| bad(format!("token {i}: {e}")))?;
                t.verify(&digest, std::slice::from_ref(&current))
                    .map_err(|e| bad(format!("token {i}: {e}")))?;
                tokens.push(t.to_b64());
            }
        } else {
            let responses = strings("TokenResponses")?
                .ok_or_else(|| bad("neither TokenResponses nor Tokens"))?;
            let id = match answer.get("Batch").and_then(|b| b.as_str()) {
                Some(id) => id.to_string(),
                None => self
                    .batches
                    .iter()
                    .max_by_key(|(_, b)| b.created)
                    .map(|(id, _)| id.clone())
                    .ok_or_else(|| ClientError::NotFound("no pending token request".into()))?,
            };
            let batch = self.batches.get(&id).ok_or_else(|| {
                ClientError::NotFound(format!("no pending token request {id} here"))
            })?;
            if responses.len() != batch.pending.len() {
                return Err(bad(format!(
                    "{} responses for {} requests",
                    responses.len(),
                    batch.pending.len()
                )));
            }
            let spki = b64::decode(&batch.key).ok_or_else(|| bad("stored key"))?;
            let key = IssuerKey::from_spki(&spki).map_err(|e| bad(e.to_string()))?;
            // The key the requests were blinded for must still be accepted.
            if !accepted.contains(&b64::encode(key.key_id())) {
                return Err(bad(
                    "the requests' issuer key is no longer accepted by the keyserver",
                ));
            }
            for (i, (r, p)) in responses.iter().zip(&batch.pending).enumerate() {
                let response = b64::decode(r)
                    .ok_or_else(|| bad(format!("response {i}: not base64")))
                    .and_then(|b| {
                        TokenResponse::parse(&b).map_err(|e| bad(format!("response {i}: {e}")))
                    })?;
                let pending = b64::decode(p)
                    .and_then(|b| Pending::parse(&b).ok())
                    .ok_or_else(|| ClientError::Storage("a pending token is corrupt".into()))?;
                let token = key
                    .finalize(&digest, &pending, &response)
                    .map_err(|e| bad(format!("response {i}: {e}")))?;
                tokens.push(token.to_b64());
            }
            done_batch = Some(id);
        }
        self.wallet_change(WalletChange {
            add: &tokens,
            drop_batch: done_batch.as_deref(),
            ..Default::default()
        })?;
        if let Some(id) = &done_batch {
            self.batches.remove(id);
        }
        let added = tokens.len();
        self.tokens.extend(tokens);
        Ok(added)
    }

    /// Tokens in the wallet.
    pub fn token_balance(&self) -> usize {
        self.tokens.len()
    }

    /// Token request batches awaiting the issuer.
    pub fn pending_token_requests(&self) -> usize {
        self.batches.values().map(|b| b.pending.len()).sum()
    }

    fn wallet_change(&self, c: WalletChange<'_>) -> Result<(), ClientError> {
        match &self.file {
            Some(f) => f.wallet(c),
            None => Ok(()),
        }
    }

    /// Calls a paid method with `price` tokens in `member` (`Token`: one
    /// string; `Tokens`: a list), or with none when tokens are disabled.
    /// Tokens leave the wallet when the call succeeds, or when the server
    /// calls them spent or invalid (then the next ones are tried); any
    /// other failure keeps them, since the server spends nothing then.
    pub(crate) fn paid_call(
        &mut self,
        method: &str,
        params: Vec<(&str, Value)>,
        member: &str,
        price: usize,
    ) -> Result<Value, ClientError> {
        if self.issuer()?.is_none() {
            return self.call(method, object_of(params));
        }
        loop {
            if self.tokens.len() < price {
                return Err(ClientError::PaymentRequired {
                    needed: price,
                    have: self.tokens.len(),
                });
            }
            let paying: Vec<String> = self.tokens.iter().take(price).cloned().collect();
            let mut members = params.clone();
            members.push((
                member,
                if member == "Token" {
                    Value::String(paying[0].clone())
                } else {
                    Value::Array(paying.iter().cloned().map(Value::String).collect())
                },
            ));
            let result = self.call(method, object_of(members));
            // What left the wallet: all of the call's tokens on success;
            // the one named by `data.index` when the server calls it spent
            // or invalid (the call spent nothing else); none otherwise.
            let (gone, retry): (Vec<String>, bool) = match &result {
                Ok(_) => (paying, false),
                Err(ClientError::Rpc {
                    code: -32003 | -32002,
                    index,
                    ..
                }) => {
                    let i = index.map_or(0, |i| i as usize);
                    let Some(t) = paying.get(i) else {
                        return result;
                    };
                    (vec![t.clone()], true)
                }
                Err(_) => (Vec::new(), false),
            };
            if !gone.is_empty() {
                self.wallet_change(WalletChange {
                    remove: &gone,
                    ..Default::default()
                })?;
                for t in &gone {
                    self.tokens.remove(t);
                }
            }
            if !retry {
                return result;
            }
        }
    }
}

fn object_of(members: Vec<(&str, Value)>) -> Value {
    Value::Object(
        members
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}
