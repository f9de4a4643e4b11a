//! The R2 host: a room kept in R2 objects and changed by optimistic
//! read-modify-write. One request's budget of operations, failures and time
//! ([`Attempts`], [`RetryPolicy`]), the etag-conditional put loop that merges
//! onto whatever another writer stored ([`update`]), the writer's own outbox
//! ([`R2Room::write_outbox`]) and concurrent outbox reads within a byte budget.
//! R2 takes one write per second per key; the loop waits that out.

use std::future::Future;
use std::task::Poll;

use crate::domain::{Base64, ContextId, DeleteKey, RoomId, SessionId, DELETE_KEY_BYTES};
use crate::engine::hints::{self, Hint, PollSettings};
use crate::engine::limits::Limits;
use crate::engine::room::{
    Arrival, Claim, Entry, IndexChange, Member, Outbox, Outboxes, ReadOrder, Room,
};
use crate::error::Error;
use crate::platform::{join_all, Platform};
use crate::store::{Counting, Object, Precondition, PutOutcome, Store, StoreError};

/// A request waits out a busy key's cool-down at most this often; then it
/// puts and lets R2's answer decide (a key written every second would
/// otherwise keep it waiting to the end of its budget).
const MAX_COOLDOWNS: u32 = 2;
/// Most outboxes a renewal reads to fold other due entries in.
pub const MAX_FOLD_READS: usize = 16;

/// How hard a request tries before answering 503, by what it has to land.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Most R2 operations one request may make (Workers free plan: 50 subrequests).
    pub max_ops: u32,
    /// Failed R2 calls (errors, not conflicts) one request tolerates.
    pub max_failures: u32,
    /// A poll: nothing to land, answer soon. ms.
    pub read_budget_ms: u64,
    /// A poll that registers or renews its caller: the write is a bonus. ms.
    pub poll_write_budget_ms: u64,
    /// A publish by a caller already in the room (heartbeat, packages, `d`):
    /// it blocks the stock client's polling, and the next poll renews the
    /// entry anyway, so it is short: a quarter of the entry's time left,
    /// between these two bounds. ms.
    pub write_budget_ms: u64,
    pub write_budget_max_ms: u64,
    /// A publish by a caller not in the room yet (a join): it waits its turn
    /// on the index in a join storm (one write per second). ms.
    pub join_budget_ms: u64,
    /// A leave (sent as the page closes). ms.
    pub leave_budget_ms: u64,
    /// R2 refuses a second write to a key within this interval, ms.
    pub write_interval_ms: u64,
    /// Base of the backoff after an R2 failure (doubles per failure), ms.
    pub failure_backoff_ms: u64,
    /// Jitter added to waits on a busy key, ms.
    pub jitter_ms: u64,
    /// `Retry-After` sent with a 503, s.
    pub retry_after_s: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_ops: 45,
            max_failures: 3,
            read_budget_ms: 5_000,
            poll_write_budget_ms: 3_000,
            write_budget_ms: 3_000,
            write_budget_max_ms: 8_000,
            join_budget_ms: 60_000,
            leave_budget_ms: 10_000,
            write_interval_ms: 1000,
            failure_backoff_ms: 200,
            jitter_ms: 250,
            retry_after_s: 2,
        }
    }
}

/// Where a protocol keeps a room in R2: its index at `<prefix>/<room>` and
/// each member's outbox at `<prefix>/<room>/c/<member>`.
#[derive(Clone, Debug)]
pub struct Keys {
    index: String,
    /// Member ids base64url-encoded in keys (p2pcf context ids may hold any
    /// character; relay ids are base64url already).
    encode: bool,
}

impl Keys {
    pub fn new(prefix: &str, room: &RoomId, encode: bool) -> Self {
        Self {
            index: format!("{prefix}/{room}"),
            encode,
        }
    }

    pub fn index(&self) -> &str {
        &self.index
    }

    pub fn outbox(&self, context: &ContextId) -> String {
        if self.encode {
            let encoded = Base64::UrlSafeNoPad.encode(context.as_str().as_bytes());
            format!("{}/c/{encoded}", self.index)
        } else {
            format!("{}/c/{context}", self.index)
        }
    }
}

