//! Runs one signalling request against a [`Store`]: read the room, apply the
//! change, write it back conditionally, retry on conflict or 429.
//!
//! Cost per request (R2 operations):
//! * poll (read only): 1 get;
//! * publish / heartbeat / leave: 1 get + 1 conditional put, plus one get and
//!   one put for each conflict or 429 met on the way;
//! * a publish whose `t` is already stored: 1 get, no write.

use crate::error::Error;
use crate::platform::Platform;
use crate::protocol::{Publish, Request, RoomId};
use crate::room::{DeleteKey, Room, Upsert, DELETE_KEY_BYTES};
use crate::store::{Counting, Object, Precondition, PutOutcome, Store, StoreError};

/// The R2 key of a room's document.
pub fn room_key(room: &RoomId) -> String {
    format!("rooms/{room}")
}

/// How hard a request tries to land its write before answering 503.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Most R2 operations one request may make (Workers free plan: 50 subrequests).
    pub max_ops: u32,
    /// Wall-clock time after which no new attempt starts, ms.
    pub budget_ms: u64,
    /// R2 refuses a second write to a key within this interval, ms.
    pub write_interval_ms: u64,
    /// Base of the exponential jitter window added to every wait, ms.
    pub jitter_base_ms: u64,
    /// `Retry-After` sent with a 503, s.
    pub retry_after_s: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_ops: 45,
            budget_ms: 60_000,
            write_interval_ms: 1000,
            jitter_base_ms: 250,
            retry_after_s: 2,
        }
    }
}

/// A successful answer: the JSON body and facts for logs and tests.
#[derive(Debug)]
pub struct Reply {
    pub body: Vec<u8>,
    /// Live entries in the room after the request, the caller's included.
    pub peers: usize,
}

/// Runs `request`. `store` should be a [`Counting`] wrapper when the caller
/// wants the operation counts.
pub async fn handle<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    request: &Request,
) -> Result<Reply, Error> {
    match request {
        Request::Poll {
            room,
            context,
            session,
        } => {
            let room_state = read(store, platform, policy, &room_key(room)).await?;
            let now = platform.now_ms();
            let room_state = decode(room_state.as_ref());
            let view = room_state.view(context, session.as_ref(), None, now);
            Ok(Reply {
                body: to_json(&view),
                peers: room_state.live_count(now),
            })
        }
        Request::Publish(publish) => publish_entry(store, platform, policy, publish).await,
        Request::Leave {
            room,
            context,
            session,
            delete_key,
        } => {
            let (room_state, now) = update(store, platform, policy, &room_key(room), |r, now| {
                if r.remove(context, session.as_ref(), delete_key, now) {
                    Ok(true)
                } else {
                    Err(Error::NotFound)
                }
            })
            .await?;
            Ok(Reply {
                body: b"{}".to_vec(),
                peers: room_state.live_count(now),
            })
        }
    }
}

