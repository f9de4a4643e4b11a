//! The push host (`host::live::LiveRoom`, what a Durable Object runs) on a
//! virtual clock: joins and leaves pushed to everyone, letters pushed once
//! to their connected addressee, resume after a drop with nothing lost or
//! repeated, the resume window, and a room rebuilt from what it stored in
//! the middle of a conversation.

use std::collections::BTreeMap;

use p2pcf_rs::domain::{ContextId, DeleteKey, DeleteKeyInput, SessionId};
use p2pcf_rs::engine::mailbox::{Message, Recipient, MAX_HELD_BYTES};
use p2pcf_rs::error::Error;
use p2pcf_rs::host::live::{Cursors, LiveRoom, Push, Pushes, RESUME_WINDOW_MS};
use p2pcf_rs::json::Raw;
use p2pcf_rs::wire::relay::adapter::RelayMember;

type Room = LiveRoom<RelayMember>;

const T0: u64 = 1_795_219_200_000;
const MAX: usize = 256;

fn id(s: &str) -> SessionId {
    SessionId::parse(s).unwrap()
}

fn member(s: &str) -> RelayMember {
    RelayMember {
        id: id(s),
        meta: Some(Raw::parse(&format!("{{\"name\":\"{s}\"}}")).unwrap()),
    }
}

fn key(s: &str) -> DeleteKey {
    let mut bytes = [0u8; 24];
    bytes[..s.len()].copy_from_slice(s.as_bytes());
    DeleteKey::from_random(&bytes)
}

fn to(who: Option<&str>, seq: u64, data: &str) -> Message {
    Message {
        to: who.map_or(Recipient::All, |w| Recipient::One(id(w))),
        seq,
        data: Raw::parse(&format!("\"{data}\"")).unwrap(),
    }
}

/// The object's storage as the glue keeps it: the head and one row per member.
#[derive(Default)]
struct Storage {
    head: Option<Vec<u8>>,
    rows: BTreeMap<ContextId, Vec<u8>>,
}

impl Storage {
    /// Writes what changed; returns the number of rows written or deleted.
    fn write(&mut self, room: &mut Room) -> usize {
        let changes = room.take_changes();
        let n = changes.put.len() + changes.delete.len() + usize::from(changes.head.is_some());
        if let Some(head) = changes.head {
            self.head = Some(head);
        }
        for (k, row) in changes.put {
            self.rows.insert(k, row);
        }
        for k in changes.delete {
            self.rows.remove(&k);
        }
        n
    }

    fn restore(&self, sockets: impl IntoIterator<Item = SessionId>, now: u64) -> Room {
        let rows = self.rows.iter().map(|(k, v)| (k.clone(), v.as_slice()));
        Room::restore(self.head.as_deref(), rows, sockets, RESUME_WINDOW_MS, now).unwrap()
    }
}

fn join(room: &mut Room, who: &str, now: u64) -> (DeleteKey, Pushes<RelayMember>) {
    let attached = room.join(member(who), || key(who), now, MAX).unwrap();
    (attached.token.unwrap(), attached.pushes)
}

