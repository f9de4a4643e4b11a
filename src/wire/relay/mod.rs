//! The relay API, v1 (`POST /relay/v1`): signalling for any WebRTC library
//! on the same room engine as p2pcf. Its bodies ([`parse`](mod@parse)) and its join,
//! send, poll and leave ([`adapter`]).

pub mod adapter;
pub mod parse;

pub use adapter::handle;
pub use parse::{parse, RelayRequest};