/// One request's hold on one room kept in R2: where its objects are, what
/// the request may spend, and the room's size limits. The adapters run the
/// engine's rules through it.
pub struct R2Room<'a, S, P> {
    pub store: &'a Counting<'a, S>,
    pub platform: &'a P,
    pub policy: &'a RetryPolicy,
    pub keys: Keys,
    pub max_room_bytes: usize,
    pub max_peers: usize,
}

/// How many outboxes a poll reads and decodes.
#[derive(Clone, Copy, Debug)]
pub struct Reads {
    /// Most outboxes read.
    pub max: usize,
    /// Most bytes decoded past the first `sure` outboxes.
    pub decode_bytes: usize,
    /// Outboxes always decoded, whatever their size.
    pub sure: usize,
}

/// What an answer is built from besides the index: the outboxes read for
/// the caller and when to poll next.
pub struct Look {
    pub now: u64,
    pub outboxes: Outboxes,
    pub hint: Hint,
    /// The outboxes needed but left unread (over budget, or failed), in
    /// the order read: the first is where the caller's next poll starts,
    /// if it sends it back. (One that does not exist is not among them.)
    pub unread: Vec<ContextId>,
}

impl<'a, S: Store, P: Platform> R2Room<'a, S, P> {
    /// The room at `keys`, under the deployment's room limits.
    pub fn new(
        store: &'a Counting<'a, S>,
        platform: &'a P,
        policy: &'a RetryPolicy,
        keys: Keys,
        limits: &Limits,
    ) -> Self {
        Self {
            store,
            platform,
            policy,
            keys,
            max_room_bytes: limits.max_room_bytes,
            max_peers: limits.max_peers,
        }
    }

