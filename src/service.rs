//! Runs one signalling request against a [`Store`]: read the room index
//! (and the outboxes a view needs), apply the change, write conditionally,
//! retry on conflict or 429.
//!
//! Cost per request (R2 operations; see ARCHITECTURE.md for a whole join):
//! * poll in a steady room: 1 get (the index);
//! * poll while packages can be waiting: 1 get + 1 per outbox to read;
//! * poll that renews its caller (about once per lifetime after package
//!   writes) or registers it: + 1 put (index);
//! * heartbeat: 2 gets (index, own outbox) + 1 put (index);
//! * new packages within join windows: 2 gets + 1 put (own outbox only);
//! * withdrawn packages: 2 gets, no put;
//! * join, `d` change, leave: 2 gets + 1 put (index), + 1 put with packages;
//! * plus one get and one put for each conflict or 429 met on the way.

use std::future::Future;
use std::task::Poll;

use base64::Engine as _;

use crate::config::Config;
use crate::error::Error;
use crate::hints::{self, Hint, PollSettings};
use crate::mailbox::Mailbox;
use crate::platform::{join_all, Platform};
use crate::protocol::{ContextId, Presence, Publish, Request, RoomId, SessionId};
use crate::room::{
    Arrival, Claim, DeleteKey, Entry, IndexChange, Member, Outbox, Outboxes, PackageChange, Room,
    DELETE_KEY_BYTES,
};
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
pub const MAX_OUTBOX_READS: usize = 31;
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

/// A successful answer: the JSON body and facts for logs and tests.
#[derive(Debug)]
pub struct Reply {
    pub body: Vec<u8>,
    /// Live entries in the room after the request, the caller's included.
    pub peers: usize,
    /// When the caller should poll next (not for a leave).
    pub hint: Option<Hint>,
}

// What a 503 says was stored, by where the request gave up.
const NOTHING_READ: &str = "nothing was read or stored; retry";
const JOIN_NOT_STORED: &str =
    "nothing was stored; you are not in the room yet (your next poll with d adds you)";
const JOIN_PACKAGES_ONLY: &str =
    "your packages were stored, but you are not in the room yet (your next poll with d adds you)";
const ENTRY_NOT_RENEWED: &str =
    "nothing was stored; your entry stays in the room and your next poll renews it";
const PACKAGES_ONLY: &str =
    "your packages were stored; your room entry was not updated (your next poll renews it)";
const LEAVE_NOT_STORED: &str = "the leave was not stored; your entry expires on its own";

/// Runs `request`. `store` counts the operations made.
pub async fn handle<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    config: &Config,
    request: &Request,
) -> Result<Reply, Error> {
    match request {
        Request::Poll {
            room,
            context,
            presence,
        } => {
            poll(
                store,
                platform,
                policy,
                config,
                room,
                context,
                presence.as_ref(),
            )
            .await
        }
        Request::Publish(publish) => publish_entry(store, platform, policy, config, publish).await,
        Request::Leave {
            room,
            context,
            session,
            delete_key,
        } => {
            let mut attempts =
                Attempts::new(platform, policy, policy.leave_budget_ms, LEAVE_NOT_STORED);
            let key = room_key(room);
            let current = read_with(store, &mut attempts, &key).await?;
            let index: Room = update(
                store,
                &mut attempts,
                &key,
                current,
                config.limits.max_room_bytes,
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
                peers: index.live_count(platform.now_ms()),
                hint: None,
            })
        }
    }
}

