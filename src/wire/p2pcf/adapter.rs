//! The p2pcf adapter: runs the stock client's poll, publish and leave on
//! the room engine, kept in R2 (`rooms/<room>` and one outbox per context).
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

use super::parse::{Package, PeerData, PeerView, PollResponse, Presence, Publish, Request};
use crate::config::Config;
use crate::domain::{ContextId, DeleteKey, RoomId, SessionId};
use crate::engine::hints::PollSettings;
use crate::engine::mailbox::Mailbox;
use crate::engine::room::{Arrival, Claim, Member, Outbox, Outboxes, ReadOrder, Room, Sent};
use crate::error::Error;
use crate::host::r2::{
    apply_claim, decode, Attempts, Keys, R2Room, Reads, RetryPolicy, MAX_FOLD_READS,
};
use crate::platform::Platform;
use crate::store::{Counting, Object, Store};
use crate::wire::{to_json, Reply};

impl Member for PeerData {
    const HEARTBEAT_SLACK_MS: u64 = 10_000;

    fn session(&self) -> &SessionId {
        &self.session
    }
}

/// Where p2pcf keeps a room: `rooms/<room>`, and each context's outbox at
/// `rooms/<room>/c/<base64url(context)>` (context ids may hold any character).
pub fn keys(room: &RoomId) -> Keys {
    Keys::new("rooms", room, true)
}

/// Most outboxes one request reads (each is a subrequest; the free plan
/// allows 50 per request).
pub const MAX_OUTBOX_READS: usize = 31;
/// Every outbox a p2pcf poll reads is decoded (a room has at most 32 peers).
const READS: Reads = Reads {
    max: MAX_OUTBOX_READS,
    decode_bytes: usize::MAX,
    sure: MAX_OUTBOX_READS,
};
/// Each second the next block (a newcomer's polls 1-2 s apart cover a full
/// room in two or three polls).
const ORDER: ReadOrder<'static> = ReadOrder::EachSecond(MAX_OUTBOX_READS);
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
    let room = |id: &RoomId| R2Room::new(store, platform, policy, keys(id), &config.limits);
    match request {
        Request::Poll {
            room: id,
            context,
            presence,
        } => poll(&room(id), &config.poll, context, presence.as_ref()).await,
        Request::Publish(publish) => publish_entry(&room(&publish.room), config, publish).await,
        Request::Leave {
            room: id,
            context,
            session,
            delete_key,
        } => {
            let removed = |r: &mut Room<PeerData>, now| {
                if r.remove(context, session.as_ref(), delete_key, now) {
                    Ok(true)
                } else {
                    Err(Error::NotFound)
                }
            };
            let members = room(id).leave(LEAVE_NOT_STORED, removed).await?;
            Ok(Reply {
                status: 200,
                retry_after: None,
                body: b"{}".to_vec(),
                members,
                hint: None,
            })
        }
    }
}

/// A poll: one read of the index, plus the outboxes where packages can be
/// waiting. With `d` it may also register or renew the caller (see
/// [`Room::apply`]); that write gets a short budget and never fails the poll.
async fn poll<S: Store, P: Platform>(
    room: &R2Room<'_, S, P>,
    settings: &PollSettings,
    context: &ContextId,
    presence: Option<&Presence>,
) -> Result<Reply, Error> {
    let mut attempts = room.attempts(room.policy.read_budget_ms, NOTHING_READ);
    let object = room.read(&mut attempts).await?;
    let mut index: Room<PeerData> = decode(object.as_ref())?;
    let mut dk = None;
    if let Some(presence) = presence {
        (index, dk) = register_or_renew(room, index, object, context, presence).await?;
    }
    let view = View {
        context,
        session: presence.map(|p| &p.data.session),
        dk: dk.as_ref(),
    };
    respond(room, settings, &index, view).await
}

