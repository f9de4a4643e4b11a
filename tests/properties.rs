//! Property tests (proptest, bounded case counts): the request parser never
//! panics and keeps packages byte for byte; the room rules keep their
//! invariants under any sequence of publishes, polls and leaves.

use p2pcf_rs::error::Error;
use p2pcf_rs::limits::Limits;
use p2pcf_rs::protocol::{parse_request, ContextId, DeleteKeyInput, Request};
use p2pcf_rs::room::{DeleteKey, Outboxes, Room, DELETE_KEY_BYTES};
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
        let _ = parse_request(&bytes, leave, NOW, &Limits::default());
    }

    #[test]
    fn parser_answers_ok_or_a_client_error(b in body(), leave: bool) {
        let bytes = serde_json::to_vec(&b).unwrap();
        match parse_request(&bytes, leave, NOW, &Limits::default()) {
            Ok(_) | Err(Error::BadRequest(_)) | Err(Error::PayloadTooLarge(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn packages_pass_through_untouched(extra in prop::collection::vec(any_json(), 0..6)) {
        let mut package = vec![json!("peer-session")];
        package.extend(extra);
        let text = serde_json::to_string(&Value::Array(package)).unwrap();
        let body = format!(r#"{{"r":"room-prop","k":"ctx","d":["sess","client",false,"{FP}",1,[]],"t":{NOW},"x":1000,"p":[{text}]}}"#);
        match parse_request(body.as_bytes(), false, NOW, &Limits::default()) {
            Ok(Request::Publish(p)) => prop_assert_eq!(p.packages[0].raw.get(), text.as_str()),
            Err(Error::PayloadTooLarge(_)) => {} // more candidates or bytes than allowed
            other => prop_assert!(false, "{other:?}"),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Publish {
        who: usize,
        session: usize,
        to: Vec<usize>,
    },
    Leave {
        who: usize,
        right_key: bool,
    },
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5usize, 0..2usize, prop::collection::vec(0..5usize, 0..3))
            .prop_map(|(who, session, to)| Op::Publish { who, session, to }),
        1 => (0..5usize, any::<bool>()).prop_map(|(who, right_key)| Op::Leave { who, right_key }),
        1 => (0..200_000u64).prop_map(Op::Wait),
    ]
}

fn session(who: usize, n: usize) -> String {
    format!("s{who}-{n}")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn room_rules_keep_their_invariants(ops in prop::collection::vec(op(), 1..40)) {
        let mut room = Room::new();
        let mut now = NOW;
        let mut t = NOW;
        let mut keys: Vec<Option<String>> = vec![None; 5];
        let mut counter = 0u8;
        for op in ops {
            match op {
                Op::Wait(ms) => now += ms,
                Op::Publish { who, session: s, to } => {
                    t += 1;
                    let p: Vec<Value> = to.iter().map(|r| json!([session(*r, 0), session(who, s), null, null, null, "u", "p", 1, []])).collect();
                    let body = json!({"r": "room-prop", "k": format!("ctx{who}"), "d": [session(who, s), "client", false, FP, 1, []], "t": t, "x": 60000, "p": p});
                    let Ok(Request::Publish(publish)) = parse_request(&serde_json::to_vec(&body).unwrap(), false, t, &Limits::default()) else {
                        panic!("valid publish");
                    };
                    counter = counter.wrapping_add(1);
                    let r = room.apply_publish(&publish, !p.is_empty(), now, 32, || DeleteKey::from_random(&[counter; DELETE_KEY_BYTES]));
                    prop_assert!(r.is_ok());
                    let ctx = ContextId::parse(&format!("ctx{who}")).unwrap();
                    keys[who] = room.entry(&ctx).map(|e| e.dk.as_str().to_owned());
                }
                Op::Leave { who, right_key } => {
                    let ctx = ContextId::parse(&format!("ctx{who}")).unwrap();
                    let key = match (&keys[who], right_key) {
                        (Some(k), true) => k.clone(),
                        _ => "wrong-key".to_owned(),
                    };
                    let removed = room.remove(&ctx, None, &DeleteKeyInput::parse(&key).unwrap(), now);
                    if !right_key {
                        prop_assert!(!removed, "only the owner's key removes an entry");
                    }
                    if removed {
                        prop_assert!(room.entry(&ctx).is_none());
                    }
                }
            }
            // Invariants of every view.
            let outboxes = Outboxes::new();
            for who in 0..5 {
                let ctx = ContextId::parse(&format!("ctx{who}")).unwrap();
                let me = room.entry(&ctx).map(|e| e.d.session.clone());
                let view = serde_json::to_value(room.view(&ctx, me.as_ref(), None, &outboxes, now)).unwrap();
                let ps = view["ps"].as_array().unwrap();
                let sessions: Vec<&str> = ps.iter().map(|p| p[0].as_str().unwrap()).collect();
                if let Some(me) = &me {
                    prop_assert!(!sessions.contains(&me.as_str()), "never listed to itself");
                }
                let mut unique = sessions.clone();
                unique.sort_unstable();
                unique.dedup();
                prop_assert_eq!(unique.len(), sessions.len(), "one entry per context");
                prop_assert!(ps.iter().all(|p| p.as_array().unwrap().len() == 7));
                prop_assert!(view["pk"].as_array().unwrap().is_empty(), "no outbox read, no packages");
            }
            prop_assert_eq!(Room::decode(&room.encode()), room.clone());
        }
    }
}
