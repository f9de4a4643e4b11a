//! A deterministic cost simulator (native only).
//!
//! Simulated stock `p2pcf` clients ([`client`]) follow the real client's
//! schedule against either this worker (its real HTTP layer over the
//! in-memory R2 model) or a model of the original JavaScript worker's R2
//! access pattern ([`original`]), on a virtual clock (tokio's paused time)
//! with seeded randomness. [`scenario`] defines the runs and the report.

pub mod client;
pub mod original;
pub mod scenario;

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;
use crate::http::{serve, HttpRequest, HttpResponse, Isolate, Outcome, Services};
use crate::platform::Platform;
use crate::quota::QuotaLedger;
use crate::service::RetryPolicy;
use crate::store::memory::{MemoryStore, Stats};

/// 2026-11-21T00:00:00Z: virtual time starts here.
pub const EPOCH_MS: u64 = 1_795_219_200_000;

/// A stand-in for the network: (url, bearer token, body) to (status, body).
pub type Outbound = Box<dyn Fn(&str, &str, &[u8]) -> Result<(u16, Vec<u8>), String>>;

/// Virtual clock (tokio paused time), seeded randomness (splitmix64), and
/// an optional stand-in for outbound requests.
pub struct SimPlatform {
    start: tokio::time::Instant,
    rng: Cell<u64>,
    outbound: std::cell::RefCell<Option<Outbound>>,
}

impl SimPlatform {
    /// Must be created inside a tokio runtime with paused time.
    pub fn new(seed: u64) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            rng: Cell::new(seed),
            outbound: std::cell::RefCell::new(None),
        }
    }

    /// Answers the worker's outbound requests with `f` from now on.
    pub fn set_outbound(&self, f: Outbound) {
        *self.outbound.borrow_mut() = Some(f);
    }

    pub fn next_u64(&self) -> u64 {
        let mut z = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Milliseconds since the simulation started.
    pub fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Sleeps until `elapsed_ms() == at`, if that is still ahead.
    pub async fn sleep_until(&self, at: u64) {
        let now = self.elapsed_ms();
        if at > now {
            self.sleep(at - now).await;
        }
    }
}

impl Platform for SimPlatform {
    fn now_ms(&self) -> u64 {
        EPOCH_MS + self.elapsed_ms()
    }

    fn sleep(&self, ms: u64) -> impl Future<Output = ()> {
        tokio::time::sleep(Duration::from_millis(ms))
    }

    fn fill_random(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn post_json(
        &self,
        url: &str,
        bearer: &str,
        body: &[u8],
    ) -> impl Future<Output = Result<(u16, Vec<u8>), String>> {
        let answer = match &*self.outbound.borrow() {
            Some(f) => f(url, bearer, body),
            None => Err("no network in the simulation".to_owned()),
        };
        std::future::ready(answer)
    }
}

/// A signalling server as the simulated clients see it.
#[allow(async_fn_in_trait)] // single-threaded simulation
pub trait Server {
    /// Sends one request body (`leave`: with `X-Worker-Method: DELETE`);
    /// returns the status and the JSON body (`null` when not JSON).
    async fn call(&self, body: &Value, leave: bool) -> Answer;
    /// R2 operations so far.
    fn stats(&self) -> Stats;
    fn name(&self) -> &'static str;
}

/// A server's answer to one simulated request.
pub struct Answer {
    pub status: u16,
    pub json: Value,
    /// Class A operations this request made.
    pub class_a: u32,
}

/// This worker: its real HTTP layer over the in-memory R2 model (also the
/// native tests' harness).
pub struct Ours<'a> {
    pub store: MemoryStore<&'a SimPlatform>,
    pub platform: &'a SimPlatform,
    pub config: Config,
    pub ledger: QuotaLedger,
    pub isolate: Isolate,
    pub policy: RetryPolicy,
}

impl<'a> Ours<'a> {
    pub fn new(platform: &'a SimPlatform, latency_ms: u64) -> Self {
        Self::with_config(platform, Config::default(), latency_ms)
    }

    pub fn with_config(platform: &'a SimPlatform, config: Config, latency_ms: u64) -> Self {
        Self {
            store: MemoryStore::new(platform, latency_ms),
            platform,
            config,
            ledger: QuotaLedger::default(),
            isolate: Isolate::new([7; 16]),
            policy: RetryPolicy::default(),
        }
    }

    /// Serves one request as the Worker would.
    pub async fn serve(&self, request: &HttpRequest) -> (HttpResponse, Outcome) {
        let services = Services {
            store: Some(&self.store),
            platform: self.platform,
            config: &self.config,
            ledger: &self.ledger,
            isolate: &self.isolate,
            policy: &self.policy,
            version: "sim",
        };
        serve(request, &services).await
    }
}

impl Server for Ours<'_> {
    async fn call(&self, body: &Value, leave: bool) -> Answer {
        let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        if leave {
            headers.push(("X-Worker-Method".to_owned(), "DELETE".to_owned()));
        }
        let request = HttpRequest {
            method: "POST".to_owned(),
            url: String::new(),
            headers,
            body: serde_json::to_vec(body).unwrap_or_default(),
        };
        let (response, outcome) = self.serve(&request).await;
        Answer {
            status: response.status,
            // An error's plain-text reason comes back as a JSON string.
            json: serde_json::from_slice(&response.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into())),
            class_a: outcome.ops.class_a,
        }
    }

    fn stats(&self) -> Stats {
        self.store.stats()
    }

    fn name(&self) -> &'static str {
        "p2pcf-rs"
    }
}
