//! The room rules, with no wire format and no storage: who is in a room and
//! until when ([`room`]), the messages held for members with their byte caps
//! and expiry ([`mailbox`]), when to poll next ([`hints`]) and the abuse
//! limits ([`limits`]); and publish/subscribe among sockets for y-webrtc
//! ([`topics`]).

pub mod hints;
pub mod limits;
pub mod mailbox;
pub mod room;
pub mod topics;
