//! Where rooms are kept. Today R2 ([`r2`]): each request reads the room,
//! applies the engine's rules and writes back with an etag-conditional put.
//! Tomorrow a Durable Object per room holds the same rules in memory.

pub mod r2;