    /// A budget of `budget_ms` for this request; a 503 says `stored`.
    pub fn attempts(&self, budget_ms: u64, stored: &'static str) -> Attempts<'a, P> {
        Attempts::new(self.platform, self.policy, budget_ms, stored)
    }

    /// Reads the index.
    pub async fn read(&self, attempts: &mut Attempts<'_, P>) -> Result<Option<Object>, Error> {
        read_with(self.store, attempts, self.keys.index()).await
    }

    /// Reads the index and `context`'s outbox at once.
    pub async fn read_with_outbox(
        &self,
        attempts: &mut Attempts<'_, P>,
        context: &ContextId,
    ) -> Result<(Option<Object>, Option<Object>), Error> {
        let own = self.keys.outbox(context);
        read_index_and_outbox(self.store, attempts, self.keys.index(), &own).await
    }

    /// [`update`] of the index, within the room's size limit.
    pub async fn update<D: Member>(
        &self,
        attempts: &mut Attempts<'_, P>,
        current: Option<Object>,
        apply: impl FnMut(&mut Room<D>, u64) -> Result<bool, Error>,
    ) -> Result<Room<D>, Error> {
        let (key, max) = (self.keys.index(), self.max_room_bytes);
        let mut apply = apply;
        update(self.store, attempts, key, current, max, &mut apply).await
    }

    /// Applies `claim` to the index (see [`apply_claim`]) and writes it when
    /// the engine says so; `check` runs first on every version read.
    pub async fn claim<D: Member>(
        &self,
        attempts: &mut Attempts<'_, P>,
        current: Option<Object>,
        claim: &Claim<'_, D>,
        arrival: Arrival<'_>,
        mut check: impl FnMut(&Room<D>, u64) -> Result<(), Error>,
    ) -> Result<Room<D>, Error> {
        let mut apply = apply_claim(claim, arrival, self.max_peers, self.platform);
        self.update(attempts, current, |r, now| {
            check(r, now)?;
            apply(r, now)
        })
        .await
    }

    /// A leave: `remove` takes the caller's entry out (`Ok(false)`: it was
    /// not there). Returns the members left.
    pub async fn leave<D: Member>(
        &self,
        stored: &'static str,
        remove: impl FnMut(&mut Room<D>, u64) -> Result<bool, Error>,
    ) -> Result<usize, Error> {
        let mut attempts = self.attempts(self.policy.leave_budget_ms, stored);
        let current = self.read(&mut attempts).await?;
        let left = self.update(&mut attempts, current, remove).await?;
        Ok(left.live_count(self.platform.now_ms()))
    }

    /// A poll's renewal of its caller's entry (or its registration, where
    /// the claim may join), as the engine decides ([`Arrival::Poll`]), on
    /// the budget of a renewal (`renewal_attempts`; a registration gets
    /// the poll's write budget). In the same write, `before` changes the
    /// room first (and says whether that alone needs a write); `after` sees
    /// whether it is written.
    pub async fn renew<D: Member>(
        &self,
        current: Option<Object>,
        claim: &Claim<'_, D>,
        own: Option<&Entry<D>>,
        mut before: impl FnMut(&mut Room<D>, u64) -> Result<bool, Error>,
        mut after: impl FnMut(&mut Room<D>, u64, bool),
    ) -> Result<Room<D>, Error> {
        let now = self.platform.now_ms();
        let mut attempts = match own {
            Some(e) => renewal_attempts(self.platform, self.policy, e, now),
            None => self.attempts(self.policy.poll_write_budget_ms, ""),
        };
        let mut apply = apply_claim(claim, Arrival::Poll, self.max_peers, self.platform);
        self.update(&mut attempts, current, |r, now| {
            let changed = before(r, now)?;
            let write = apply(r, now)? || changed;
            after(r, now, write);
            Ok(write)
        })
        .await
    }

    /// Reads what the caller's answer needs besides the index: the outboxes
    /// where messages for it can wait, in `order`, as `reads` and the
    /// request's operations allow, and the polling hint from all it read.
    /// An outbox that cannot be read only delays its messages to a later
    /// poll; one left unread (past the reads or the decode budget) makes
    /// the hint fast, as a fresh message would.
    pub async fn look<D: Member>(
        &self,
        index: &Room<D>,
        context: &ContextId,
        session: Option<&SessionId>,
        reads: Reads,
        order: ReadOrder<'_>,
        poll: &PollSettings,
    ) -> Look {
        // One instant for the whole answer: the outboxes read are those needed then.
        let now = self.platform.now_ms();
        let budget = self
            .policy
            .max_ops
            .saturating_sub(self.store.counts().total());
        let limit = reads.max.min(budget as usize);
        // A rotation moves on by no more than one poll reads.
        let order = match order {
            ReadOrder::EachSecond(step) => ReadOrder::EachSecond(step.min(limit)),
            from => from,
        };
        let mut wanted = index.outboxes_to_read(context, session, now, usize::MAX, order);
        let past_limit = wanted.split_off(limit.min(wanted.len()));
        let key = |k: &ContextId| self.keys.outbox(k);
        let (outboxes, mut unread) = read_outboxes_within(self.store, key, wanted, reads).await;
        unread.extend(past_limit);
        let mut situation = index.situation(context, session, &outboxes, poll.fast_window_ms, now);
        situation.packages_for_caller += unread.len();
        Look {
            now,
            hint: hints::hint(&situation, poll),
            outboxes,
            unread,
        }
    }

    /// Reads these outboxes' stamps, for [`Room::fold`] (one that cannot
    /// be read or decoded is left out).
    pub async fn read_stamps(&self, wanted: Vec<ContextId>) -> Outboxes {
        let keys: Vec<String> = wanted.iter().map(|k| self.keys.outbox(k)).collect();
        let reads = join_all(keys.iter().map(|key| self.store.get(key)).collect()).await;
        let stamp = |read: Result<Option<Object>, StoreError>| {
            Outbox::decode_stamp(&read.ok().flatten()?.body)
        };
        wanted
            .into_iter()
            .zip(reads)
            .filter_map(|(k, read)| Some((k, stamp(read)?)))
            .collect()
    }

    /// `write_outbox` of `context`'s outbox.
    pub async fn write_outbox<T>(
        &self,
        attempts: &mut Attempts<'_, P>,
        context: &ContextId,
        current: Option<Object>,
        mut build: impl FnMut(Option<&Object>, u64) -> Result<(Outbox, T), Error>,
    ) -> Result<T, Error> {
        let key = self.keys.outbox(context);
        let mut built = None;
        let mut build = |held: Option<&Object>, now| {
            let (outbox, result) = build(held, now)?;
            built = Some(result);
            Ok(outbox)
        };
        write_outbox(self.store, attempts, &key, current, &mut build).await?;
        // Set: the write succeeded, so the last `build` did.
        built.ok_or(Error::Unreadable { retry_after_s: 1 })
    }
}

/// Reads outboxes concurrently, decoding the first `reads.sure` and then, in order,
/// those that keep the bytes decoded within `reads.decode_bytes`: decoding
/// is what a poll's CPU goes on. Returns the outboxes and, in order, those
/// left undecoded.
async fn read_outboxes_within<S: Store>(
    store: &Counting<'_, S>,
    key: impl Fn(&ContextId) -> String,
    wanted: Vec<ContextId>,
    reads: Reads,
) -> (Outboxes, Vec<ContextId>) {
    let keys: Vec<String> = wanted.iter().map(key).collect();
    let reads_done = join_all(keys.iter().map(|key| store.get(key)).collect()).await;
    let mut outboxes = Outboxes::new();
    let (mut decoded, mut taken, mut undecoded) = (0usize, 0usize, Vec::new());
    for (context, read) in wanted.into_iter().zip(reads_done) {
        let object = match read {
            Ok(Some(object)) => object,
            Ok(None) => continue,
            Err(_) => {
                undecoded.push(context);
                continue;
            }
        };
        if taken >= reads.sure && decoded + object.body.len() > reads.decode_bytes {
            undecoded.push(context);
            continue;
        }
        decoded += object.body.len();
        taken += 1;
        if let Some(outbox) = Outbox::decode(&object.body) {
            outboxes.insert(context, outbox);
        }
    }
    (outboxes, undecoded)
}

/// The budget of a renewal of `entry` by one of its polls (either protocol).
/// Not yet urgent, it uses an idle moment of the index key:
/// one put if nobody wrote in the last two seconds, no wait, no retry (joins
/// get the key first; the next poll tries again). Close to the expiry it may
/// take longer: the alternative is dropping out.
fn renewal_attempts<'a, P: Platform, D: Member>(
    platform: &'a P,
    policy: &'a RetryPolicy,
    entry: &Entry<D>,
    now: u64,
) -> Attempts<'a, P> {
    if !entry.renewal_urgent(now) {
        return Attempts::new(platform, policy, policy.poll_write_budget_ms, "").politely();
    }
    let budget = entry
        .expires_ms
        .saturating_sub(now)
        .saturating_sub(1000)
        .clamp(policy.poll_write_budget_ms, policy.write_budget_max_ms);
    Attempts::new(platform, policy, budget, "")
}

