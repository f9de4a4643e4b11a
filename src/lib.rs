//! p2pcf-rs: WebRTC signalling as a Cloudflare Worker. It serves the stock
//! `p2pcf` client and a relay API for any WebRTC library, keeps rooms in R2
//! and mints short-lived TURN credentials.
//!
//! The folders are the architecture, lowest layer first; a module imports
//! only from its own layer or lower ones (`tests/architecture.rs` checks it):
//!
//! * [`error`], [`platform`], [`vec_map`], [`json`]: the one error type;
//!   clock, timers, randomness; the small sorted map rooms are kept in; the
//!   JSON reader every stored format and request body is read with (and,
//!   wasm only, `runtime_error`: a runtime error's text);
//! * [`domain`]: the ids and values every part shares, valid by construction;
//! * [`store`]: get and conditional put, on R2 or in memory;
//! * [`engine`]: the room rules (members, expiry, messages, hints, limits),
//!   with no wire format and no storage;
//! * [`config`]: every setting, from `[vars]` and secrets;
//! * [`host`]: where a room is kept and changed: R2, or held in memory by
//!   one authority that pushes (a Durable Object);
//! * [`wire`]: the protocols (p2pcf, relay, y-webrtc), each parse → engine → render;
//! * [`edge`]: routing, CORS, origin rules and quotas, TURN, the status page;
//! * `worker_entry`, `object_exports`, `room_object`, `topic_object`,
//!   `peer_object` and `socket_object` (wasm only): the only code that
//!   touches the Workers runtime (the fetch handler; the objects' exports;
//!   the relay room's Durable Object; a y-webrtc namespace's; a PeerJS
//!   key's; what the socket-holding objects share);
//!   [`testing`] (native only): the worker over the in-memory store on a
//!   virtual clock, for `tests/` and `lab/`.

pub mod config;
pub mod domain;
pub mod edge;
pub mod engine;
pub mod error;
pub mod host;
pub mod json;
pub mod platform;
pub mod store;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod vec_map;
pub mod wire;

#[cfg(target_arch = "wasm32")]
#[macro_use]
mod object_exports;
#[cfg(target_arch = "wasm32")]
mod peer_object;
#[cfg(target_arch = "wasm32")]
mod room_object;
#[cfg(target_arch = "wasm32")]
mod runtime_error;
#[cfg(target_arch = "wasm32")]
mod socket_object;
#[cfg(target_arch = "wasm32")]
mod topic_object;
#[cfg(target_arch = "wasm32")]
mod worker_entry;

/// Talc instead of the standard library's dlmalloc: smaller wasm and faster.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
