//! The lab: tools that measure the worker, kept apart from it.
//!
//! A deterministic cost simulator: simulated stock `p2pcf` clients
//! ([`client`]) follow the real client's schedule against either this worker
//! (its real HTTP layer over the in-memory R2 model, through
//! [`p2pcf_rs::testing::LocalWorker`]: the same room code the Worker runs) or
//! a model of the original JavaScript worker's R2 access pattern
//! ([`original`]), on a virtual clock (tokio's paused time) with seeded
//! randomness. [`scenario`] defines the runs and the report.
//!
//! ```text
//! cargo simulate      # = cargo run --release -p p2pcf-lab --bin simulate
//! cargo cpu           # = cargo run --release -p p2pcf-lab --bin cpu
//! ```

pub mod client;
pub mod original;
pub mod relay_cost;
pub mod scenario;

use p2pcf_rs::edge::HttpRequest;
use p2pcf_rs::store::memory::Stats;
use p2pcf_rs::testing::{LocalWorker, SimPlatform};
use serde_json::Value;

/// This worker, as the simulation drives it.
pub type Ours<'a> = LocalWorker<'a, SimPlatform>;

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
