//! p2pcf-rs: a WebRTC signalling server for the `p2pcf` browser client that
//! runs as a Cloudflare Worker and keeps its state in R2.
//!
//! Everything except [`worker_entry`] is plain Rust with no dependency on the
//! Workers runtime (a "sans-IO" core), so it is tested natively:
//!
//! * [`protocol`] parses and validates request bodies into typed requests;
//! * [`room`] is the state of one room and the rules that change it;
//! * [`store`] is the storage trait with R2 and in-memory implementations;
//! * [`service`] runs a request against a store (read, merge, conditional write, retry);
//! * [`hints`] says when a client should poll next (fast / slow / idle);
//! * [`relay`] is the relay API for any WebRTC library, on the same room engine;
//! * [`quota`] is the optional per-origin access control;
//! * [`turn`] mints short-lived TURN credentials (`GET /turn`);
//! * [`http`] maps methods, headers and errors to responses (CORS everywhere);
//! * [`error`] is the one error type, each variant an HTTP status and a short reason;
//! * [`testing`] (native only) is the worker over the in-memory R2 model on a
//!   virtual clock, for the tests in `tests/` and the lab in `lab/`.

pub mod config;
pub mod error;
pub mod hints;
pub mod http;
pub mod limits;
pub mod mailbox;
pub mod platform;
pub mod protocol;
pub mod quota;
pub mod relay;
pub mod room;
pub mod service;
pub mod status;
pub mod store;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod turn;

#[cfg(target_arch = "wasm32")]
mod worker_entry;