/// A poll with `d`: registers the caller if it has no entry, or renews its
/// entry when due, folding in the other entries that are due from their
/// outboxes (one index write renews many). Returns the room and, for a new
/// entry, its key. A poll stays a read: a refusal (room full, left, session
/// in use) or a busy index only means no registration this time.
async fn register_or_renew<S: Store, P: Platform>(
    room: &R2Room<'_, S, P>,
    index: Room<PeerData>,
    object: Option<Object>,
    context: &ContextId,
    presence: &Presence,
) -> Result<(Room<PeerData>, Option<DeleteKey>), Error> {
    let claim = Claim::of_presence(context, presence);
    let session = &presence.data.session;
    let now = room.platform.now_ms();
    let own = index
        .entry(context)
        .filter(|e| e.d.session == *session && e.is_live(now));
    let own_key = own.map(|e| e.dk.clone());
    let mut folds = Outboxes::new();
    let mut dry_run = apply_claim(&claim, Arrival::Poll, room.max_peers, room.platform);
    if own.is_some() && dry_run(&mut index.clone(), now) == Ok(true) {
        let used = room.store.counts().total() + 4;
        let budget = room.policy.max_ops.saturating_sub(used) as usize;
        let wanted = index.renewals_to_fold(context, now, MAX_FOLD_READS.min(budget));
        folds = room.read_stamps(wanted).await;
    }
    let fold = |r: &mut Room<PeerData>, now| Ok(r.fold(&folds, now) > 0);
    match room.renew(object, &claim, own, fold, |_, _, _| {}).await {
        Ok(updated) => {
            // A new entry's key goes to the client (the stock client keeps
            // the last `dk` it was given). That includes an entry that
            // expired between the read and the write and was registered
            // anew: its old key would no longer remove it.
            let dk = updated
                .entry(context)
                .filter(|e| e.d.session == *session && Some(&e.dk) != own_key.as_ref())
                .map(|e| e.dk.clone());
            Ok((updated, dk))
        }
        Err(e @ Error::Unreadable { .. }) => Err(e),
        Err(_) => Ok((index, None)),
    }
}

/// Whose view a response is.
struct View<'a> {
    context: &'a ContextId,
    session: Option<&'a SessionId>,
    dk: Option<&'a DeleteKey>,
}

/// Reads the outboxes the caller's view needs and builds the response.
/// Who is in the room comes from the index alone. Never fails: a write may
/// already have landed; packages left unread come with the next poll.
async fn respond<S: Store, P: Platform>(
    room: &R2Room<'_, S, P>,
    settings: &PollSettings,
    index: &Room<PeerData>,
    who: View<'_>,
) -> Result<Reply, Error> {
    let look = room
        .look(index, who.context, who.session, READS, ORDER, settings)
        .await;
    let mut view = index.view(who.context, who.session, who.dk, &look.outboxes, look.now);
    view.hint = Some(look.hint);
    Ok(Reply {
        status: 200,
        retry_after: None,
        body: to_json(&view),
        members: index.live_count(look.now),
        hint: Some(look.hint),
    })
}

/// A publish: `d`, `t`, `x` and packages. New packages go to the caller's
/// outbox first, then the index is written when the engine says so; a
/// heartbeat the index does not need yet goes where it costs least.
async fn publish_entry<S: Store, P: Platform>(
    room: &R2Room<'_, S, P>,
    config: &Config,
    publish: &Publish,
) -> Result<Reply, Error> {
    let policy = room.policy;
    let mut attempts = room.attempts(policy.join_budget_ms, JOIN_NOT_STORED);
    let (index, own) = room
        .read_with_outbox(&mut attempts, &publish.context)
        .await?;
    let current: Room<PeerData> = decode(index.as_ref())?;
    let claim = Claim::of_publish(publish);
    let now = room.platform.now_ms();
    // Refuse before anything is stored.
    current.check(&claim, now)?;
    let joining = !current.owns_live_entry(&publish.context, &publish.data.session, now);
    if !joining {
        // The caller cannot poll while this runs: a short budget, a little
        // longer when its entry has time to spare (a heartbeat leaves 30 s).
        let left = current
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
    let write = Write {
        publish,
        claim: &claim,
        current: &current,
        joining,
        change,
        stored: stored.as_ref(),
    };
    let index = if write.is_idle_heartbeat(room.max_peers, room.platform) {
        heartbeat(room, &mut attempts, &write, index, own).await?
    } else {
        write_packages(room, &mut attempts, &write, index, own).await?
    };
    let dk = index.entry(&publish.context).map(|e| e.dk.clone());
    let view = View {
        context: &publish.context,
        session: Some(&publish.data.session),
        dk: dk.as_ref(),
    };
    respond(room, &config.poll, &index, view).await
}

/// A publish, as read against what the room and the caller's outbox hold.
struct Write<'a> {
    publish: &'a Publish,
    claim: &'a Claim<'a, PeerData>,
    current: &'a Room<PeerData>,
    joining: bool,
    change: PackageChange,
    stored: Option<&'a Outbox>,
}