/// Reads a room's index and the caller's outbox at once (a failed read is
/// retried on its own).
async fn read_index_and_outbox<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    attempts: &mut Attempts<'_, P>,
    index_key: &str,
    own_key: &str,
) -> Result<(Option<Object>, Option<Object>), Error> {
    attempts.check(store, 2)?;
    let (index, own) = join_pair(store.get(index_key), store.get(own_key)).await;
    let index = match index {
        Ok(index) => index,
        Err(_) => read_with(store, attempts, index_key).await?,
    };
    let own = match own {
        Ok(own) => own,
        Err(_) => read_with(store, attempts, own_key).await?,
    };
    Ok((index, own))
}

/// A new member secret from the platform's CSPRNG.
pub fn new_delete_key<P: Platform>(platform: &P) -> DeleteKey {
    let mut bytes = [0u8; DELETE_KEY_BYTES];
    platform.fill_random(&mut bytes);
    DeleteKey::from_random(&bytes)
}

/// The change [`update`] makes for a claim: apply it, write if the room says so.
pub fn apply_claim<'a, D: Member, P: Platform>(
    claim: &'a Claim<'a, D>,
    arrival: Arrival<'a>,
    max_peers: usize,
    platform: &'a P,
) -> impl FnMut(&mut Room<D>, u64) -> Result<bool, Error> + 'a {
    move |room, now| {
        let change = room.apply(claim, arrival, now, max_peers, || new_delete_key(platform))?;
        Ok(change == IndexChange::Write)
    }
}

