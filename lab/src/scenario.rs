//! Scenarios, the simulation run, and the side-by-side report.

use crate::client::{Client, PeerPlan, World};
use crate::original::Original;
use crate::{Ours, Server};
use p2pcf_rs::platform::join_all;
use p2pcf_rs::testing::SimPlatform;

const HOUR_MS: u64 = 3_600_000;
/// Latency of one R2 operation seen from a worker.
pub const R2_LATENCY_MS: u64 = 15;

pub struct Scenario {
    pub name: String,
    pub plans: Vec<PeerPlan>,
    pub duration_ms: u64,
}

fn stays(join_at: u64) -> PeerPlan {
    PeerPlan {
        join_at,
        leave_at: None,
        sends_leave: true,
    }
}

/// Rooms of 2..32 filling one peer every 2 s, for an hour; rooms of 16,
/// 24 and 32 whose peers all arrive within 3 s; a 10-peer join storm;
/// churn. `seed` places the storms' joins.
pub fn all(seed: u64) -> Vec<Scenario> {
    let mut out: Vec<Scenario> = [2usize, 4, 8, 16, 24, 32]
        .iter()
        .map(|&n| Scenario {
            name: format!("room of {n}, 1 h"),
            // Peers arrive 2 s apart, then stay.
            plans: (0..n).map(|i| stays(i as u64 * 2000)).collect(),
            duration_ms: HOUR_MS,
        })
        .collect();
    let mut rng = seed;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        rng >> 33
    };
    out.push(Scenario {
        name: "join storm: 10 peers within 3 s, 5 min".to_owned(),
        plans: (0..10).map(|_| stays(next() % 3000)).collect(),
        duration_ms: 5 * 60_000,
    });
    out.extend(
        large_rooms(seed, HOUR_MS)
            .into_iter()
            .filter(|s| s.name.starts_with("storm")),
    );
    // Churn: 8 peers; every minute one leaves (alternately by delete and by
    // vanishing) and a newcomer joins a few seconds later.
    let mut plans: Vec<PeerPlan> = (0..8).map(|i| stays(i * 2000)).collect();
    for minute in 1..60u64 {
        let leaver = (minute as usize - 1) % plans.len();
        let at = minute * 60_000;
        if plans[leaver].leave_at.is_none() {
            plans[leaver].leave_at = Some(at);
            plans[leaver].sends_leave = minute % 2 == 1;
        } else {
            // Pick the oldest peer still present.
            if let Some(p) = plans.iter_mut().find(|p| p.leave_at.is_none()) {
                p.leave_at = Some(at);
                p.sends_leave = minute % 2 == 1;
            }
        }
        plans.push(stays(at + 1000 + next() % 4000));
    }
    out.push(Scenario {
        name: "churn: 8 peers, one leaves and one joins every minute, 1 h".to_owned(),
        plans,
        duration_ms: HOUR_MS,
    });
    out
}

/// Rooms of 16, 24 and 32 (the default `MAX_PEERS`), filling one peer
/// every 2 s or all within 3 s, for `duration_ms`.
pub fn large_rooms(seed: u64, duration_ms: u64) -> Vec<Scenario> {
    let mut rng = seed ^ 0x5151;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        rng >> 33
    };
    let minutes = duration_ms / 60_000;
    let mut out = Vec::new();
    for n in [16usize, 24, 32] {
        out.push(Scenario {
            name: format!("large room of {n}: one every 2 s, {minutes} min"),
            plans: (0..n).map(|i| stays(i as u64 * 2000)).collect(),
            duration_ms,
        });
        out.push(Scenario {
            name: format!("storm room of {n}: all within 3 s, {minutes} min"),
            plans: (0..n).map(|_| stays(next() % 3000)).collect(),
            duration_ms,
        });
    }
    out
}

/// Figures of one scenario against one server.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub server: &'static str,
    pub requests: u64,
    pub class_a: u64,
    pub class_b: u64,
    pub lists: u64,
    pub peak_puts_per_key_second: u64,
    pub rate_limited: u64,
    pub precondition_failed: u64,
    pub status_503: u64,
    pub peer_hours: f64,
    pub joins: u64,
    pub pairs: u64,
    pub pairs_incomplete: u64,
    pub pair_ms_median: u64,
    pub pair_ms_max: u64,
    pub missing_peer_observations: u64,
    pub stale_peer_observations: u64,
    pub lost_packages: u64,
    /// Class A spent on the last peer's join: its own writes and the
    /// others' writes that add or withdraw a package for it, within 60 s.
    pub last_join_class_a: u64,
    /// Latency of the writes (requests with `p`) as the client waits for them.
    pub write_ms_p50: u64,
    pub write_ms_p99: u64,
    pub write_ms_max: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Ours,
    Original,
}