async fn publish_entry<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    publish: &Publish,
) -> Result<Reply, Error> {
    let new_key = || {
        let mut bytes = [0u8; DELETE_KEY_BYTES];
        platform.fill_random(&mut bytes);
        DeleteKey::from_random(&bytes)
    };
    let (room, now) = update(
        store,
        platform,
        policy,
        &room_key(&publish.room),
        |r, now| Ok(r.upsert(publish, now, new_key) == Upsert::Changed),
    )
    .await?;
    let dk = room.entry(&publish.context).map(|e| &e.dk);
    let view = room.view(&publish.context, Some(&publish.data.session), dk, now);
    Ok(Reply {
        body: to_json(&view),
        peers: room.live_count(now),
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our response types serialize infallibly (no maps with non-string keys).
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

fn busy(policy: &RetryPolicy) -> Error {
    Error::Busy {
        retry_after_s: policy.retry_after_s,
    }
}

/// Tracks one request's remaining budget of operations and time.
struct Attempts<'a, P> {
    platform: &'a P,
    policy: &'a RetryPolicy,
    deadline_ms: u64,
    round: u32,
}

impl<'a, P: Platform> Attempts<'a, P> {
    fn new(platform: &'a P, policy: &'a RetryPolicy) -> Self {
        Self {
            platform,
            policy,
            deadline_ms: platform.now_ms().saturating_add(policy.budget_ms),
            round: 0,
        }
    }

    /// Fails with 503 when another `ops` operations or the time would go over budget.
    fn check<S>(&self, store: &Counting<'_, S>, ops: u32) -> Result<(), Error> {
        if store.counts().total() + ops > self.policy.max_ops
            || self.platform.now_ms() >= self.deadline_ms
        {
            Err(busy(self.policy))
        } else {
            Ok(())
        }
    }

    /// Random wait in an exponentially growing window (full jitter).
    fn jitter(&mut self) -> u64 {
        let window = self.policy.jitter_base_ms << self.round.min(4);
        self.round += 1;
        self.platform.random_below(window)
    }

    /// Sleeps `floor_ms` plus jitter, but never past the deadline.
    async fn back_off(&mut self, floor_ms: u64) {
        let wait = floor_ms + self.jitter();
        let left = self.deadline_ms.saturating_sub(self.platform.now_ms());
        self.platform.sleep(wait.min(left)).await;
    }
}

/// A get, retried on failure within the budget.
async fn read<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    key: &str,
) -> Result<Option<Object>, Error> {
    let mut attempts = Attempts::new(platform, policy);
    read_with(store, &mut attempts, key).await
}

async fn read_with<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    attempts: &mut Attempts<'_, P>,
    key: &str,
) -> Result<Option<Object>, Error> {
    loop {
        attempts.check(store, 1)?;
        match store.get(key).await {
            Ok(object) => return Ok(object),
            Err(StoreError::RateLimited | StoreError::Unavailable(_)) => attempts.back_off(0).await,
        }
    }
}

/// Read-modify-write of a room with an etag-conditional put.
///
/// `apply` changes the room and says whether it must be written (`Ok(false)`:
/// nothing to store). It is re-run on a fresh read after every conflict, so
/// concurrent writers never overwrite each other. Before each put the request
/// waits until the current version is `write_interval_ms` old (plus jitter),
/// which is when R2 accepts the next write to the key. Returns the room as
/// stored (or as read, when nothing was written) and the time it was built at.
async fn update<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    key: &str,
    mut apply: impl FnMut(&mut Room, u64) -> Result<bool, Error>,
) -> Result<(Room, u64), Error> {
    let mut attempts = Attempts::new(platform, policy);
    let mut current = read_with(store, &mut attempts, key).await?;
    loop {
        let now = platform.now_ms();
        let mut room = decode(current.as_ref());
        if !apply(&mut room, now)? {
            return Ok((room, now));
        }
        // R2 takes the next write to a key one interval after the last one.
        // While the version we hold is younger, wait (with jitter) and read
        // again rather than spend a put that would be refused: a get costs a
        // twelfth of a put. The wait is capped at one interval, whatever the clocks say.
        let ready = current
            .as_ref()
            .map_or(0, |o| o.uploaded_ms + policy.write_interval_ms);
        let hot_for = ready.saturating_sub(now).min(policy.write_interval_ms);
        if hot_for > 0 {
            attempts.check(store, 2)?;
            attempts.back_off(hot_for).await;
            current = read_with(store, &mut attempts, key).await?;
            continue;
        }
        attempts.check(store, 1)?;
        let precondition = current.as_ref().map_or(Precondition::Absent, |o| {
            Precondition::EtagMatches(o.etag.clone())
        });
        match store.put(key, room.encode(), precondition).await {
            Ok(PutOutcome::Stored { .. }) => return Ok((room, now)),
            // Someone else wrote first: read their version and merge onto it.
            Ok(PutOutcome::PreconditionFailed) => {
                current = read_with(store, &mut attempts, key).await?
            }
            Err(StoreError::RateLimited) => {
                attempts.back_off(policy.write_interval_ms / 2).await;
                current = read_with(store, &mut attempts, key).await?;
            }
            Err(StoreError::Unavailable(_)) => attempts.back_off(0).await,
        }
    }
}

fn decode(object: Option<&Object>) -> Room {
    object.map_or_else(Room::new, |o| Room::decode(&o.body))
}