impl Write<'_> {
    /// A heartbeat the index does not need yet (the stock client's comes
    /// 30 s before the expiry; it may also withdraw packages older than a
    /// minute): see [`heartbeat`].
    fn is_idle_heartbeat(&self, max_peers: usize, platform: &impl Platform) -> bool {
        let now = platform.now_ms();
        let in_window = self
            .current
            .entry(&self.publish.context)
            .is_some_and(|e| e.in_renewal_window(now));
        let mut dry_run = apply_claim(self.claim, arrival_same(), max_peers, platform);
        !self.joining
            && (self.change == PackageChange::Same
                || self.change == PackageChange::Withdrawn && in_window)
            && self.stored.is_none_or(|o| o.t != self.publish.t)
            && dry_run(&mut self.current.clone(), now) == Ok(false)
    }

    /// The caller's outbox as this publish writes it at `now`.
    fn outbox(&self, now: u64) -> Outbox {
        let p = self.publish;
        Outbox {
            session: p.data.session.clone(),
            t: p.t.clone(),
            expires_ms: now + p.ttl_ms,
            ttl_ms: p.ttl_ms,
            p: self.current.address(&p.packages, now),
            mail: Mailbox::default(),
        }
    }
}

/// A heartbeat the index does not need yet goes into the index if its key
/// is idle, else into the caller's own outbox, where the next renewal folds
/// it in. Either way it is stored, and a room's heartbeats never queue on
/// the index.
async fn heartbeat<S: Store, P: Platform>(
    room: &R2Room<'_, S, P>,
    attempts: &mut Attempts<'_, P>,
    write: &Write<'_>,
    index: Option<Object>,
    own: Option<Object>,
) -> Result<Room<PeerData>, Error> {
    let publish = write.publish;
    let mut politely = room.attempts(room.policy.write_budget_ms, "").politely();
    let no_check = |_: &Room<PeerData>, _| Ok(());
    let claimed = room
        .claim(
            &mut politely,
            index,
            write.claim,
            Arrival::Heartbeat,
            no_check,
        )
        .await;
    match claimed {
        Ok(index) => Ok(index),
        Err(Error::Busy { .. }) => {
            // A duplicate of this tab (same context id) may have written too: last one wins.
            let outbox = |_: Option<&Object>, now| Ok((write.outbox(now), ()));
            room.write_outbox(attempts, &publish.context, own, outbox)
                .await?;
            Ok(write.current.clone())
        }
        Err(e) => Err(e),
    }
}

/// New packages go to the caller's outbox first, so that whoever learns of
/// them from the index finds them there; then the index, when the engine
/// says so (a join, `d` changed, announcements, an urgent renewal).
async fn write_packages<S: Store, P: Platform>(
    room: &R2Room<'_, S, P>,
    attempts: &mut Attempts<'_, P>,
    write: &Write<'_>,
    index: Option<Object>,
    own: Option<Object>,
) -> Result<Room<PeerData>, Error> {
    let publish = write.publish;
    if write.change == PackageChange::New {
        // A duplicate of this tab (same context id) may have written too: last one wins.
        let outbox = |_: Option<&Object>, now| Ok((write.outbox(now), ()));
        room.write_outbox(attempts, &publish.context, own, outbox)
            .await?;
        attempts.stored = if write.joining {
            JOIN_PACKAGES_ONLY
        } else {
            PACKAGES_ONLY
        };
    }
    // Only packages not handed over before may need announcing.
    let held = write.stored.map_or(&[][..], |o| &o.p[..]);
    let fresh: Vec<SessionId> = publish
        .packages
        .iter()
        .filter(|p| !held.iter().any(|s| s.is(p)))
        .map(|p| p.to.clone())
        .collect();
    let arrival = write.change.arrival(&fresh);
    let no_check = |_: &Room<PeerData>, _| Ok(());
    room.claim(attempts, index, write.claim, arrival, no_check)
        .await
}

fn arrival_same() -> Arrival<'static> {
    PackageChange::Same.arrival(&[])
}

impl<'a> Claim<'a, PeerData> {
    pub fn of_publish(p: &'a Publish) -> Self {
        Self {
            context: &p.context,
            data: &p.data,
            t: &p.t,
            ttl_ms: p.ttl_ms,
            may_join: true,
        }
    }

    pub fn of_presence(context: &'a ContextId, p: &'a Presence) -> Self {
        Self {
            context,
            data: &p.data,
            t: &p.t,
            ttl_ms: p.ttl_ms,
            may_join: true,
        }
    }
}

