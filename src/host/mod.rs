//! Where rooms are kept, each host running the engine's rules: R2
//! ([`r2`]), where each request reads the room, applies the rules and writes
//! back with an etag-conditional put; and one authority per room that holds
//! it in memory and pushes ([`live`], run by a Durable Object).

pub mod live;
pub mod r2;