/// A poll: one read of the index, plus the outboxes where packages can be
/// waiting. With `d` it may also register or renew the caller (see
/// [`Room::apply`]); that write gets a short budget and never fails the poll.
async fn poll<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    config: &Config,
    room: &RoomId,
    context: &ContextId,
    presence: Option<&Presence>,
) -> Result<Reply, Error> {
    let mut attempts = Attempts::new(platform, policy, policy.read_budget_ms, NOTHING_READ);
    let key = room_key(room);
    let object = read_with(store, &mut attempts, &key).await?;
    let mut index: Room = decode(object.as_ref())?;
    let mut dk = None;
    if let Some(presence) = presence {
        let claim = Claim::of_presence(context, presence);
        let session = &presence.data.session;
        let now = platform.now_ms();
        let own = index
            .entry(context)
            .filter(|e| e.d.session == *session && e.is_live(now));
        let registering = own.is_none();
        let own_key = own.map(|e| e.dk.clone());
        let mut writing = match own {
            Some(e) => renewal_attempts(platform, policy, e, now),
            None => Attempts::new(platform, policy, policy.poll_write_budget_ms, ""),
        };
        let limits = &config.limits;
        // A renewal also folds in the other entries that are due, from
        // their outboxes: one index write renews many.
        let mut folds = Outboxes::new();
        let mut apply_poll = apply_claim(&claim, Arrival::Poll, limits.max_peers, platform);
        let renewing = !registering && apply_poll(&mut index.clone(), now) == Ok(true);
        if renewing {
            let budget = policy.max_ops.saturating_sub(store.counts().total() + 4) as usize;
            let wanted = index.renewals_to_fold(context, now, MAX_FOLD_READS.min(budget));
            folds = read_outboxes(store, |k| outbox_key(room, k), wanted).await;
        }
        let written = update(
            store,
            &mut writing,
            &key,
            object,
            limits.max_room_bytes,
            |r, now| {
                let folded = r.fold(&folds, now);
                Ok(apply_poll(r, now)? || folded > 0)
            },
        )
        .await;
        match written {
            Ok(updated) => {
                // A new entry's key goes to the client (the stock client
                // keeps the last `dk` it was given). That includes an entry
                // that expired between the read and the write and was
                // registered anew: its old key would no longer remove it.
                let held = own_key.as_ref();
                dk = updated
                    .entry(context)
                    .filter(|e| e.d.session == *session && Some(&e.dk) != held)
                    .map(|e| e.dk.clone());
                index = updated;
            }
            Err(e @ Error::Unreadable { .. }) => return Err(e),
            // A poll stays a read: a refusal (room full, left, session in use)
            // or a busy index only means no registration this time.
            Err(_) => {}
        }
    }
    let view = View {
        room,
        context,
        session: presence.map(|p| &p.data.session),
        dk: dk.as_ref(),
    };
    respond(store, &mut attempts, &config.poll, &index, view).await
}

/// Whose view a response is.
struct View<'a> {
    room: &'a RoomId,
    context: &'a ContextId,
    session: Option<&'a SessionId>,
    dk: Option<&'a DeleteKey>,
}

/// Reads the outboxes the caller's view needs and builds the response.
/// Who is in the room comes from the index alone; an outbox that cannot be
/// read only delays its packages to a later poll.
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
    let outboxes = read_outboxes(store, |k| outbox_key(who.room, k), wanted).await;
    let mut view = index.view(who.context, who.session, who.dk, &outboxes, now);
    let situation = index.situation(
        who.context,
        who.session,
        &outboxes,
        poll.fast_window_ms,
        now,
    );
    let hint = hints::hint(&situation, poll);
    view.hint = Some(hint);
    Ok(Reply {
        body: to_json(&view),
        peers: index.live_count(now),
        hint: Some(hint),
    })
}

/// Reads outboxes concurrently; one that cannot be read or decoded is left out.
pub(crate) async fn read_outboxes<S: Store>(
    store: &Counting<'_, S>,
    key: impl Fn(&ContextId) -> String,
    wanted: Vec<ContextId>,
) -> Outboxes {
    read_outboxes_within(store, key, wanted, usize::MAX).await
}

/// [`read_outboxes`], decoding them in order only while the bytes decoded
/// stay within `max_decode_bytes` (the first always): decoding is what a
/// poll's CPU goes on. Those left undecoded are left out.
pub(crate) async fn read_outboxes_within<S: Store>(
    store: &Counting<'_, S>,
    key: impl Fn(&ContextId) -> String,
    wanted: Vec<ContextId>,
    max_decode_bytes: usize,
) -> Outboxes {
    let keys: Vec<String> = wanted.iter().map(key).collect();
    let reads = join_all(keys.iter().map(|key| store.get(key)).collect()).await;
    let mut outboxes = Outboxes::new();
    let mut decoded = 0usize;
    for (context, read) in wanted.into_iter().zip(reads) {
        let Some(object) = read.ok().flatten() else {
            continue;
        };
        if decoded > 0 && decoded + object.body.len() > max_decode_bytes {
            continue;
        }
        decoded += object.body.len();
        if let Some(outbox) = Outbox::decode(&object.body) {
            outboxes.insert(context, outbox);
        }
    }
    outboxes
}