/// Runs `scenario` against one server on a fresh virtual clock.
pub fn run(scenario: &Scenario, which: Which, seed: u64) -> Report {
    run_with(scenario, which, seed, false)
}

/// Like [`run`]; with `hints`, clients follow the worker's polling hints.
pub fn run_with(scenario: &Scenario, which: Which, seed: u64, hints: bool) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread tokio runtime builds");
    runtime.block_on(async {
        let platform = SimPlatform::new(seed);
        match which {
            Which::Ours => {
                drive(
                    &Ours::new(&platform, R2_LATENCY_MS),
                    &platform,
                    scenario,
                    seed,
                    hints,
                )
                .await
            }
            Which::Original => {
                drive(
                    &Original::new(&platform, R2_LATENCY_MS),
                    &platform,
                    scenario,
                    seed,
                    hints,
                )
                .await
            }
        }
    })
}

async fn drive<S: Server>(
    server: &S,
    platform: &SimPlatform,
    scenario: &Scenario,
    seed: u64,
    hints: bool,
) -> Report {
    let world = World::default();
    let end = scenario.duration_ms;
    let clients = scenario.plans.iter().enumerate().map(|(n, plan)| {
        let mut client = Client::new(server, &world, platform, "sim-room", n, seed);
        client.follow_hints = hints;
        client.run(*plan, end)
    });
    join_all(clients.collect()).await;
    summarize(server, &world, scenario)
}

