//! The edge: what a request meets before and after the wire protocols.
//! Routing ([`serve`](mod@serve)), CORS and the mapping of errors to responses
//! ([`responses`]), origin rules, quotas and counters ([`access`]), who may use a room ([`rooms`]),
//! `GET /turn` ([`turn`]), the status page ([`status`]) and what an isolate
//! keeps between requests ([`isolate`]).

pub mod access;
pub mod isolate;
pub mod responses;
pub mod rooms;
pub mod serve;
pub mod status;
pub mod turn;

pub use isolate::{Isolate, Outcome};
pub use responses::{error_response, HttpRequest, HttpResponse};
pub use serve::{serve, Services};