impl Sent {
    /// The same package as `package` (recipient and bytes).
    pub fn is(&self, package: &Package) -> bool {
        self.to == package.to && self.raw.get() == package.raw.get()
    }
}

impl Outbox {
    /// The publish's packages against what this outbox holds.
    pub fn compare(stored: Option<&Outbox>, packages: &[Package]) -> PackageChange {
        let held: &[Sent] = stored.map_or(&[], |o| &o.p);
        if held.len() == packages.len() && held.iter().zip(packages).all(|(s, p)| s.is(p)) {
            PackageChange::Same
        } else if packages.len() < held.len()
            && packages.iter().all(|p| held.iter().any(|s| s.is(p)))
        {
            PackageChange::Withdrawn
        } else {
            PackageChange::New
        }
    }
}

/// What a publish does to the caller's packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageChange {
    /// The same packages: a heartbeat (or a retry).
    Same,
    /// Only packages removed. The stock client withdraws a package once its
    /// peer is connected; the connected peer ignores it from then on, and
    /// nobody reads the outbox for it after the join window, so this is not
    /// written (it would be a second write per peer per join).
    Withdrawn,
    /// New packages: the outbox is written first.
    New,
}

impl PackageChange {
    /// The engine's view of a publish with this change; `fresh`: the
    /// recipients of packages not in the outbox before.
    pub fn arrival(self, fresh: &[SessionId]) -> Arrival<'_> {
        Arrival::Publish {
            recipients: if self == PackageChange::New {
                fresh
            } else {
                &[]
            },
            heartbeat: self == PackageChange::Same,
        }
    }
}

impl Room<PeerData> {
    /// Binds each package to its recipient's current context (see [`Sent`]).
    pub fn address(&self, packages: &[Package], now_ms: u64) -> Vec<Sent> {
        packages
            .iter()
            .map(|p| Sent {
                to: p.to.clone(),
                k: self.context_of(&p.to, now_ms).cloned(),
                raw: p.raw.clone(),
            })
            .collect()
    }
}

