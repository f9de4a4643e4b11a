//! Test harness: the worker's HTTP layer over the in-memory R2 model, on a
//! virtual clock (tokio's paused time), with seeded randomness.
#![allow(dead_code)]

pub mod relay;

use p2pcf_rs::config::Config;
use p2pcf_rs::edge::{HttpRequest, HttpResponse, Outcome};
use p2pcf_rs::platform::Platform;
use p2pcf_rs::testing::LocalWorker;
use serde_json::{json, Value};

pub use p2pcf_rs::testing::{SimPlatform, EPOCH_MS};

pub struct Harness {
    pub platform: &'static SimPlatform,
    /// The worker over the in-memory R2 model (`worker.store` is the model).
    pub worker: LocalWorker<'static, SimPlatform>,
}

pub struct Reply {
    pub status: u16,
    /// The JSON body without its `hint` (kept apart in `hint`).
    pub body: Value,
    pub hint: Value,
    pub text: String,
    pub response: HttpResponse,
    pub outcome: Outcome,
}

impl Harness {
    /// Must run inside a paused tokio runtime (`#[tokio::test(start_paused = true)]`).
    pub fn new() -> Self {
        Self::with_config(Config::default(), 10)
    }

    pub fn with_config(config: Config, latency_ms: u64) -> Self {
        let platform: &'static SimPlatform = Box::leak(Box::new(SimPlatform::new(7)));
        Self {
            platform,
            worker: LocalWorker::with_config(platform, config, latency_ms),
        }
    }

    /// A harness whose worker has these `[vars]` (and secrets), which must all be valid.
    pub fn with_vars(vars: &[(&str, &str)], latency_ms: u64) -> Self {
        let config = Config::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        });
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        Self::with_config(config, latency_ms)
    }

    pub fn now(&self) -> u64 {
        self.platform.now_ms()
    }

    pub async fn request(&self, req: HttpRequest) -> Reply {
        let (response, outcome) = self.worker.serve(&req).await;
        let text = String::from_utf8_lossy(&response.body).into_owned();
        let mut body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let hint = body
            .as_object_mut()
            .and_then(|o| o.remove("hint"))
            .unwrap_or(Value::Null);
        Reply {
            status: response.status,
            body,
            hint,
            text,
            response,
            outcome,
        }
    }

    pub async fn post(&self, body: &Value) -> Reply {
        self.request(post(body)).await
    }

    pub async fn leave(&self, body: &Value) -> Reply {
        let mut req = post(body);
        req.headers
            .push(("X-Worker-Method".into(), "DELETE".into()));
        self.request(req).await
    }
}

pub fn post(body: &Value) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        url: String::new(),
        headers: vec![("Content-Type".into(), "application/json ".into())],
        body: serde_json::to_vec(body).unwrap(),
    }
}

/// A valid 44-character base64 DTLS fingerprint.
pub const FINGERPRINT: &str = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=";

/// A simulated stock client: its context, session and the bodies it sends.
#[derive(Clone)]
pub struct Peer {
    pub room: String,
    pub context: String,
    pub session: String,
    pub joined_at: u64,
    pub dk: Option<String>,
}

impl Peer {
    pub fn new(room: &str, n: usize) -> Self {
        Self {
            room: room.into(),
            context: format!("ctx-{n}"),
            session: format!("session-{n}"),
            joined_at: EPOCH_MS + n as u64,
            dk: None,
        }
    }

    pub fn d(&self) -> Value {
        json!([
            self.session,
            format!("client-{}", self.context),
            false,
            FINGERPRINT,
            self.joined_at,
            ["203.0.113.7"]
        ])
    }

    /// First poll: no `d`.
    pub fn first_poll(&self) -> Value {
        json!({"r": self.room, "k": self.context})
    }

    /// A read with `d` but no `p`.
    pub fn poll(&self, t: u64) -> Value {
        json!({"r": self.room, "k": self.context, "d": self.d(), "t": t, "x": 120000})
    }

    /// A write: `d` and `p`.
    pub fn publish(&self, t: u64, packages: Value) -> Value {
        json!({"r": self.room, "k": self.context, "d": self.d(), "t": t, "x": 120000, "p": packages})
    }

    pub fn leave_body(&self, t: u64) -> Value {
        json!({"r": self.room, "k": self.context, "d": self.d(), "t": t, "x": 120000, "dk": self.dk})
    }

    /// A package from this peer to `to`, shaped like the stock client's.
    pub fn package_to(&self, to: &Peer, sent_at: u64) -> Value {
        json!([
            to.session,
            self.session,
            null,
            null,
            null,
            "ufrag",
            "pwd",
            sent_at,
            ["candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"]
        ])
    }
}

/// Session ids listed in a poll response's `ps`.
pub fn sessions(body: &Value) -> Vec<String> {
    let mut s: Vec<String> = body["ps"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p[0].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    s.sort();
    s
}
