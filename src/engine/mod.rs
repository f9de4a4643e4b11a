//! The room rules, with no wire format and no storage: who is in a room and
//! until when ([`room`]), the messages held for members with their byte caps
//! and expiry ([`mailbox`]), when to poll next ([`hints`]) and the abuse
//! limits ([`limits`]); publish/subscribe among sockets for y-webrtc
//! ([`topics`]); peers found by id for PeerJS ([`directory`]).

pub mod directory;
pub mod hints;
pub mod limits;
pub mod mailbox;
pub mod room;
pub mod topics;

/// A socket, as the place that holds it numbers it.
pub type SocketId = u64;
