//! The cost simulator as a regression test: simulated stock clients against
//! the real worker logic on the R2 model (virtual clock, fixed seed).

use p2pcf_lab::scenario::{all, large_rooms, run, Which};

fn scenario(prefix: &str) -> p2pcf_lab::scenario::Scenario {
    all(42)
        .into_iter()
        .find(|s| s.name.starts_with(prefix))
        .expect("scenario exists")
}

#[test]
fn join_storm_every_pair_gets_its_packages_and_nothing_is_lost() {
    let storm = scenario("join storm");
    let r = run(&storm, Which::Ours, 42);
    assert_eq!(r.pairs, 45);
    assert_eq!(r.pairs_incomplete, 0, "every pair got both packages");
    assert_eq!(r.lost_packages, 0);
    assert_eq!(r.missing_peer_observations, 0, "no lost registration");
    assert_eq!(r.status_503, 0);
    assert_eq!(r.lists, 0);
    assert!(
        r.pair_ms_max < 60_000,
        "packages within the client's 60 s: {} ms",
        r.pair_ms_max
    );
}

#[test]
fn steady_rooms_and_churn_lose_nothing() {
    for prefix in ["room of 8", "churn"] {
        let r = run(&scenario(prefix), Which::Ours, 42);
        assert_eq!(r.pairs_incomplete, 0, "{prefix}");
        assert_eq!(r.lost_packages, 0, "{prefix}");
        assert_eq!(r.missing_peer_observations, 0, "{prefix}");
        assert_eq!(r.stale_peer_observations, 0, "{prefix}");
        assert_eq!(r.lists, 0, "{prefix}");
    }
}

/// Issue 9 §7: rooms up to `MAX_PEERS`, filling one every 2 s or all at
/// once, with the stock client's real behaviour (withdrawals after connect,
/// connect timeouts): nobody missing, nothing stale, nothing lost, no 503.
#[test]
fn large_rooms_up_to_max_peers_lose_nothing() {
    for scenario in large_rooms(42, 10 * 60_000) {
        let r = run(&scenario, Which::Ours, 42);
        let name = &scenario.name;
        println!(
            "{name}: {} pairs, max {} ms to both packages, write p99 {} ms, last join {} class A",
            r.pairs, r.pair_ms_max, r.write_ms_p99, r.last_join_class_a
        );
        assert_eq!(r.pairs_incomplete, 0, "{name}");
        assert_eq!(r.missing_peer_observations, 0, "{name}");
        assert_eq!(r.stale_peer_observations, 0, "{name}");
        assert_eq!(r.lost_packages, 0, "{name}");
        assert_eq!(r.status_503, 0, "{name}");
        assert!(r.pair_ms_max < 90_000, "{name}: {} ms", r.pair_ms_max);
    }
}

#[test]
fn the_original_workers_model_shows_its_known_defects() {
    // The model is only useful if it reproduces what the original does:
    // N+2 reads per poll, vacuum LISTs, and joins lost to racing slot writes.
    let storm = run(&scenario("join storm"), Which::Original, 42);
    assert!(storm.lists > 0);
    assert!(storm.missing_peer_observations > 0);
    let room = run(&scenario("room of 8"), Which::Original, 42);
    assert!(
        room.class_b as f64 / room.requests as f64 > 9.0,
        "about N+2 = 10 reads per request"
    );
}
