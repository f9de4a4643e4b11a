//! Runs one signalling request against a [`Store`]: read the room index
//! (and the outboxes a view needs), apply the change, write conditionally,
//! retry on conflict or 429.
//!
//! Cost per request (R2 operations; see ARCHITECTURE.md for a whole join):
//! * poll in a steady room: 1 get (the index);
//! * poll while packages can be waiting: 1 get + 1 per outbox to read;
//! * heartbeat: 2 gets (index, own outbox) + 1 put (index);
//! * new packages within join windows: 2 gets + 1 put (own outbox only);
//! * join, `d` change, leave: 2 gets + 1 put (index), + 1 put with packages;
//! * plus one get and one put for each conflict or 429 met on the way.

use std::future::Future;
use std::task::Poll;

use base64::Engine as _;

use crate::config::Config;
use crate::error::Error;
use crate::hints::{self, Hint, PollSettings};
use crate::platform::{join_all, Platform};
use crate::protocol::{ContextId, LastWrite, Publish, Request, RoomId, SessionId};
use crate::room::{DeleteKey, IndexChange, Outbox, Outboxes, Room, DELETE_KEY_BYTES};
use crate::store::{Counting, Object, Precondition, PutOutcome, Store, StoreError};

/// The R2 key of a room's index.
pub fn room_key(room: &RoomId) -> String {
    format!("rooms/{room}")
}

/// The R2 key of a context's outbox. Context ids may hold any character, so
/// they are base64url-encoded.
pub fn outbox_key(room: &RoomId, context: &ContextId) -> String {
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(context.as_str());
    format!("rooms/{room}/c/{encoded}")
}

/// Most outboxes one request reads (each is a subrequest; the free plan
/// allows 50 per request).
pub const MAX_OUTBOX_READS: usize = 20;

/// How hard a request tries to land its write before answering 503.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Most R2 operations one request may make (Workers free plan: 50 subrequests).
    pub max_ops: u32,
    /// Wall-clock time after which no new attempt starts, ms.
    pub budget_ms: u64,
    /// The same for a poll, which only reads, ms.
    pub read_budget_ms: u64,
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
            read_budget_ms: 5_000,
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
    /// When the caller should poll next (not for a leave).
    pub hint: Option<Hint>,
}

/// Runs `request`. `store` counts the operations made.
pub async fn handle<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    config: &Config,
    request: &Request,
) -> Result<Reply, Error> {
    let poll = &config.poll;
    let max_room_bytes = config.limits.max_room_bytes;
    match request {
        Request::Poll {
            room,
            context,
            session,
            last_write,
        } => {
            // A read has no write to land: answer 503 soon rather than keep the client waiting.
            let mut attempts = Attempts::new(platform, policy).within(policy.read_budget_ms);
            let index = read_with(store, &mut attempts, &room_key(room)).await?;
            let index = decode(index.as_ref());
            let view = View {
                room,
                context,
                session: session.as_ref(),
                dk: None,
                last_write: last_write.as_ref(),
            };
            respond(store, &mut attempts, poll, &index, view).await
        }
        Request::Publish(publish) => publish_entry(store, platform, policy, config, publish).await,
        Request::Leave {
            room,
            context,
            session,
            delete_key,
        } => {
            let mut attempts = Attempts::new(platform, policy);
            let key = room_key(room);
            let current = read_with(store, &mut attempts, &key).await?;
            let index = update(
                store,
                &mut attempts,
                &key,
                current,
                max_room_bytes,
                |r, now| {
                    if r.remove(context, session.as_ref(), delete_key, now) {
                        Ok(true)
                    } else {
                        Err(Error::NotFound)
                    }
                },
            )
            .await?;
            Ok(Reply {
                body: b"{}".to_vec(),
                peers: index.live_count(platform.now_ms(), &Outboxes::new()),
                hint: None,
            })
        }
    }
}

/// Whose view a response is.
struct View<'a> {
    room: &'a RoomId,
    context: &'a ContextId,
    session: Option<&'a SessionId>,
    dk: Option<&'a DeleteKey>,
    /// The caller's last write as it reports it (for the hint's expiry bound).
    last_write: Option<&'a LastWrite>,
}

/// Reads the outboxes the caller's view needs and builds the response.
async fn respond<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    attempts: &mut Attempts<'_, P>,
    poll: &PollSettings,
    index: &Room,
    who: View<'_>,
) -> Result<Reply, Error> {
    // One instant for the whole view: the outboxes read are those needed then.
    let now = attempts.platform.now_ms();
    // Never fail here: a write may already have landed. Read what the
    // budget allows; packages left unread come with the next poll.
    let budget = attempts
        .policy
        .max_ops
        .saturating_sub(store.counts().total());
    let limit = MAX_OUTBOX_READS.min(budget as usize);
    let wanted = index.outboxes_to_read(who.context, who.session, now, limit);
    let keys: Vec<String> = wanted.iter().map(|k| outbox_key(who.room, k)).collect();
    let reads = join_all(keys.iter().map(|key| store.get(key)).collect()).await;
    let mut outboxes = Outboxes::new();
    for (context, read) in wanted.into_iter().zip(reads) {
        // One failed outbox read must not fail the poll: its packages come next time.
        if let Some(outbox) = read.ok().flatten().and_then(|o| Outbox::decode(&o.body)) {
            outboxes.insert(context, outbox);
        }
    }
    let mut view = index.view(who.context, who.session, who.dk, &outboxes, now);
    let situation = index.situation(
        who.context,
        who.session,
        who.last_write,
        &outboxes,
        poll.fast_window_ms,
        now,
    );
    let hint = hints::hint(&situation, poll);
    view.hint = Some(hint);
    Ok(Reply {
        body: to_json(&view),
        peers: index.live_count(now, &outboxes),
        hint: Some(hint),
    })
}