/// The budget of a renewal of `entry` by one of its polls (either protocol).
/// Not yet urgent, it uses an idle moment of the index key:
/// one put if nobody wrote in the last two seconds, no wait, no retry (joins
/// get the key first; the next poll tries again). Close to the expiry it may
/// take longer: the alternative is dropping out.
pub(crate) fn renewal_attempts<'a, P: Platform, D: Member>(
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
pub(crate) async fn read_index_and_outbox<S: Store, P: Platform>(
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

pub(crate) fn new_delete_key<P: Platform>(platform: &P) -> DeleteKey {
    let mut bytes = [0u8; DELETE_KEY_BYTES];
    platform.fill_random(&mut bytes);
    DeleteKey::from_random(&bytes)
}

async fn publish_entry<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    config: &Config,
    publish: &Publish,
) -> Result<Reply, Error> {
    let limits = &config.limits;
    let mut attempts = Attempts::new(platform, policy, policy.join_budget_ms, JOIN_NOT_STORED);
    let index_key = room_key(&publish.room);
    let own_key = outbox_key(&publish.room, &publish.context);
    let (index, own) = read_index_and_outbox(store, &mut attempts, &index_key, &own_key).await?;
    let room = decode(index.as_ref())?;
    let claim = Claim::of_publish(publish);
    let now = platform.now_ms();
    // Refuse before anything is stored.
    room.check(&claim, now)?;
    let joining = !room.owns_live_entry(&publish.context, &publish.data.session, now);
    if !joining {
        // The caller cannot poll while this runs: a short budget, a little
        // longer when its entry has time to spare (a heartbeat leaves 30 s).
        let left = room
            .entry(&publish.context)
            .map_or(0, |e| e.expires_ms.saturating_sub(now));
        let budget = (left / 4).clamp(policy.write_budget_ms, policy.write_budget_max_ms);
        attempts = attempts.within(budget);
        attempts.stored = ENTRY_NOT_RENEWED;
    }

    let stored = own
        .as_ref()
        .and_then(|o| Outbox::decode(&o.body))
        .filter(|o| o.session == publish.data.session);
    let change = match Outbox::compare(stored.as_ref(), &publish.packages) {
        // Withdrawals skip the write only for an entry that is in the room.
        PackageChange::Withdrawn if joining => PackageChange::New,
        change => change,
    };
    let outbox = |now| Outbox {
        session: publish.data.session.clone(),
        t: publish.t.clone(),
        expires_ms: now + publish.ttl_ms,
        ttl_ms: publish.ttl_ms,
        p: room.address(&publish.packages, now),
        mail: Mailbox::default(),
    };
    // A duplicate of this tab (same context id) may have written too: last one wins.
    let outbox = |_: Option<&Object>, now| Ok((outbox(now), ()));
    // A heartbeat the index does not need yet (the stock client's comes
    // 30 s before the expiry; it may also withdraw packages older than a
    // minute): into the index if its key is idle, else into the caller's own
    // outbox, where the next renewal folds it in. Either way it is stored,
    // and a room's heartbeats never queue on the index.
    let in_window = room
        .entry(&publish.context)
        .is_some_and(|e| e.in_renewal_window(now));
    let beat = !joining
        && (change == PackageChange::Same || change == PackageChange::Withdrawn && in_window)
        && stored.as_ref().is_none_or(|o| o.t != publish.t)
        && apply_claim(&claim, arrival_same(), limits.max_peers, platform)(&mut room.clone(), now)
            == Ok(false);
    if beat {
        let mut politely = Attempts::new(platform, policy, policy.write_budget_ms, "").politely();
        let index = match update(
            store,
            &mut politely,
            &index_key,
            index,
            limits.max_room_bytes,
            apply_claim(&claim, Arrival::Beat, limits.max_peers, platform),
        )
        .await
        {
            Ok(index) => index,
            Err(Error::Busy { .. }) => {
                write_outbox(store, &mut attempts, &own_key, own, outbox).await?;
                room
            }
            Err(e) => return Err(e),
        };
        return respond_to_publish(store, &mut attempts, config, publish, &index).await;
    }
    // New packages go to the caller's outbox first, so that whoever learns
    // of them from the index finds them there.
    if change == PackageChange::New {
        write_outbox(store, &mut attempts, &own_key, own, outbox).await?;
        attempts.stored = if joining {
            JOIN_PACKAGES_ONLY
        } else {
            PACKAGES_ONLY
        };
    }

    // Only packages not handed over before may need announcing.
    let held = stored.as_ref().map_or(&[][..], |o| &o.p[..]);
    let fresh: Vec<SessionId> = publish
        .packages
        .iter()
        .filter(|p| !held.iter().any(|s| s.is(p)))
        .map(|p| p.to.clone())
        .collect();
    let arrival = Arrival::Publish {
        change,
        recipients: &fresh,
    };
    let index = update(
        store,
        &mut attempts,
        &index_key,
        index,
        limits.max_room_bytes,
        apply_claim(&claim, arrival, limits.max_peers, platform),
    )
    .await?;
    respond_to_publish(store, &mut attempts, config, publish, &index).await
}