/// Writes the caller's outbox, built by `build` from the version held (and
/// rebuilt from the one read after a conflict: only this caller writes it,
/// but two of its requests may be in flight at once, and neither may undo
/// the other). Returns what `build` gave besides the outbox.
///
/// `build` is a `dyn` (as `update`'s `apply` is) so that this loop is in
/// the wasm once rather than once per caller.
async fn write_outbox<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    attempts: &mut Attempts<'_, P>,
    key: &str,
    mut current: Option<Object>,
    build: &mut BuildOutbox<'_>,
) -> Result<(), Error> {
    loop {
        let outbox = build(current.as_ref(), attempts.platform.now_ms())?;
        let body = outbox.encode();
        attempts.check(store, 1)?;
        let precondition = current.as_ref().map_or(Precondition::Absent, |o| {
            Precondition::EtagMatches(o.etag.clone())
        });
        match store.put(key, body, precondition).await {
            Ok(PutOutcome::Stored { .. }) => return Ok(()),
            Ok(PutOutcome::PreconditionFailed) => current = read_with(store, attempts, key).await?,
            Err(StoreError::RateLimited) => {
                attempts.wait(attempts.policy.write_interval_ms).await;
                current = read_with(store, attempts, key).await?;
            }
            Err(StoreError::Unavailable(_)) => attempts.failed().await?,
        }
    }
}

/// Tracks one request's remaining budget of operations, failures and time,
/// and what a 503 would have to say was stored.
pub struct Attempts<'a, P> {
    pub platform: &'a P,
    pub policy: &'a RetryPolicy,
    deadline_ms: u64,
    failures: u32,
    /// Puts lost to other writers.
    losses: u32,
    /// The etag whose cool-down this request already waited out (see [`update`]).
    waited_for: Option<String>,
    /// Cool-downs waited out (see [`update`]).
    cooldowns: u32,
    /// See [`Attempts::politely`].
    polite: bool,
    /// What a 503 says was stored so far.
    pub stored: &'static str,
}

impl<'a, P: Platform> Attempts<'a, P> {
    pub fn new(
        platform: &'a P,
        policy: &'a RetryPolicy,
        budget_ms: u64,
        stored: &'static str,
    ) -> Self {
        Self {
            platform,
            policy,
            deadline_ms: platform.now_ms().saturating_add(budget_ms),
            failures: 0,
            losses: 0,
            waited_for: None,
            cooldowns: 0,
            polite: false,
            stored,
        }
    }

    /// A write that yields: it puts only while the key is idle, once.
    pub fn politely(mut self) -> Self {
        self.polite = true;
        self
    }

    /// The same budget, cut to `ms` from now.
    pub fn within(mut self, ms: u64) -> Self {
        self.deadline_ms = self
            .deadline_ms
            .min(self.platform.now_ms().saturating_add(ms));
        self
    }

    fn busy(&self) -> Error {
        Error::Busy {
            retry_after_s: self.policy.retry_after_s,
            stored: self.stored,
        }
    }

    /// Fails with 503 when another `ops` operations or the time would go over budget.
    pub fn check<S>(&self, store: &Counting<'_, S>, ops: u32) -> Result<(), Error> {
        if store.counts().total() + ops > self.policy.max_ops
            || self.platform.now_ms() >= self.deadline_ms
        {
            Err(self.busy())
        } else {
            Ok(())
        }
    }

    /// Sleeps `floor_ms` plus jitter, but never past the deadline.
    async fn wait(&mut self, floor_ms: u64) {
        let wait = floor_ms + self.platform.random_below(self.policy.jitter_ms.max(1));
        let left = self.deadline_ms.saturating_sub(self.platform.now_ms());
        self.platform.sleep(wait.min(left)).await;
    }

    /// A put lost to another writer: wait a random share of a window that
    /// doubles from one write interval up to four, so that a crowd of
    /// joiners spreads out instead of spending its operations in lock step.
    async fn contended(&mut self) {
        self.losses += 1;
        let window = (self.policy.write_interval_ms << (self.losses - 1).min(2)).max(2);
        let wait = window / 2 + self.platform.random_below(window / 2);
        let left = self.deadline_ms.saturating_sub(self.platform.now_ms());
        self.platform.sleep(wait.min(left)).await;
    }