async fn publish_entry<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    config: &Config,
    publish: &Publish,
) -> Result<Reply, Error> {
    let limits = &config.limits;
    let mut attempts = Attempts::new(platform, policy);
    let index_key = room_key(&publish.room);
    let own_key = outbox_key(&publish.room, &publish.context);
    attempts.check(store, 2)?;
    let (index, own) = join_pair(store.get(&index_key), store.get(&own_key)).await;
    let index = match index {
        Ok(index) => index,
        Err(_) => read_with(store, &mut attempts, &index_key).await?,
    };
    let own = match own {
        Ok(own) => own,
        Err(_) => read_with(store, &mut attempts, &own_key).await?,
    };

    // New packages go to the caller's outbox first, so that whoever learns
    // of them from the index finds them there.
    let stored = own
        .as_ref()
        .and_then(|o| Outbox::decode(&o.body))
        .filter(|o| o.session == publish.data.session);
    let outbox_changed = match &stored {
        Some(o) => o.p != publish.packages,
        None => !publish.packages.is_empty(),
    };
    if outbox_changed {
        write_outbox(store, &mut attempts, &own_key, own, publish).await?;
    }

    let new_key = || {
        let mut bytes = [0u8; DELETE_KEY_BYTES];
        platform.fill_random(&mut bytes);
        DeleteKey::from_random(&bytes)
    };
    let index = update(
        store,
        &mut attempts,
        &index_key,
        index,
        limits.max_room_bytes,
        |r, now| {
            let change =
                r.apply_publish(publish, outbox_changed, now, limits.max_peers, new_key)?;
            Ok(change == IndexChange::Write)
        },
    )
    .await?;
    let dk = index.entry(&publish.context).map(|e| e.dk.clone());
    let last_write = LastWrite {
        t: publish.t.clone(),
        ttl_ms: publish.ttl_ms,
    };
    let view = View {
        room: &publish.room,
        context: &publish.context,
        session: Some(&publish.data.session),
        dk: dk.as_ref(),
        last_write: Some(&last_write),
    };
    respond(store, &mut attempts, &config.poll, &index, view).await
}

/// Writes the caller's outbox. Only this context writes it; a conflict
/// means a duplicate of this tab (same context id) wrote too: last one wins.
async fn write_outbox<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    attempts: &mut Attempts<'_, P>,
    key: &str,
    mut current: Option<Object>,
    publish: &Publish,
) -> Result<(), Error> {
    loop {
        let now = attempts.platform.now_ms();
        let outbox = Outbox {
            session: publish.data.session.clone(),
            t: publish.t.clone(),
            expires_ms: now.saturating_add(publish.ttl_ms),
            p: publish.packages.clone(),
        };
        attempts.check(store, 1)?;
        let precondition = current.as_ref().map_or(Precondition::Absent, |o| {
            Precondition::EtagMatches(o.etag.clone())
        });
        match store.put(key, outbox.encode(), precondition).await {
            Ok(PutOutcome::Stored { .. }) => return Ok(()),
            Ok(PutOutcome::PreconditionFailed) => current = read_with(store, attempts, key).await?,
            Err(StoreError::RateLimited) => {
                attempts.back_off(attempts.policy.write_interval_ms).await;
                current = read_with(store, attempts, key).await?;
            }
            Err(StoreError::Unavailable(_)) => attempts.back_off(0).await,
        }
    }
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

    /// The same budget, cut to `ms` of wall-clock time.
    fn within(mut self, ms: u64) -> Self {
        self.deadline_ms = self
            .deadline_ms
            .min(self.platform.now_ms().saturating_add(ms));
        self
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
        let window = self.policy.jitter_base_ms << self.round.min(2);
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
    attempts: &mut Attempts<'_, P>,
    key: &str,
    mut current: Option<Object>,
    max_bytes: usize,
    mut apply: impl FnMut(&mut Room, u64) -> Result<bool, Error>,
) -> Result<Room, Error> {
    let policy = attempts.policy;
    loop {
        let now = attempts.platform.now_ms();
        let mut room = decode(current.as_ref());
        if !apply(&mut room, now)? {
            return Ok(room);
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
            current = read_with(store, attempts, key).await?;
            continue;
        }
        attempts.check(store, 1)?;
        let precondition = current.as_ref().map_or(Precondition::Absent, |o| {
            Precondition::EtagMatches(o.etag.clone())
        });
        let body = room.encode();
        if body.len() > max_bytes {
            return Err(Error::PayloadTooLarge("Room too large"));
        }
        match store.put(key, body, precondition).await {
            Ok(PutOutcome::Stored { .. }) => return Ok(room),
            // Someone else wrote first: read their version and merge onto it.
            Ok(PutOutcome::PreconditionFailed) => current = read_with(store, attempts, key).await?,
            Err(StoreError::RateLimited) => {
                attempts.back_off(policy.write_interval_ms / 2).await;
                current = read_with(store, attempts, key).await?;
            }
            Err(StoreError::Unavailable(_)) => attempts.back_off(0).await,
        }
    }
}

fn decode(object: Option<&Object>) -> Room {
    object.map_or_else(Room::new, |o| Room::decode(&o.body))
}

/// Runs two futures concurrently.
async fn join_pair<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = Box::pin(a);
    let mut b = Box::pin(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    match (ra, rb) {
        (Some(a), Some(b)) => (a, b),
        _ => unreachable!("poll_fn returned Ready only with both results"),
    }
}