/// Each addressee's received letters as (from, seq, data), in push order.
fn letters(pushes: &Pushes<RelayMember>) -> Vec<(String, String, u64, String)> {
    pushes
        .iter()
        .filter_map(|(to, p)| match p {
            Push::Letters { from, letters } => Some(
                letters
                    .iter()
                    .map(|l| {
                        (
                            to.to_string(),
                            from.to_string(),
                            l.seq,
                            l.data.get().to_owned(),
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

fn notices(pushes: &Pushes<RelayMember>) -> Vec<(String, String)> {
    pushes
        .iter()
        .filter_map(|(to, p)| match p {
            Push::Joined(m) => Some((to.to_string(), format!("joined {}", m.id))),
            Push::Left(who) => Some((to.to_string(), format!("left {who}"))),
            Push::Letters { .. } => None,
        })
        .collect()
}

fn pair(to: &str, from: &str, seq: u64, data: &str) -> (String, String, u64, String) {
    (to.into(), from.into(), seq, format!("\"{data}\""))
}

#[test]
fn joins_are_pushed_to_everyone_and_a_joiner_sees_who_is_here() {
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    let (_, pushes) = join(&mut room, "ann", T0);
    assert!(pushes.is_empty());
    room.take_changes();
    let attached = room
        .join(member("bob"), || key("bob"), T0 + 1, MAX)
        .unwrap();
    assert_eq!(attached.peers, vec![member("ann")]);
    assert_eq!(
        notices(&attached.pushes),
        vec![("ann".into(), "joined bob".into())]
    );
    let written = room.take_changes();
    assert_eq!(written.put.len(), 1, "a join writes the joiner's row");
    assert!(written.delete.is_empty());
}

#[test]
fn a_letter_is_pushed_once_to_its_connected_addressee_only() {
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    for who in ["ann", "bob", "cy"] {
        join(&mut room, who, T0);
    }
    let sent = room
        .send(&id("ann"), &[to(Some("bob"), 1, "offer")], T0 + 5)
        .unwrap();
    assert_eq!(letters(&sent.pushes), vec![pair("bob", "ann", 1, "offer")]);
    // The same batch again (a retry): stored once, pushed once.
    let again = room
        .send(&id("ann"), &[to(Some("bob"), 1, "offer")], T0 + 6)
        .unwrap();
    assert!(again.pushes.is_empty());
    let all = room
        .send(&id("ann"), &[to(None, 2, "hello")], T0 + 7)
        .unwrap();
    let mut got = letters(&all.pushes);
    got.sort();
    assert_eq!(
        got,
        vec![
            pair("bob", "ann", 2, "hello"),
            pair("cy", "ann", 2, "hello")
        ]
    );
    let nobody = room
        .send(&id("ann"), &[to(Some("zed"), 3, "?")], T0 + 8)
        .unwrap();
    assert_eq!(nobody.undeliverable, vec![3]);
}

#[test]
fn the_engine_rules_hold_seq_reuse_and_bytes_held() {
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    join(&mut room, "ann", T0);
    join(&mut room, "bob", T0);
    room.send(&id("ann"), &[to(Some("bob"), 5, "a")], T0)
        .unwrap();
    let reused = room.send(&id("ann"), &[to(Some("bob"), 5, "other")], T0);
    assert!(matches!(reused, Err(Error::Conflict(_))), "{reused:?}");
    let big = "x".repeat(MAX_HELD_BYTES);
    let flood = room.send(&id("ann"), &[to(Some("bob"), 6, &big)], T0);
    assert!(matches!(flood, Err(Error::Backlog { .. })), "{flood:?}");
    assert!(matches!(
        room.send(&id("zed"), &[to(None, 1, "x")], T0),
        Err(Error::Left)
    ));
}

#[test]
fn a_dropped_member_resumes_with_its_cursors_and_misses_nothing() {
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    join(&mut room, "ann", T0);
    let (bob_token, _) = join(&mut room, "bob", T0);
    let first = room
        .send(&id("ann"), &[to(Some("bob"), 1, "offer")], T0 + 1)
        .unwrap();
    assert_eq!(letters(&first.pushes).len(), 1);
    // Bob's socket drops before (as it turns out) letter 1 reached him.
    room.dropped(&id("bob"), T0 + 2);
    let while_away = room
        .send(
            &id("ann"),
            &[to(Some("bob"), 2, "c1"), to(Some("bob"), 3, "c2")],
            T0 + 3,
        )
        .unwrap();
    assert!(
        while_away.pushes.is_empty(),
        "nothing is pushed to a dropped socket"
    );
    let token = DeleteKeyInput::parse(bob_token.as_str()).unwrap();
    let wrong = DeleteKeyInput::parse("not-the-token").unwrap();
    assert!(matches!(
        room.resume(&id("bob"), &wrong, Cursors::new(), T0 + 4),
        Err(Error::BadRequest("Bad token"))
    ));
    let back = room
        .resume(&id("bob"), &token, Cursors::new(), T0 + 5_000)
        .unwrap();
    assert_eq!(
        letters(&back.pushes),
        vec![
            pair("bob", "ann", 1, "offer"),
            pair("bob", "ann", 2, "c1"),
            pair("bob", "ann", 3, "c2")
        ]
    );
    assert_eq!(back.peers, vec![member("ann")]);
    // Dropped again, back with the cursors it had: nothing twice.
    room.dropped(&id("bob"), T0 + 6_000);
    let after = [(id("ann"), 3)].into_iter().collect();
    let again = room.resume(&id("bob"), &token, after, T0 + 7_000).unwrap();
    assert!(again.pushes.is_empty());
}

#[test]
fn past_its_resume_window_a_member_is_gone_and_the_others_are_told() {
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    join(&mut room, "ann", T0);
    let (bob_token, _) = join(&mut room, "bob", T0);
    room.dropped(&id("bob"), T0 + 1_000);
    assert_eq!(
        room.next_alarm(T0 + 1_000),
        Some(T0 + 1_000 + RESUME_WINDOW_MS)
    );
    assert!(
        room.expire(T0 + 30_000).is_empty(),
        "still inside its window"
    );
    let end = T0 + 1_000 + RESUME_WINDOW_MS;
    assert_eq!(
        notices(&room.expire(end)),
        vec![("ann".into(), "left bob".into())]
    );
    let token = DeleteKeyInput::parse(bob_token.as_str()).unwrap();
    assert!(matches!(
        room.resume(&id("bob"), &token, Cursors::new(), end + 1),
        Err(Error::Left)
    ));
    assert_eq!(
        room.next_alarm(end + 1),
        None,
        "connected members need no alarm"
    );
}

#[test]
fn a_leave_is_pushed_at_once_and_ends_the_membership() {
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    join(&mut room, "ann", T0);
    join(&mut room, "bob", T0);
    let (cy_token, _) = join(&mut room, "cy", T0);
    room.take_changes();
    let mut told = notices(&room.leave(&id("cy"), T0 + 10));
    told.sort();
    assert_eq!(
        told,
        vec![
            ("ann".into(), "left cy".into()),
            ("bob".into(), "left cy".into())
        ]
    );
    let written = room.take_changes();
    assert_eq!(written.delete.len(), 1, "cy's row goes");
    assert!(written.head.is_some(), "the departure is remembered");
    let token = DeleteKeyInput::parse(cy_token.as_str()).unwrap();
    assert!(matches!(
        room.resume(&id("cy"), &token, Cursors::new(), T0 + 11),
        Err(Error::Left)
    ));
    assert!(
        room.leave(&id("cy"), T0 + 12).is_empty(),
        "a second leave does nothing"
    );
}

#[test]
fn a_join_retried_with_its_derived_id_gets_the_same_member() {
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    join(&mut room, "ann", T0);
    let (first, _) = join(&mut room, "bob", T0);
    let again = room
        .join(member("bob"), || key("other"), T0 + 1, MAX)
        .unwrap();
    assert_eq!(again.token, Some(first));
    assert!(notices(&again.pushes).is_empty(), "nobody is told twice");
}

#[test]
fn a_full_room_refuses_a_join() {
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    room.join(member("ann"), || key("ann"), T0, 2).unwrap();
    room.join(member("bob"), || key("bob"), T0, 2).unwrap();
    let third = room.join(member("cy"), || key("cy"), T0, 2);
    assert!(matches!(third, Err(Error::RoomFull)), "{third:?}");
}

#[test]
fn a_member_stored_as_connected_without_a_socket_gets_its_resume_window() {
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    join(&mut room, "ann", T0);
    join(&mut room, "bob", T0);
    let mut storage = Storage::default();
    storage.write(&mut room);
    // The object was reset; only ann's socket survived.
    let mut rebuilt = storage.restore([id("ann")], T0 + 100);
    assert!(rebuilt.is_connected(&id("ann")) && !rebuilt.is_connected(&id("bob")));
    assert_eq!(
        rebuilt.next_alarm(T0 + 100),
        Some(T0 + 100 + RESUME_WINDOW_MS)
    );
    let gone = rebuilt.expire(T0 + 100 + RESUME_WINDOW_MS);
    assert_eq!(notices(&gone), vec![("ann".into(), "left bob".into())]);
}

/// A deterministic conversation among four members with drops, resumes and
/// evictions (the room rebuilt from its stored bytes and which sockets
/// are open) at arbitrary points: every letter reaches its addressee
/// exactly once, in order per sender.
#[test]
fn evictions_and_drops_mid_conversation_lose_and_repeat_nothing() {
    let names = ["ann", "bob", "cy", "dee"];
    let mut seed = 0x5eed_u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    let mut storage = Storage::default();
    let mut tokens = BTreeMap::new();
    let mut received: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    // What each member's client has actually received: its own cursors.
    let mut client_cursors: BTreeMap<String, Cursors> = BTreeMap::new();
    let take = |pushes: &Pushes<RelayMember>,
                received: &mut BTreeMap<(String, String), Vec<u64>>,
                cursors: &mut BTreeMap<String, Cursors>| {
        for (to, from, seq, _) in letters(pushes) {
            received
                .entry((to.clone(), from.clone()))
                .or_default()
                .push(seq);
            cursors.entry(to).or_default().insert(id(&from), seq);
        }
    };
    for who in names {
        let (token, pushes) = join(&mut room, who, T0);
        tokens.insert(who, token);
        take(&pushes, &mut received, &mut client_cursors);
    }
    storage.write(&mut room);
    let mut seqs: BTreeMap<&str, u64> = BTreeMap::new();
    let mut sent: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    let mut now = T0;
    for _ in 0..400 {
        now += 50;
        let who = names[next(4) as usize];
        match next(10) {
            0 => room.dropped(&id(who), now),
            1 => {
                // Evicted: rebuilt from the stored rows and the open sockets.
                let sockets: Vec<SessionId> = names
                    .iter()
                    .map(|n| id(n))
                    .filter(|n| room.is_connected(n))
                    .collect();
                room = storage.restore(sockets, now);
            }
            _ if !room.is_connected(&id(who)) => {
                let token = DeleteKeyInput::parse(tokens[who].as_str()).unwrap();
                let after = client_cursors.get(who).cloned().unwrap_or_default();
                let back = room.resume(&id(who), &token, after, now).unwrap();
                take(&back.pushes, &mut received, &mut client_cursors);
            }
            _ => {
                let seq = seqs.entry(who).or_default();
                *seq += 1;
                let target = names[next(4) as usize];
                let m = if target == who {
                    to(None, *seq, "all")
                } else {
                    to(Some(target), *seq, "one")
                };
                let delivered = room.send(&id(who), &[m], now).unwrap();
                let written = storage.write(&mut room);
                assert_eq!(written, 1, "a send writes one row, the sender's");
                for n in names
                    .iter()
                    .filter(|n| **n != who && (target == who || **n == target))
                {
                    sent.entry((n.to_string(), who.to_string()))
                        .or_default()
                        .push(*seq);
                }
                take(&delivered.pushes, &mut received, &mut client_cursors);
            }
        }
        storage.write(&mut room);
    }
    // Everyone comes back at the end and takes what is left.
    for who in names {
        if !room.is_connected(&id(who)) {
            let token = DeleteKeyInput::parse(tokens[who].as_str()).unwrap();
            let after = client_cursors.get(who).cloned().unwrap_or_default();
            let back = room.resume(&id(who), &token, after, now).unwrap();
            take(&back.pushes, &mut received, &mut client_cursors);
        }
    }
    assert_eq!(
        received, sent,
        "each letter once, in order, to each addressee"
    );
    assert!(sent.values().map(Vec::len).sum::<usize>() > 300);
}

#[test]
fn the_alarm_watches_open_sockets_and_windows_and_only_moves_earlier() {
    const IDLE: u64 = 75_000;
    let mut room = Room::restore(None, [], [], RESUME_WINDOW_MS, T0).unwrap();
    assert_eq!(
        room.alarm_to_set(None, T0, IDLE),
        None,
        "an empty room needs none"
    );
    join(&mut room, "ann", T0);
    join(&mut room, "bob", T0);
    // Sockets open: one every IDLE to close the silent ones.
    assert_eq!(room.alarm_to_set(None, T0, IDLE), Some(T0 + IDLE));
    assert_eq!(
        room.alarm_to_set(Some(T0 + IDLE), T0 + 5_000, IDLE),
        None,
        "never moved later"
    );
    assert_eq!(
        room.alarm_to_set(Some(T0 + 2 * IDLE), T0, IDLE),
        Some(T0 + IDLE)
    );
    // A member in its resume window: its end, when that comes first.
    room.dropped(&id("bob"), T0 + 1_000);
    let short = 30_000;
    let mut room_short = Room::restore(None, [], [], short, T0).unwrap();
    join(&mut room_short, "ann", T0);
    join(&mut room_short, "bob", T0);
    room_short.dropped(&id("bob"), T0 + 1_000);
    assert_eq!(
        room_short.alarm_to_set(None, T0 + 1_000, IDLE),
        Some(T0 + 1_000 + short)
    );
    assert_eq!(
        room.alarm_to_set(None, T0 + 1_000, IDLE),
        Some(T0 + 1_000 + RESUME_WINDOW_MS)
    );
    room.leave(&id("ann"), T0 + 2_000);
    assert_eq!(
        room.alarm_to_set(None, T0 + 2_000, IDLE),
        Some(T0 + 1_000 + RESUME_WINDOW_MS),
        "no socket open: only the window"
    );
}