    /// An R2 call failed: back off exponentially (full jitter), or give up
    /// after `max_failures`, so a request spends little while R2 is down.
    async fn failed(&mut self) -> Result<(), Error> {
        self.failures += 1;
        if self.failures >= self.policy.max_failures {
            return Err(self.busy());
        }
        let window = self.policy.failure_backoff_ms << self.failures.min(6);
        let wait = window / 2 + self.platform.random_below(window / 2 + 1);
        let left = self.deadline_ms.saturating_sub(self.platform.now_ms());
        self.platform.sleep(wait.min(left)).await;
        Ok(())
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
            Err(StoreError::RateLimited | StoreError::Unavailable(_)) => attempts.failed().await?,
        }
    }
}

/// A change to a room read at an instant: whether it must be written.
pub type Apply<'f, D> = dyn FnMut(&mut Room<D>, u64) -> Result<bool, Error> + 'f;

/// An outbox built from the version held, at an instant.
type BuildOutbox<'f> = dyn FnMut(Option<&Object>, u64) -> Result<Outbox, Error> + 'f;

/// Read-modify-write of a room with an etag-conditional put.
///
/// `apply` changes the room and says whether it must be written (`Ok(false)`:
/// nothing to store). It is re-run on a fresh read after every conflict, so
/// concurrent writers never overwrite each other. When the version held was
/// uploaded less than `write_interval_ms` ago, R2 would refuse the put (429):
/// the request waits out the rest of the interval and reads again, once per
/// version and at most `MAX_COOLDOWNS` times (so a clock that trails R2's
/// costs at most one interval each), then lets R2's answer decide. A document this build cannot read is never
/// written over. Returns the room as stored (or as read, when nothing was written).
/// `apply` is a `dyn` so that this loop is in the wasm once per member
/// type rather than once per caller.
pub async fn update<S: Store, P: Platform, D: Member>(
    store: &Counting<'_, S>,
    attempts: &mut Attempts<'_, P>,
    key: &str,
    mut current: Option<Object>,
    max_bytes: usize,
    apply: &mut Apply<'_, D>,
) -> Result<Room<D>, Error> {
    let policy = attempts.policy;
    loop {
        let now = attempts.platform.now_ms();
        let mut room = decode(current.as_ref())?;
        if !apply(&mut room, now)? {
            return Ok(room);
        }
        if let Some(held) = &current {
            let idle_since = held.uploaded_ms + 2 * policy.write_interval_ms;
            if attempts.polite && now < idle_since {
                return Err(attempts.busy());
            }
            let hot_for = (held.uploaded_ms + policy.write_interval_ms)
                .saturating_sub(now)
                .min(policy.write_interval_ms);
            if hot_for > 0
                && attempts.waited_for.as_ref() != Some(&held.etag)
                && attempts.cooldowns < MAX_COOLDOWNS
            {
                attempts.waited_for = Some(held.etag.clone());
                attempts.cooldowns += 1;
                attempts.check(store, 2)?;
                attempts.wait(hot_for).await;
                current = read_with(store, attempts, key).await?;
                continue;
            }
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
            // Someone else wrote first (or R2 says the key is busy): back
            // off, read their version and merge onto it.
            Ok(PutOutcome::PreconditionFailed) | Err(StoreError::RateLimited)
                if attempts.polite =>
            {
                return Err(attempts.busy())
            }
            Ok(PutOutcome::PreconditionFailed) | Err(StoreError::RateLimited) => {
                attempts.contended().await;
                current = read_with(store, attempts, key).await?;
            }
            Err(StoreError::Unavailable(_)) => attempts.failed().await?,
        }
    }
}

/// The room in a stored index: absent is an empty room; unreadable is a 503.
pub fn decode<D: Member>(object: Option<&Object>) -> Result<Room<D>, Error> {
    match object {
        None => Ok(Room::new()),
        Some(o) => Room::decode(&o.body).map_err(|_| Error::Unreadable { retry_after_s: 60 }),
    }
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
