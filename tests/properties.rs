//! Property tests (proptest, bounded case counts): the request parser never
//! panics and keeps packages byte for byte; the room rules keep their
//! invariants under any sequence of publishes, polls and leaves.

use p2pcf_rs::domain::{ContextId, DeleteKey, DeleteKeyInput, DELETE_KEY_BYTES};
use p2pcf_rs::engine::limits::Limits;
use p2pcf_rs::error::Error;
use p2pcf_rs::wire::p2pcf::adapter::PackageChange;
use p2pcf_rs::wire::p2pcf::parse::{parse_request, PeerData, Request};
use std::collections::{HashMap, HashSet};

use p2pcf_rs::engine::room::{Arrival, Claim, IndexChange, Outbox, Outboxes, DEPARTURE_MEMORY_MS};

type Room = p2pcf_rs::engine::room::Room<PeerData>;
use proptest::prelude::*;
use serde_json::{json, Value};

const NOW: u64 = 1_795_219_200_000;
const FP: &str = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,80}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body whose fields are each sometimes valid, sometimes anything.
fn body() -> impl Strategy<Value = Value> {
    let field = |valid: Value| prop_oneof![3 => Just(valid), 1 => any_json()];
    (
        field(json!("room-prop")),
        field(json!("ctx")),
        field(json!(["sess", "client", false, FP, 1, ["192.0.2.1"]])),
        field(json!(NOW)),
        field(json!(120000)),
        field(json!([[
            "peer",
            "sess",
            null,
            null,
            null,
            "u",
            "p",
            1,
            ["c"]
        ]])),
        any::<bool>(),
    )
        .prop_map(|(r, k, d, t, x, p, leave)| {
            let mut b = json!({"r": r, "k": k, "d": d, "t": t, "x": x, "p": p});
            if leave {
                b["dk"] = json!("key");
            }
            b
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), leave: bool) {
        let _ = parse_request(&bytes, leave, &Limits::default());
    }

    #[test]
    fn parser_answers_ok_or_a_client_error(b in body(), leave: bool) {
        let bytes = serde_json::to_vec(&b).unwrap();
        match parse_request(&bytes, leave, &Limits::default()) {
            Ok(_) | Err(Error::BadRequest(_)) | Err(Error::PayloadTooLarge(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn packages_pass_through_untouched(extra in prop::collection::vec(any_json(), 0..6)) {
        let mut package = vec![json!("peer-session"), json!("sess")];
        package.extend(extra);
        let text = serde_json::to_string(&Value::Array(package)).unwrap();
        let body = format!(r#"{{"r":"room-prop","k":"ctx","d":["sess","client",false,"{FP}",1,[]],"t":{NOW},"x":1000,"p":[{text}]}}"#);
        match parse_request(body.as_bytes(), false, &Limits::default()) {
            Ok(Request::Publish(p)) => prop_assert_eq!(p.packages[0].raw.get(), text.as_str()),
            Err(Error::PayloadTooLarge(_)) => {} // more candidates or bytes than allowed
            other => prop_assert!(false, "{other:?}"),
        }
    }
}

/// A valid publish body, as text, that mutations start from.
fn valid_body() -> String {
    format!(
        r#"{{"r":"room-prop","k":"ctx","d":["sess","client",false,"{FP}",1,["192.0.2.1"]],"t":{NOW},"x":120000,"p":[["peer","sess",null,null,null,"u","p",1,["candidate:1 1 udp 1 192.0.2.1 9 typ host"]]]}}"#
    )
}

#[derive(Clone, Debug)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

proptest! {
    #![proptest_config(config())]

    /// Random bytes stop at the first byte; a few edits of a real body walk
    /// the parser deep into `d`, packages and numbers.
    #[test]
    fn parser_never_panics_on_mutated_bodies(
        edits in prop::collection::vec(prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Replace(i, b)),
            (any::<usize>(), prop::sample::select(b"[]{}\",:0123456789.e-nulltruefalse \\".to_vec())).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Delete),
        ], 1..4),
        leave: bool,
    ) {
        let mut bytes = valid_body().into_bytes();
        for edit in edits {
            let n = bytes.len().max(1);
            match edit {
                Edit::Replace(i, b) => { let i = i % n; if i < bytes.len() { bytes[i] = b } }
                Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
                Edit::Delete(i) => { if !bytes.is_empty() { bytes.remove(i % bytes.len()); } }
            }
        }
        match parse_request(&bytes, leave, &Limits::default()) {
            Ok(_) | Err(Error::BadRequest(_)) | Err(Error::PayloadTooLarge(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}

const TTL: u64 = 60_000;
const PEERS: usize = 5;

#[derive(Clone, Debug)]
enum Op {
    /// A publish by context `who` with session `session` of context `owner`
    /// (usually its own: sometimes a claim on another's), packages to `to`.
    Publish {
        who: usize,
        owner: usize,
        session: usize,
        to: Vec<usize>,
    },
    /// A poll with `d` (registers or renews), reporting a write `back` ms ago.
    Poll {
        who: usize,
        session: usize,
        back: u64,
    },
    Leave {
        who: usize,
        right_key: bool,
    },
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PEERS, prop::sample::select(vec![0usize, 0, 0, 1, 2, 3, 4]), 0..2usize, prop::collection::btree_set(0..PEERS, 0..3))
            .prop_map(|(who, shift, session, to)| Op::Publish { who, owner: (who + shift) % PEERS, session, to: to.into_iter().collect() }),
        2 => (0..PEERS, 0..2usize, 0..90_000u64).prop_map(|(who, session, back)| Op::Poll { who, session, back }),
        1 => (0..PEERS, any::<bool>()).prop_map(|(who, right_key)| Op::Leave { who, right_key }),
        2 => (0..100_000u64).prop_map(Op::Wait),
    ]
}

fn session(who: usize, n: usize) -> String {
    format!("s{who}-{n}")
}

fn ctx(who: usize) -> ContextId {
    ContextId::parse(&format!("ctx{who}")).unwrap()
}

fn data(session: &str, t: u64) -> Value {
    json!({"r": "room-prop", "d": [session, "client", false, FP, 1, []], "t": t, "x": TTL})
}

proptest! {
    #![proptest_config(config())]

    /// The room engine against a small world of 5 contexts with real
    /// outboxes: every view is checked for who is listed and what is delivered.
    #[test]
    fn room_rules_keep_their_invariants(ops in prop::collection::vec(op(), 1..60)) {
        let mut room = Room::new();
        let mut outboxes = Outboxes::new();
        let mut now = NOW;
        let mut t = NOW;
        let mut keys: Vec<Option<String>> = vec![None; PEERS];
        let mut counter = 0u8;
        // (ctx, session) -> last accepted index write; (ctx, session) -> left at.
        let mut written: HashMap<(usize, String), u64> = HashMap::new();
        let mut left: HashMap<(usize, String), u64> = HashMap::new();
        // (recipient ctx, package text): sent while that ctx held the addressed session.
        let mut rightful: HashSet<(usize, String)> = HashSet::new();
        let mut delivered = 0usize;
        for op in ops {
            counter = counter.wrapping_add(1);
            let new_key = || DeleteKey::from_random(&[counter; DELETE_KEY_BYTES]);
            match op {
                Op::Wait(ms) => now += ms,
                Op::Publish { who, owner, session: s, to } => {
                    t += 1;
                    let me = session(owner, s);
                    let p: Vec<Value> = to.iter().map(|r| json!([session(*r, 0), me, null, null, null, "u", "p", t, []])).collect();
                    let mut body = data(&me, t);
                    body["k"] = json!(format!("ctx{who}"));
                    body["p"] = json!(p);
                    let Ok(Request::Publish(publish)) = parse_request(&serde_json::to_vec(&body).unwrap(), false, &Limits::default()) else {
                        panic!("valid publish");
                    };
                    let held = outboxes.get(&ctx(who)).filter(|o| o.session.as_str() == me);
                    let mut change = Outbox::compare(held, &publish.packages);
                    let joining = !room.owns_live_entry(&ctx(who), &publish.data.session, now);
                    if change == PackageChange::Withdrawn && joining {
                        change = PackageChange::New;
                    }
                    if room.check(&Claim::of_publish(&publish), now).is_err() {
                        continue;
                    }
                    if change == PackageChange::New {
                        for (r, raw) in to.iter().zip(&p) {
                            let addressed = session(*r, 0);
                            for holder in 0..PEERS {
                                if room.entry(&ctx(holder)).is_some_and(|e| e.d.session.as_str() == addressed && e.is_live(now)) {
                                    rightful.insert((holder, raw.to_string()));
                                }
                            }
                        }
                        outboxes.insert(ctx(who), Outbox {
                            session: publish.data.session.clone(),
                            t: publish.t.clone(),
                            expires_ms: now + TTL,
                            ttl_ms: TTL,
                            p: room.address(&publish.packages, now),
                            mail: Default::default(),
                        });
                    }
                    let recipients: Vec<p2pcf_rs::domain::SessionId> = publish.packages.iter().map(|p| p.to.clone()).collect();
                    let arrival = change.arrival(&recipients);
                    match room.apply(&Claim::of_publish(&publish), arrival, now, 32, new_key) {
                        Ok(IndexChange::Write) => { written.insert((who, me.clone()), now); }
                        Ok(IndexChange::Unchanged) => {}
                        Err(e) => prop_assert!(false, "checked claim refused: {e:?}"),
                    }
                    keys[who] = room.entry(&ctx(who)).map(|e| e.dk.as_str().to_owned());
                }
                Op::Poll { who, session: s, back } => {
                    let me = session(who, s);
                    let mut body = data(&me, now.saturating_sub(back).max(t));
                    body["k"] = json!(format!("ctx{who}"));
                    let Ok(Request::Poll { presence: Some(presence), .. }) = parse_request(&serde_json::to_vec(&body).unwrap(), false, &Limits::default()) else {
                        panic!("valid poll");
                    };
                    let c = ctx(who);
                    if let Ok(IndexChange::Write) = room.apply(&Claim::of_presence(&c, &presence), Arrival::Poll, now, 32, new_key) {
                        written.insert((who, me.clone()), now);
                        keys[who] = room.entry(&c).map(|e| e.dk.as_str().to_owned());
                    }
                }
                Op::Leave { who, right_key } => {
                    let key = match (&keys[who], right_key) {
                        (Some(k), true) => k.clone(),
                        _ => "wrong-key".to_owned(),
                    };
                    let before = room.entry(&ctx(who)).map(|e| e.d.session.as_str().to_owned());
                    let removed = room.remove(&ctx(who), None, &DeleteKeyInput::parse(&key).unwrap(), now);
                    if !right_key {
                        prop_assert!(!removed, "only the owner's key removes an entry");
                    }
                    if removed {
                        prop_assert!(room.entry(&ctx(who)).is_none());
                        left.insert((who, before.unwrap()), now);
                    }
                }
            }
            // Invariants of every view, with every outbox at hand.
            for who in 0..PEERS {
                let c = ctx(who);
                let me = room.entry(&c).map(|e| e.d.session.clone());
                let view: Value = serde_json::from_str(&p2pcf_rs::json::to_string(&room.view(&c, me.as_ref(), None, &outboxes, now))).unwrap();
                let ps = view["ps"].as_array().unwrap();
                let sessions: Vec<&str> = ps.iter().map(|p| p[0].as_str().unwrap()).collect();
                if let Some(me) = &me {
                    prop_assert!(!sessions.contains(&me.as_str()), "never listed to itself");
                }
                let mut unique = sessions.clone();
                unique.sort_unstable();
                unique.dedup();
                prop_assert_eq!(unique.len(), sessions.len(), "one entry per session");
                prop_assert!(ps.iter().all(|p| p.as_array().unwrap().len() == 7));
                for package in view["pk"].as_array().unwrap() {
                    delivered += 1;
                    prop_assert_eq!(package[0].as_str(), me.as_ref().map(|s| s.as_str()), "addressed to the caller");
                    prop_assert!(sessions.contains(&package[1].as_str().unwrap()), "from a listed peer");
                    prop_assert!(rightful.contains(&(who, package.to_string())), "sent while this context held the session");
                }
            }
            // Nobody is listed past its last write + lifetime (exact expiry),
            // and a left session never comes back while its leave is remembered.
            for who in 0..PEERS {
                if let Some(e) = room.entry(&ctx(who)).filter(|e| e.is_live(now)) {
                    let s = e.d.session.as_str().to_owned();
                    let last = written.get(&(who, s.clone())).copied();
                    prop_assert!(last.is_some_and(|w| now < w + TTL), "listed {s} without a write within its lifetime");
                    if let Some(at) = left.get(&(who, s.clone())) {
                        prop_assert!(now >= at + DEPARTURE_MEMORY_MS, "{s} came back after leaving");
                    }
                }
            }
            prop_assert_eq!(Room::decode(&room.encode()), Ok(room.clone()));
        }
        let _ = delivered;
    }
}

/// A relay request whose fields are each sometimes valid, sometimes anything.
fn relay_body() -> impl Strategy<Value = Value> {
    let field = |valid: Value| prop_oneof![3 => Just(valid), 1 => any_json()];
    (
        field(json!("room-prop")),
        field(json!("peer-id")),
        field(json!("token-token-token")),
        field(json!({"name": "x"})),
        field(json!({"other": 3})),
        field(json!([{"to": "*", "seq": 1, "data": {"sdp": "v=0"}}])),
        any::<bool>(),
    )
        .prop_map(|(room, id, token, meta, after, send, member)| {
            let mut b = json!({"room": room, "meta": meta, "after": after, "send": send});
            if member {
                b["id"] = id;
                b["token"] = token;
            }
            b
        })
}

proptest! {
    #![proptest_config(config())]

    /// The relay parser answers Ok or a client error on anything, and keeps
    /// message data byte for byte.
    #[test]
    fn relay_parser_answers_ok_or_a_client_error(b in relay_body(), data in any_json()) {
        let bytes = serde_json::to_vec(&b).unwrap();
        match p2pcf_rs::wire::relay::parse(&bytes) {
            Ok(_) | Err(Error::BadRequest(_)) | Err(Error::PayloadTooLarge(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
        let text = serde_json::to_string(&data).unwrap();
        let body = format!(r#"{{"room":"room-prop","send":[{{"to":"*","seq":1,"data":{text}}}]}}"#);
        match p2pcf_rs::wire::relay::parse(body.as_bytes()) {
            Ok(r) => prop_assert_eq!(r.send[0].data.get(), text.as_str()),
            Err(Error::BadRequest(_)) | Err(Error::PayloadTooLarge(_)) => {}
            Err(other) => prop_assert!(false, "{other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// With a room secret, no id is served unless it was signed with it:
    /// neither any id at all, nor a signed id with one character changed.
    #[test]
    fn only_ids_signed_with_the_secret_are_served(
        any in "[A-Za-z0-9_-]{4,64}",
        name in "[A-Za-z0-9_-]{1,36}",
        ahead_s in 1u64..1_000_000,
        at in 0usize..64,
        with in proptest::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-".to_vec()
        ),
    ) {
        use p2pcf_rs::config::Secret;
        use p2pcf_rs::domain::RoomId;
        use p2pcf_rs::edge::rooms::{admit, sign};
        let secret = [Secret::new("the-room-secret".into())];
        let any = RoomId::parse(&any).unwrap();
        prop_assert!(admit(&any, &secret, NOW).is_err());
        let signed = sign(&name, NOW / 1000 + ahead_s, &secret[0]).unwrap();
        prop_assert_eq!(admit(&signed, &secret, NOW), Ok(()));
        let mut changed = signed.as_str().as_bytes().to_vec();
        let at = at % changed.len();
        prop_assume!(changed[at] != with);
        changed[at] = with;
        let changed = RoomId::parse(std::str::from_utf8(&changed).unwrap()).unwrap();
        prop_assert!(admit(&changed, &secret, NOW).is_err(), "{} served", changed);
    }
}

/// A socket frame of y-webrtc's or PeerJS's shape, or something like it.
fn socket_frame() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just(json!("subscribe")),
        Just(json!("unsubscribe")),
        Just(json!("publish")),
        Just(json!("ping")),
        Just(json!("OFFER")),
        Just(json!("CANDIDATE")),
        Just(json!("LEAVE")),
        Just(json!("EXPIRE")),
        Just(json!("HEARTBEAT")),
        any_json(),
    ];
    let id = prop_oneof![
        Just(json!("a")),
        Just(json!("b")),
        Just(Value::Null),
        any_json()
    ];
    prop_oneof![
        (kind, id.clone(), any_json(), any_json()).prop_map(|(kind, dst, payload, topics)| {
            json!({ "type": kind, "dst": dst, "topic": dst, "payload": payload, "data": payload, "topics": topics }).to_string()
        }),
        any_json().prop_map(|v| v.to_string()),
        ".{0,200}",
    ]
}

proptest! {
    #![proptest_config(config())]

    /// No frame panics either protocol's sockets; each is answered,
    /// ignored, or closes its own socket with a 4xxx code (or 1000 for a
    /// PeerJS `LEAVE` to no one), and the others go on.
    #[test]
    fn socket_frames_never_panic_and_close_only_their_socket(frames in prop::collection::vec(socket_frame(), 1..24)) {
        use p2pcf_rs::domain::{PeerJsId, PeerJsToken};
        use p2pcf_rs::engine::{directory::Directory, topics::Topics};
        use p2pcf_rs::wire::{peerjs, y_webrtc};
        let mut dir = Directory::default();
        for (socket, id) in [(1, "a"), (2, "b")] {
            let connect = peerjs::Connect {
                key: p2pcf_rs::domain::RoomId::parse("peerjs").unwrap(),
                id: PeerJsId::parse(id).unwrap(),
                token: PeerJsToken::parse("t").unwrap(),
            };
            peerjs::on_connect(&mut dir, socket, connect, 0);
        }
        let mut topics = Topics::default();
        for (i, frame) in frames.iter().enumerate() {
            let now_ms = i as u64 * 100;
            let e = peerjs::on_frame(&mut dir, 1, frame, &peerjs::FrameLimits { max_frame_bytes: 65_536, now_ms });
            for (socket, code, _) in &e.closes {
                prop_assert_eq!(*socket, 1);
                prop_assert!((4400..4500).contains(code) || *code == 1000, "{}", code);
            }
            prop_assert!(e.sends.iter().all(|(to, _)| *to == 1 || *to == 2));
            let _ = peerjs::on_tick(&mut dir, now_ms);
            let e = y_webrtc::on_frame(&mut topics, 7, frame, &y_webrtc::FrameLimits { max_frame_bytes: 65_536, now_ms });
            if let Some((code, _)) = e.close {
                prop_assert!((4400..4500).contains(&code), "{}", code);
            }
        }
        prop_assert_eq!(dir.socket_of(&PeerJsId::parse("b").unwrap()), Some(2));
    }
}
