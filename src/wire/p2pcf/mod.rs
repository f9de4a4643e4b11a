//! The stock `p2pcf` client's protocol: its request bodies ([`parse`], with
//! the reflexive IPs checked by `ip`) and its poll, publish and leave on the
//! room engine ([`adapter`]).

pub mod adapter;
mod ip;
pub mod parse;

pub use adapter::handle;
pub use parse::{parse_request, Request};