fn summarize<S: Server>(server: &S, world: &World, scenario: &Scenario) -> Report {
    let end = scenario.duration_ms;
    let stats = server.stats();
    let lifetimes = world.lifetimes.borrow();
    let peer_hours = lifetimes
        .values()
        .map(|(joined, left)| left.unwrap_or(end).saturating_sub(*joined) as f64 / HOUR_MS as f64)
        .sum();
    let alive_until = |s: &str| {
        lifetimes
            .get(s)
            .map_or(0, |(_, left)| left.unwrap_or(u64::MAX))
    };

    // Pairs that both stayed at least a minute after meeting.
    let mut times = Vec::new();
    let mut pairs = 0;
    let mut incomplete = 0;
    let mut met = std::collections::BTreeSet::new();
    for (a, (ja, _)) in lifetimes.iter() {
        for (b, (jb, _)) in lifetimes.iter() {
            if a < b {
                let both = (*ja).max(*jb);
                if alive_until(a).min(alive_until(b)).min(end) >= both + 60_000 {
                    met.insert(((a.clone(), b.clone()), both));
                }
            }
        }
    }
    let logs = world.pairs.borrow();
    for (key, both) in met {
        pairs += 1;
        match logs
            .get(&key)
            .and_then(|l| Some(l.a_got_b?.max(l.b_got_a?)))
        {
            Some(done) => times.push(done.saturating_sub(both)),
            None => incomplete += 1,
        }
    }
    times.sort_unstable();

    let received = world.received.borrow();
    let lost_packages = world
        .acked
        .borrow()
        .iter()
        .filter(|((from, to, _), at)| {
            let deadline = *at + 60_000;
            deadline < end && alive_until(from) > deadline && alive_until(to) > deadline
        })
        .filter(|(key, _)| !received.contains(*key))
        .count() as u64;

    // The last joiner's join, and how long writes kept clients waiting.
    let last = lifetimes
        .iter()
        .max_by_key(|(_, (joined, _))| *joined)
        .map(|(s, (joined, _))| (s.clone(), *joined));
    let log = world.log.borrow();
    let last_join_class_a = last.map_or(0, |(joiner, at)| {
        log.iter()
            .filter(|r| r.at >= at && r.at < at + 60_000)
            .filter(|r| r.write && (r.session == joiner || r.touched.contains(&joiner)))
            .map(|r| u64::from(r.class_a))
            .sum()
    });
    // `SIM_TRACE=<session prefix>`: every request of those sessions, to stderr.
    if let Ok(who) = std::env::var("SIM_TRACE") {
        for r in log.iter().filter(|r| r.session.starts_with(&who)) {
            eprintln!(
                "TRACE {} {} write={} A={} took={} status={}",
                r.at, r.session, r.write, r.class_a, r.took_ms, r.status
            );
        }
    }
    let mut write_ms: Vec<u64> = log.iter().filter(|r| r.write).map(|r| r.took_ms).collect();
    write_ms.sort_unstable();
    let pct = |p: f64| {
        write_ms
            .get(((write_ms.len() as f64 * p) as usize).min(write_ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };

    Report {
        last_join_class_a,
        write_ms_p50: pct(0.5),
        write_ms_p99: pct(0.99),
        write_ms_max: write_ms.last().copied().unwrap_or(0),
        server: server.name(),
        requests: world.requests.get(),
        class_a: stats.class_a,
        class_b: stats.class_b,
        lists: stats.lists,
        peak_puts_per_key_second: stats.peak_puts_per_key_second,
        rate_limited: stats.rate_limited,
        precondition_failed: stats.precondition_failed,
        status_503: world.status_503.get(),
        peer_hours,
        joins: scenario.plans.iter().filter(|p| p.join_at < end).count() as u64,
        pairs,
        pairs_incomplete: incomplete,
        pair_ms_median: times.get(times.len() / 2).copied().unwrap_or(0),
        pair_ms_max: times.last().copied().unwrap_or(0),
        missing_peer_observations: world.missing_peer_observations.get(),
        stale_peer_observations: world.stale_peer_observations.get(),
        lost_packages,
    }
}

fn ratio(ours: f64, original: f64) -> String {
    if original == 0.0 {
        if ours == 0.0 {
            "=".to_owned()
        } else {
            "-".to_owned()
        }
    } else {
        format!("{:.2}", ours / original)
    }
}

/// The side-by-side table of one scenario, as Markdown.
pub fn table(scenario: &Scenario, ours: &Report, original: &Report) -> String {
    let per = |v: u64, r: &Report| v as f64 / r.peer_hours.max(1e-9);
    let per_join = |v: u64, r: &Report| v as f64 / r.joins.max(1) as f64;
    let rows: Vec<(&str, f64, f64, bool)> = vec![
        (
            "Worker requests",
            ours.requests as f64,
            original.requests as f64,
            false,
        ),
        (
            "Worker requests per peer-hour",
            per(ours.requests, ours),
            per(original.requests, original),
            true,
        ),
        (
            "Class A per peer-hour",
            per(ours.class_a, ours),
            per(original.class_a, original),
            true,
        ),
        (
            "Class B per peer-hour",
            per(ours.class_b, ours),
            per(original.class_b, original),
            true,
        ),
        (
            "Class A per join",
            per_join(ours.class_a, ours),
            per_join(original.class_a, original),
            true,
        ),
        (
            "Class B per join",
            per_join(ours.class_b, ours),
            per_join(original.class_b, original),
            true,
        ),
        (
            "Class A for the last peer's join",
            ours.last_join_class_a as f64,
            original.last_join_class_a as f64,
            false,
        ),
        (
            "write latency p50 (ms)",
            ours.write_ms_p50 as f64,
            original.write_ms_p50 as f64,
            false,
        ),
        (
            "write latency p99 (ms)",
            ours.write_ms_p99 as f64,
            original.write_ms_p99 as f64,
            false,
        ),
        (
            "write latency max (ms)",
            ours.write_ms_max as f64,
            original.write_ms_max as f64,
            false,
        ),
        (
            "LIST operations",
            ours.lists as f64,
            original.lists as f64,
            false,
        ),
        (
            "peak puts/s on one key",
            ours.peak_puts_per_key_second as f64,
            original.peak_puts_per_key_second as f64,
            false,
        ),
        (
            "429s from R2",
            ours.rate_limited as f64,
            original.rate_limited as f64,
            false,
        ),
        (
            "conditional puts refused (retried)",
            ours.precondition_failed as f64,
            original.precondition_failed as f64,
            false,
        ),
        (
            "503s to clients",
            ours.status_503 as f64,
            original.status_503 as f64,
            false,
        ),
        (
            "pairs that met",
            ours.pairs as f64,
            original.pairs as f64,
            false,
        ),
        (
            "pairs without both packages",
            ours.pairs_incomplete as f64,
            original.pairs_incomplete as f64,
            false,
        ),
        (
            "time to both packages, median (s)",
            ours.pair_ms_median as f64 / 1000.0,
            original.pair_ms_median as f64 / 1000.0,
            true,
        ),
        (
            "time to both packages, max (s)",
            ours.pair_ms_max as f64 / 1000.0,
            original.pair_ms_max as f64 / 1000.0,
            true,
        ),
        (
            "lost registrations (polls missing a live peer)",
            ours.missing_peer_observations as f64,
            original.missing_peer_observations as f64,
            false,
        ),
        (
            "stale peers returned (polls listing an expired peer)",
            ours.stale_peer_observations as f64,
            original.stale_peer_observations as f64,
            false,
        ),
        (
            "lost packages",
            ours.lost_packages as f64,
            original.lost_packages as f64,
            false,
        ),
    ];
    let mut s = format!(
        "### {}\n\n{} joins, {:.2} peer-hours\n\n| figure | p2pcf-rs | original | ours/original |\n|---|---:|---:|---:|\n",
        scenario.name, ours.joins, ours.peer_hours
    );
    for (name, a, b, fractional) in rows {
        let fmt = |v: f64| {
            if fractional {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        };
        s.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            fmt(a),
            fmt(b),
            ratio(a, b)
        ));
    }
    s
}

/// Scenarios for the polling hints: steady rooms (requests per peer-hour)
/// and connection time, two peers arriving together or one joining a peer
/// that has been alone for ten minutes.
pub fn hint_scenarios() -> Vec<Scenario> {
    let mut out: Vec<Scenario> = [2usize, 8]
        .iter()
        .map(|&n| Scenario {
            name: format!("steady room of {n}, 1 h"),
            plans: (0..n).map(|i| stays(i as u64 * 2000)).collect(),
            duration_ms: HOUR_MS,
        })
        .collect();
    out.push(Scenario {
        name: "two peers arriving together, 5 min".to_owned(),
        plans: vec![stays(0), stays(500)],
        duration_ms: 5 * 60_000,
    });
    out.push(Scenario {
        name: "a peer joining one alone for 10 min, 15 min".to_owned(),
        plans: vec![stays(0), stays(10 * 60_000)],
        duration_ms: 15 * 60_000,
    });
    out
}

/// Ours without and with hints, side by side.
pub fn hint_table(seed: u64) -> String {
    let mut s = String::from(
        "| scenario (10 seeds) | requests per peer-hour, stock schedule | with hints | change | time until every pair has both packages, stock: mean | with hints: mean |\n|---|---:|---:|---:|---:|---:|\n",
    );
    // Ten seeds per scenario: connection times depend on where in their
    // polling cycle the peers happen to be.
    const SEEDS: u64 = 10;
    for scenario in hint_scenarios() {
        let (mut a, mut b, mut ta, mut tb, mut worst_a, mut worst_b) =
            (0.0, 0.0, 0.0, 0.0, 0u64, 0u64);
        for k in 0..SEEDS {
            let stock = run_with(&scenario, Which::Ours, seed + k, false);
            let hinted = run_with(&scenario, Which::Ours, seed + k, true);
            let per_hour = |r: &Report| r.requests as f64 / r.peer_hours.max(1e-9);
            a += per_hour(&stock) / SEEDS as f64;
            b += per_hour(&hinted) / SEEDS as f64;
            ta += stock.pair_ms_max as f64 / 1000.0 / SEEDS as f64;
            tb += hinted.pair_ms_max as f64 / 1000.0 / SEEDS as f64;
            worst_a = worst_a.max(stock.pair_ms_max);
            worst_b = worst_b.max(hinted.pair_ms_max);
        }
        s.push_str(&format!(
            "| {} | {a:.0} | {b:.0} | {:+.0} % | {ta:.1} s (worst {:.1} s) | {tb:.1} s (worst {:.1} s) |\n",
            scenario.name,
            (b / a - 1.0) * 100.0,
            worst_a as f64 / 1000.0,
            worst_b as f64 / 1000.0,
        ));
    }
    s
}
