//! The relay API, v1 (`POST /relay/v1`): signalling for any WebRTC library
//! on the same room engine as p2pcf. Its bodies ([`parse`](mod@parse)), its join,
//! send, poll and leave on R2 ([`adapter`]); on a room's Durable Object, the
//! same calls ([`object`]) and the same JSON pushed over a WebSocket
//! ([`socket`]).

pub mod adapter;
pub mod object;
pub mod parse;
pub mod socket;

pub use adapter::handle;
pub use parse::{parse, RelayRequest};
