//! Driving a real `statechaind` over HTTP with hand-built, signed requests
//! (the attacker's and the honest owner's view of §3).
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use lk_testkit::process::workspace_binary;
use lk_testkit::statechaind::Statechaind;
use secp256k1::PublicKey;
use serde_json::{json, Value};
use statechain_client::requests;
use statechain_core::auth::{self, Op};
use statechain_core::scalar::{point, Scalar};

/// A reply: status, body, `LK-Replay`.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub replay: bool,
}

pub struct Http {
    pub url: String,
    agent: ureq::Agent,
}

impl Http {
    pub fn new(url: &str) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Http {
            url: url.to_string(),
            agent,
        }
    }

    fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Resp {
        Self::read(r).expect("request")
    }

    /// The reply, or the transport error (a server that died mid-request).
    fn read(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Resp, String> {
        let mut r = r.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let replay = r.headers().get("LK-Replay").is_some_and(|v| v == "1");
        let text = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok(Resp {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            replay,
        })
    }

    pub fn get(&self, path: &str) -> Resp {
        Self::finish(self.agent.get(&format!("{}{path}", self.url)).call())
    }

    /// `GET` that tolerates a server that is not up yet.
    pub fn try_get(&self, path: &str) -> Option<Resp> {
        Self::read(self.agent.get(&format!("{}{path}", self.url)).call()).ok()
    }

    /// `POST` raw bytes with a bearer token.
    pub fn post_bearer(&self, path: &str, token: &str, body: &[u8]) -> Resp {
        Self::finish(
            self.agent
                .post(&format!("{}{path}", self.url))
                .header("Authorization", &format!("Bearer {token}"))
                .send(body),
        )
    }

    pub fn post_raw(&self, path: &str, body: &[u8]) -> Resp {
        Self::finish(
            self.agent
                .post(&format!("{}{path}", self.url))
                .header("Content-Type", "application/json")
                .send(body),
        )
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_raw(path, body.to_string().as_bytes())
    }

    /// The send result without expecting success (a crashed server).
    pub fn try_post(&self, path: &str, body: &Value) -> Result<Resp, String> {
        Self::read(
            self.agent
                .post(&format!("{}{path}", self.url))
                .header("Content-Type", "application/json")
                .send(body.to_string().as_bytes()),
        )
    }
}

pub fn scalar(b: u8) -> Scalar {
    Scalar::from_bytes(&[b; 32]).expect("scalar")
}

pub fn h<const N: usize>(v: &Value) -> [u8; N] {
    hex::decode(v.as_str().expect("hex field"))
        .expect("hex")
        .try_into()
        .expect("length")
}

/// An owner of one coin.
pub struct Owner {
    pub se_id: [u8; 32],
    pub a: Scalar,
    pub o: Scalar,
    pub id: [u8; 16],
    pub head: [u8; 32],
    pub server_key: Option<PublicKey>,
}

impl Owner {
    pub fn auth(&self, digest: &[u8; 32]) -> Value {
        requests::auth_json(&self.a, digest, &[0; 32])
    }

    pub fn digest(&self, op: Op, fields: &[&[u8]]) -> [u8; 32] {
        auth::digest(&self.se_id, op, &self.id, &self.head, fields)
    }

    /// Opens a coin with a fresh free token.
    pub fn deposit(http: &Http, se_id: [u8; 32], seed: u8) -> Owner {
        let token = http.post("/v1/tokens", &json!({}));
        assert_eq!(token.status, 201, "{:?}", token.body);
        let token_id: [u8; 16] = h(&token.body["token_id"]);
        let a = scalar(seed);
        let mut owner = Owner {
            se_id,
            a,
            o: scalar(seed.wrapping_add(1).max(1)),
            id: [0; 16],
            head: [0; 32],
            server_key: None,
        };
        let r = http.post(
            "/v1/deposit/init",
            &requests::deposit(&se_id, &token_id, &owner.a, &[0; 32]),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
        owner.id = h(&r.body["statechain_id"]);
        owner.head = h(&r.body["entry"]["leaf_hash"]);
        owner.server_key = point(&h::<33>(&r.body["server_pubkey"]));
        owner
    }

    pub fn sign_first_body(&self, com: [u8; 32]) -> Value {
        requests::sign_first(&self.se_id, &self.id, &self.head, &com, &self.a, &[0; 32])
    }

    pub fn sign_second_body(&self, r_s: &PublicKey, com: [u8; 32], c: &Scalar) -> Value {
        requests::sign_second(
            &self.se_id,
            &self.id,
            &self.head,
            r_s,
            &com,
            c,
            &self.a,
            &[0; 32],
        )
    }

    /// `sign/first` then `sign/second` with challenge `c`: `(R_s, s_s, count)`.
    pub fn sign(&mut self, http: &Http, com: [u8; 32], c: &Scalar) -> (PublicKey, Scalar, u32) {
        let r = http.post("/v1/sign/first", &self.sign_first_body(com));
        assert_eq!(r.status, 200, "{:?}", r.body);
        let r_s = point(&h::<33>(&r.body["server_nonce"])).expect("point");
        let r = http.post("/v1/sign/second", &self.sign_second_body(&r_s, com, c));
        assert_eq!(r.status, 200, "{:?}", r.body);
        self.head = h(&r.body["entry"]["leaf_hash"]);
        let s_s = Scalar::from_bytes(&h(&r.body["partial_sig"])).expect("scalar");
        (r_s, s_s, r.body["count"].as_u64().expect("count") as u32)
    }

    pub fn state(&self, http: &Http) -> Value {
        let r = http.get(&format!("/v1/statechain/{}", hex::encode(self.id)));
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }
}

pub fn se_id(http: &Http) -> [u8; 32] {
    h(&http.get("/v1/info").body["se_id"])
}

pub fn start(dir: &Path, env: &[(&str, &str)]) -> Statechaind {
    Statechaind::start(&workspace_binary("statechaind"), dir, &[], env)
}

pub fn start_with(dir: &Path, extra: &[&str]) -> Statechaind {
    Statechaind::start(&workspace_binary("statechaind"), dir, extra, &[])
}