/// The answer to a publish: the view with the caller's delete key.
async fn respond_to_publish<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    attempts: &mut Attempts<'_, P>,
    config: &Config,
    publish: &Publish,
    index: &Room,
) -> Result<Reply, Error> {
    let dk = index.entry(&publish.context).map(|e| e.dk.clone());
    let view = View {
        room: &publish.room,
        context: &publish.context,
        session: Some(&publish.data.session),
        dk: dk.as_ref(),
    };
    respond(store, attempts, &config.poll, index, view).await
}

/// The change [`update`] makes for a claim: apply it, write if the room says so.
pub(crate) fn apply_claim<'a, D: Member, P: Platform>(
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

fn arrival_same() -> Arrival<'static> {
    Arrival::Publish {
        change: PackageChange::Same,
        recipients: &[],
    }
}

/// Writes the caller's outbox, built by `build` from the version held (and
/// rebuilt from the one read after a conflict: only this caller writes it,
/// but two of its requests may be in flight at once, and neither may undo
/// the other). Returns what `build` gave besides the outbox.
pub(crate) async fn write_outbox<S: Store, P: Platform, T>(
    store: &Counting<'_, S>,
    attempts: &mut Attempts<'_, P>,
    key: &str,
    mut current: Option<Object>,
    mut build: impl FnMut(Option<&Object>, u64) -> Result<(Outbox, T), Error>,
) -> Result<T, Error> {
    loop {
        let (outbox, result) = build(current.as_ref(), attempts.platform.now_ms())?;
        let body = outbox.encode();
        attempts.check(store, 1)?;
        let precondition = current.as_ref().map_or(Precondition::Absent, |o| {
            Precondition::EtagMatches(o.etag.clone())
        });
        match store.put(key, body, precondition).await {
            Ok(PutOutcome::Stored { .. }) => return Ok(result),
            Ok(PutOutcome::PreconditionFailed) => current = read_with(store, attempts, key).await?,
            Err(StoreError::RateLimited) => {
                attempts.wait(attempts.policy.write_interval_ms).await;
                current = read_with(store, attempts, key).await?;
            }
            Err(StoreError::Unavailable(_)) => attempts.failed().await?,
        }
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our response types serialize infallibly (no maps with non-string keys).
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// Tracks one request's remaining budget of operations, failures and time,
/// and what a 503 would have to say was stored.
pub(crate) struct Attempts<'a, P> {
    platform: &'a P,
    policy: &'a RetryPolicy,
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
    pub(crate) stored: &'static str,
}

impl<'a, P: Platform> Attempts<'a, P> {
    pub(crate) fn new(
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
    pub(crate) fn politely(mut self) -> Self {
        self.polite = true;
        self
    }

    /// The same budget, cut to `ms` from now.
    fn within(mut self, ms: u64) -> Self {
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
    pub(crate) fn check<S>(&self, store: &Counting<'_, S>, ops: u32) -> Result<(), Error> {
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

pub(crate) async fn read_with<S: Store, P: Platform>(
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

/// Read-modify-write of a room with an etag-conditional put.
///
/// `apply` changes the room and says whether it must be written (`Ok(false)`:
/// nothing to store). It is re-run on a fresh read after every conflict, so
/// concurrent writers never overwrite each other. When the version held was
/// uploaded less than `write_interval_ms` ago, R2 would refuse the put (429):
/// the request waits out the rest of the interval and reads again, once per
/// version and at most [`MAX_COOLDOWNS`] times (so a clock that trails R2's
/// costs at most one interval each), then lets R2's answer decide. A document this build cannot read is never
/// written over. Returns the room as stored (or as read, when nothing was written).
pub(crate) async fn update<S: Store, P: Platform, D: Member>(
    store: &Counting<'_, S>,
    attempts: &mut Attempts<'_, P>,
    key: &str,
    mut current: Option<Object>,
    max_bytes: usize,
    mut apply: impl FnMut(&mut Room<D>, u64) -> Result<bool, Error>,
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
pub(crate) fn decode<D: Member>(object: Option<&Object>) -> Result<Room<D>, Error> {
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
