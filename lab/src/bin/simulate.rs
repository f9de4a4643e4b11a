//! The cost simulator: simulated stock clients against this worker (real
//! HTTP layer, in-memory R2 model) and against a model of the original
//! worker, on a virtual clock. Deterministic for a given seed.
//!
//!     cargo simulate [--seed N] [--only NAME-PREFIX|relay|hints]   # cargo run --release -p p2pcf-lab --bin simulate
//!
//! `SIM_TRACE=s012 cargo simulate` prints every request of the simulated
//! sessions whose id starts with `s012` (time, write, Class A, latency, status).

fn main() {
    use p2pcf_lab::scenario::{all, hint_table, run, table, Which};

    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seed: u64 = arg("--seed").and_then(|s| s.parse().ok()).unwrap_or(42);
    let only = arg("--only");

    println!(
        "# Cost simulation (seed {seed}, R2 latency {} ms per operation)\n",
        p2pcf_lab::scenario::R2_LATENCY_MS
    );
    for scenario in all(seed) {
        if only
            .as_deref()
            .is_some_and(|o| !scenario.name.starts_with(o))
        {
            continue;
        }
        let ours = run(&scenario, Which::Ours, seed);
        let original = run(&scenario, Which::Original, seed);
        println!("{}", table(&scenario, &ours, &original));
    }
    if only.as_deref().is_none_or(|o| o == "relay") {
        println!("### A relay member's hour, pushed and polled (counted)\n");
        println!("{}", p2pcf_lab::relay_cost::table());
    }
    if only.as_deref().is_none_or(|o| o == "hints") {
        println!("### Polling hints (p2pcf-rs, clients with client/p2pcf-hints.js vs the stock schedule)\n");
        println!("{}", hint_table(seed));
    }
}