impl Room<PeerData> {
    /// The poll response for `context`: every other live peer (with the
    /// newer of its index and outbox `t`), and the packages in the outboxes
    /// at hand addressed to `session` *and* bound to `context`, given only
    /// to the live entry holding both. `dk` is included when given.
    pub fn view<'a>(
        &'a self,
        context: &'a ContextId,
        session: Option<&SessionId>,
        dk: Option<&'a DeleteKey>,
        outboxes: &'a Outboxes,
        now_ms: u64,
    ) -> PollResponse<'a> {
        let others = || {
            self.entries_live(now_ms)
                .filter(move |(k, _)| *k != context)
                .map(|(k, e)| (e, outboxes.get(k).filter(|o| o.session == *e.d.session())))
        };
        PollResponse {
            ps: others()
                .map(|(e, outbox)| PeerView {
                    data: &e.d,
                    t: match outbox {
                        Some(o) if o.t.as_f64() > e.t.as_f64() => &o.t,
                        _ => &e.t,
                    },
                })
                .collect(),
            pk: match session.filter(|s| self.owns_live_entry(context, s, now_ms)) {
                Some(me) => others()
                    .filter_map(|(_, outbox)| outbox)
                    .flat_map(|o| o.p.iter())
                    .filter(|p| p.to == *me && p.k.as_ref() == Some(context))
                    .map(|p| &p.raw)
                    .collect(),
                None => Vec::new(),
            },
            dk: dk.map(DeleteKey::as_str),
            hint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The room engine's rules, driven as the stock client drives them.
    use super::*;
    use crate::domain::{DeleteKeyInput, DELETE_KEY_BYTES};
    use crate::engine::room::{IndexChange, Unreadable, DEPARTURE_MEMORY_MS};
    use crate::wire::p2pcf::parse::parse_request;
    use serde_json::json;

    type Room = crate::engine::room::Room<PeerData>;

    const NOW: u64 = 1_795_219_200_000;
    const TTL: u64 = 120_000;

    fn body(k: &str, session: &str, t: u64, p: Option<serde_json::Value>) -> Request {
        let mut body = json!({"r": "room", "k": k, "d": [session, "client", false, "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=", 1, []], "t": t, "x": TTL});
        if let Some(p) = p {
            body["p"] = p;
        }
        parse_request(
            &serde_json::to_vec(&body).unwrap(),
            false,
            &crate::engine::limits::Limits::default(),
        )
        .unwrap()
    }

    fn publish(k: &str, session: &str, t: u64, p: serde_json::Value) -> Publish {
        match body(k, session, t, Some(p)) {
            Request::Publish(p) => p,
            other => panic!("not a publish: {other:?}"),
        }
    }

    fn presence(k: &str, session: &str, t: u64) -> Presence {
        match body(k, session, t, None) {
            Request::Poll {
                presence: Some(p), ..
            } => p,
            other => panic!("not a poll with d: {other:?}"),
        }
    }

    /// A package from `from` to `to`, as the stock client shapes it.
    fn pkg(to: &str, from: &str, n: u64) -> serde_json::Value {
        json!([to, from, null, null, null, "u", "p", n, []])
    }

    /// Applies a publish whose package change is judged against `held`.
    fn apply_held(
        room: &mut Room,
        p: &Publish,
        held: Option<&Outbox>,
        now: u64,
        k: impl FnOnce() -> DeleteKey,
    ) -> IndexChange {
        let change = Outbox::compare(held, &p.packages);
        let recipients: Vec<SessionId> = p.packages.iter().map(|p| p.to.clone()).collect();
        let arrival = change.arrival(&recipients);
        room.apply(&Claim::of_publish(p), arrival, now, 32, k)
            .unwrap()
    }

    /// Applies a publish without packages held before (a join or heartbeat).
    fn apply(room: &mut Room, p: &Publish, now: u64, k: impl FnOnce() -> DeleteKey) -> IndexChange {
        apply_held(room, p, None, now, k)
    }

    fn apply_poll(
        room: &mut Room,
        k: &str,
        session: &str,
        t: u64,
        now: u64,
    ) -> Result<IndexChange, Error> {
        let presence = presence(k, session, t);
        let context = ctx(k);
        room.apply(
            &Claim::of_presence(&context, &presence),
            Arrival::Poll,
            now,
            32,
            || key(99),
        )
    }

    fn key(n: u8) -> DeleteKey {
        DeleteKey::from_random(&[n; DELETE_KEY_BYTES])
    }

    fn input(dk: &DeleteKey) -> DeleteKeyInput {
        DeleteKeyInput::parse(dk.as_str()).unwrap()
    }

    fn ctx(k: &str) -> ContextId {
        ContextId::parse(k).unwrap()
    }

    fn sess(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    /// The outbox `room` would store for this publish at `now`.
    fn outbox_of(room: &Room, p: &Publish, now: u64) -> Outbox {
        Outbox {
            session: p.data.session.clone(),
            t: p.t.clone(),
            expires_ms: now + p.ttl_ms,
            ttl_ms: p.ttl_ms,
            p: room.address(&p.packages, now),
            mail: Default::default(),
        }
    }

    fn sessions_in(view: &PollResponse<'_>) -> Vec<String> {
        view.ps
            .iter()
            .map(|p| p.data.session.as_str().to_owned())
            .collect()
    }

    #[test]
    fn index_writes_keep_the_key_and_skip_same_t() {
        let mut room = Room::new();
        let a = ctx("a");
        let first = publish("a", "s1", NOW, json!([]));
        assert_eq!(apply(&mut room, &first, NOW, || key(1)), IndexChange::Write);
        assert_eq!(
            apply(&mut room, &first, NOW, || key(2)),
            IndexChange::Unchanged
        );
        // A heartbeat 30 s before the expiry, inside the renewal window, is
        // not written by `apply` (the service stores it in the outbox when
        // the index key is busy) ...
        let beat = NOW + 90_000;
        let heartbeat = publish("a", "s1", beat, json!([]));
        assert_eq!(
            apply(&mut room, &heartbeat, beat, || key(3)),
            IndexChange::Unchanged
        );
        // ... and the poll that follows inside the window renews it to the heartbeat + lifetime.
        assert_eq!(
            apply_poll(&mut room, "a", "s1", beat, beat + 6_000),
            Ok(IndexChange::Write)
        );
        assert_eq!(room.entry(&a).unwrap().expires_ms, beat + TTL);
        // A heartbeat that comes when the renewal is urgent is written itself; the key is kept.
        let late = beat + TTL - 5_000;
        let heartbeat = publish("a", "s1", late, json!([]));
        assert_eq!(
            apply(&mut room, &heartbeat, late, || key(3)),
            IndexChange::Write
        );
        assert_eq!(room.entry(&a).unwrap().expires_ms, late + TTL);
        assert_eq!(room.entry(&a).unwrap().dk, key(1));
        // A new session in the same context replaces the entry with a new key and join time.
        apply(
            &mut room,
            &publish("a", "s2", NOW + 2, json!([])),
            NOW + 5,
            || key(4),
        );
        assert_eq!(room.entry(&a).unwrap().dk, key(4));
        assert_eq!(room.entry(&a).unwrap().joined_ms, NOW + 5);
        assert_eq!(room.live_count(NOW + 5), 1);
    }

    #[test]
    fn packages_within_a_join_window_leave_the_index_alone() {
        let mut room = Room::new();
        apply(
            &mut room,
            &publish("b", "sb", NOW, json!([])),
            NOW + 30_000,
            || key(1),
        );
        apply(
            &mut room,
            &publish("a", "sa", NOW, json!([])),
            NOW + 60_000,
            || key(2),
        );
        // b sends a package to the newcomer a 5 s after it joined: outbox only.
        let to_a = publish("b", "sb", NOW + 65_000, json!([pkg("sa", "sb", 1)]));
        assert_eq!(
            apply(&mut room, &to_a, NOW + 65_000, || key(3)),
            IndexChange::Unchanged
        );
        // Withdrawing it (the stock client does, once connected) writes nothing.
        let held = outbox_of(&room, &to_a, NOW + 65_000);
        let withdrawn = publish("b", "sb", NOW + 68_000, json!([]));
        assert_eq!(
            Outbox::compare(Some(&held), &withdrawn.packages),
            PackageChange::Withdrawn
        );
        assert_eq!(
            apply_held(&mut room, &withdrawn, Some(&held), NOW + 68_000, || key(3)),
            IndexChange::Unchanged
        );
        // A package when the window (a's join + 45 s) closes within 20 s is announced.
        let late = publish("b", "sb", NOW + 200_000, json!([pkg("sa", "sb", 2)]));
        let mut later = room.clone();
        assert_eq!(
            apply(&mut later, &late, NOW + 86_000, || key(3)),
            IndexChange::Write
        );
        let announced = &later.entry(&ctx("b")).unwrap().announced;
        assert_eq!(announced.len(), 1);
        assert_eq!(announced[0].to, sess("sa"));
    }

    /// Issue 9 §1: a peer alive on outbox writes alone stays in `ps`,
    /// decided by the index: its polls renew it before the index expiry.
    #[test]
    fn polls_renew_an_entry_that_wrote_only_packages() {
        let mut room = Room::new();
        apply(&mut room, &publish("a", "sa", NOW, json!([])), NOW, || {
            key(1)
        });
        apply(
            &mut room,
            &publish("b", "sb", NOW, json!([])),
            NOW + 40_000,
            || key(2),
        );
        // a writes a package to b at +45 s (outbox only); its client's next
        // heartbeat is 90 s after that, past the index expiry (+120 s).
        let t = NOW + 45_000;
        let p = publish("a", "sa", t, json!([pkg("sb", "sa", 1)]));
        assert_eq!(apply(&mut room, &p, t, || key(1)), IndexChange::Unchanged);
        // A poll before the renewal window does not write (no hot key after a join).
        assert_eq!(
            apply_poll(&mut room, "a", "sa", t, NOW + 55_000),
            Ok(IndexChange::Unchanged)
        );
        // Once its renewal is due (by the middle of the window) it writes,
        // to the package write + lifetime.
        assert_eq!(
            apply_poll(&mut room, "a", "sa", t, NOW + 91_000),
            Ok(IndexChange::Write)
        );
        let a = room.entry(&ctx("a")).unwrap();
        assert_eq!(a.expires_ms, t + TTL);
        assert_eq!(a.dk, key(1), "the key is kept");
        // A poll that reports no newer write never renews: dead clients expire exactly.
        assert_eq!(
            apply_poll(&mut room, "b", "sb", NOW, NOW + 150_000),
            Ok(IndexChange::Unchanged)
        );
        let empty = Outboxes::new();
        let at = |now| sessions_in(&room.view(&ctx("b"), Some(&sess("sb")), None, &empty, now));
        assert_eq!(at(t + TTL - 1), vec!["sa"], "no outbox read needed");
        assert!(at(t + TTL).is_empty(), "exact expiry");
    }

    /// Issue 9 §2: a poll with `d` from a context with no entry registers it.
    #[test]
    fn a_poll_with_d_registers_a_missing_entry() {
        let mut room = Room::new();
        assert_eq!(
            apply_poll(&mut room, "a", "sa", NOW, NOW),
            Ok(IndexChange::Write)
        );
        let a = room.entry(&ctx("a")).unwrap();
        assert_eq!(
            (a.joined_ms, a.expires_ms, a.dk.clone()),
            (NOW, NOW + TTL, key(99))
        );
        // Once in, it is a read again.
        assert_eq!(
            apply_poll(&mut room, "a", "sa", NOW, NOW + 1000),
            Ok(IndexChange::Unchanged)
        );
    }

    /// Issue 9 §3: a leave stays a leave; a new session of the tab can join.
    #[test]
    fn a_left_session_cannot_come_back_but_a_new_one_can() {
        let mut room = Room::new();
        apply(&mut room, &publish("a", "sa", NOW, json!([])), NOW, || {
            key(1)
        });
        assert!(room.remove(&ctx("a"), Some(&sess("sa")), &input(&key(1)), NOW + 1000));
        // A heartbeat that started before the leave, landing after it.
        let late = publish("a", "sa", NOW + 500, json!([]));
        let arrival = PackageChange::Same.arrival(&[]);
        assert_eq!(
            room.apply(&Claim::of_publish(&late), arrival, NOW + 2000, 32, || key(
                2
            )),
            Err(Error::Left)
        );
        assert_eq!(
            apply_poll(&mut room, "a", "sa", NOW + 500, NOW + 3000),
            Err(Error::Left)
        );
        // Nor can another context take the left session id.
        assert!(apply_poll(&mut room, "x", "sa", NOW, NOW + 3000).is_err());
        // The reload: same tab, new session.
        assert_eq!(
            apply(
                &mut room,
                &publish("a", "sa2", NOW + 4000, json!([])),
                NOW + 4000,
                || key(3)
            ),
            IndexChange::Write
        );
        // Departures are forgotten after a while, and kept bounded.
        room.prune(NOW + 1000 + DEPARTURE_MEMORY_MS);
        assert!(room.departures.is_empty());
    }

    /// Issue 9 §4: packages go to the recipient's context, not to whoever
    /// holds its session id later.
    #[test]
    fn packages_are_bound_to_the_recipients_context() {
        let mut room = Room::new();
        apply(&mut room, &publish("b", "sb", NOW, json!([])), NOW, || {
            key(2)
        });
        let ta = NOW + 60_000;
        apply(&mut room, &publish("a", "sa", ta, json!([])), ta, || key(1));
        let p = publish("a", "sa", ta + 1, json!([pkg("sb", "sa", 1)]));
        let mut outboxes = Outboxes::new();
        outboxes.insert(ctx("a"), outbox_of(&room, &p, ta + 1000));
        let pk = |room: &Room, k: &str, now| {
            room.view(&ctx(k), Some(&sess("sb")), None, &outboxes, now)
                .pk
                .len()
        };
        assert_eq!(pk(&room, "b", ta + 2000), 1);
        // b's entry expires (a's does not); a thief's context claims session "sb".
        let later = NOW + TTL + 1;
        let mut stolen = room.clone();
        apply(
            &mut stolen,
            &publish("thief", "sb", later, json!([])),
            later,
            || key(3),
        );
        let thief = ctx("thief");
        let seen = stolen.view(&thief, Some(&sess("sb")), None, &outboxes, later + 1);
        assert_eq!(sessions_in(&seen), vec!["sa"], "a is still there");
        assert_eq!(pk(&stolen, "thief", later + 1), 0);
    }

    #[test]
    fn outboxes_are_read_only_where_packages_can_wait() {
        let mut room = Room::new();
        apply(&mut room, &publish("a", "sa", NOW, json!([])), NOW, || {
            key(1)
        });
        apply(
            &mut room,
            &publish("b", "sb", NOW, json!([])),
            NOW + 1000,
            || key(2),
        );
        let (a, sa) = (ctx("a"), sess("sa"));
        assert_eq!(
            room.outboxes_to_read(&a, Some(&sa), NOW + 2000, 20, ReadOrder::EachSecond(20)),
            vec![ctx("b")]
        );
        assert!(room
            .outboxes_to_read(&a, Some(&sa), NOW + 2000, 0, ReadOrder::EachSecond(0))
            .is_empty());
        assert!(room
            .outboxes_to_read(&a, None, NOW + 2000, 20, ReadOrder::EachSecond(20))
            .is_empty());
        // Steady: windows closed, nothing announced: nothing to read, even
        // past b's index expiry (liveness is in the index).
        assert!(room
            .outboxes_to_read(&a, Some(&sa), NOW + 50_000, 20, ReadOrder::EachSecond(20))
            .is_empty());
    }

    /// Issue 9 §1: in a full 32-peer room a newcomer's window reads cover
    /// every peer within three polls 1.5 s apart, whatever the context ids sort like.
    #[test]
    fn window_reads_rotate_over_a_large_room() {
        let mut room = Room::new();
        for n in 0..31 {
            let p = publish(&format!("c{n:02}"), &format!("s{n:02}"), NOW, json!([]));
            apply(&mut room, &p, NOW, || key(1));
        }
        apply(
            &mut room,
            &publish("zz", "sz", NOW, json!([])),
            NOW + 1000,
            || key(2),
        );
        let mut seen = std::collections::BTreeSet::new();
        for poll in 0..3 {
            let now = NOW + 2000 + poll * 1500;
            seen.extend(room.outboxes_to_read(
                &ctx("zz"),
                Some(&sess("sz")),
                now,
                20,
                ReadOrder::EachSecond(20),
            ));
        }
        assert_eq!(seen.len(), 31);
    }

    #[test]
    fn remove_requires_context_session_and_key() {
        let mut room = Room::new();
        apply(&mut room, &publish("a", "sa", NOW, json!([])), NOW, || {
            key(1)
        });
        let (a, sa, other) = (ctx("a"), sess("sa"), sess("sx"));
        assert!(!room.remove(&a, Some(&sa), &input(&key(2)), NOW));
        assert!(!room.remove(&a, Some(&other), &input(&key(1)), NOW));
        assert!(!room.remove(&ctx("b"), Some(&sa), &input(&key(1)), NOW));
        assert!(room.remove(&a, Some(&sa), &input(&key(1)), NOW));
        assert_eq!(room.live_count(NOW), 0);
    }

    /// Issue 9 §6: absent and undecodable differ.
    #[test]
    fn stored_form_round_trips_and_unknown_documents_are_unreadable() {
        let mut room = Room::new();
        apply(&mut room, &publish("a", "sa", NOW, json!([])), NOW, || {
            key(1)
        });
        let bytes = room.encode();
        assert_eq!(Room::decode(&bytes), Ok(room.clone()));
        assert_eq!(Room::decode(b"not json"), Err(Unreadable));
        assert_eq!(Room::decode(br#"{"v":3,"e":{}}"#), Err(Unreadable));
        let p = publish("a", "sa", NOW, json!([pkg("sb", "sa", 1)]));
        let o = outbox_of(&room, &p, NOW);
        assert_eq!(Outbox::decode(&o.encode()), Some(o));
    }

    #[test]
    fn a_full_room_refuses_newcomers_but_not_its_members() {
        let mut room = Room::new();
        let arrival = PackageChange::Same.arrival(&[]);
        for n in 0..3u8 {
            let p = publish(&format!("c{n}"), &format!("s{n}"), NOW, json!([]));
            assert_eq!(
                room.apply(&Claim::of_publish(&p), arrival, NOW, 3, || key(n)),
                Ok(IndexChange::Write)
            );
        }
        let newcomer = publish("c9", "s9", NOW, json!([]));
        assert_eq!(
            room.apply(&Claim::of_publish(&newcomer), arrival, NOW, 3, || key(9)),
            Err(Error::RoomFull)
        );
        let d_change = publish("c0", "s0", NOW + 1, json!([]));
        let mut d_change = d_change;
        d_change.data.symmetric = true;
        assert_eq!(
            room.apply(&Claim::of_publish(&d_change), arrival, NOW, 3, || key(0)),
            Ok(IndexChange::Write)
        );
        // Issue 9 §6: an expired entry holds no slot, pruned or not.
        let later = NOW + TTL;
        assert_eq!(
            room.apply(&Claim::of_publish(&newcomer), arrival, later, 3, || key(9)),
            Ok(IndexChange::Write)
        );
    }

    #[test]
    fn delete_keys_have_at_least_128_bits() {
        const { assert!(DELETE_KEY_BYTES * 8 >= 128) };
        assert_eq!(key(0).as_str().len(), 32);
    }
}
