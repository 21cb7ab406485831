//! Heap bytes per live counter in the memory store.
//!
//! One million distinct users each make one check, which creates their
//! `per-user` counter (and, once, the shared `global` one). A counting
//! global allocator gives the live heap bytes before and after; their
//! difference over the counters held is the cost of one counter, printed
//! beside the raw size of its key and value.
//!
//! Run with `cargo bench -p sluice-limiter --bench memory`. Under
//! `cargo test` (no `--bench` argument) it only makes 10,000 checks, to
//! show that it still runs.

use std::{alloc::System, fmt::Write};

use sluice_limiter::{
    Limiter,
    policy::Request,
    store::{MemoryStore, MemoryStoreConfig},
};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use support::{POLICY, ready};

mod support;

#[global_allocator]
static HEAP: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn live_bytes() -> usize {
    let stats = HEAP.stats();
    stats.bytes_allocated - stats.bytes_deallocated
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let users = if benching { 1_000_000 } else { 10_000 };
    let policies = sluice_crds::parse_policies(POLICY, "policy.yaml").expect("valid policy");
    let config = MemoryStoreConfig::default();
    let limiter = Limiter::new(policies, MemoryStore::new(config));

    let before = live_bytes();
    let allocations_before = HEAP.stats().allocations;
    let mut user = String::with_capacity(16);
    for i in 0..users {
        user.clear();
        let _ = write!(user, "user-{i:07}");
        // No endpoint: `global` and `per-user` apply, both far from full.
        let request = Request {
            user: Some(&user),
            endpoint: None,
            cost: 1,
        };
        let (_, decision) = ready(limiter.check(None, &request)).expect("decided");
        assert!(decision.allowed, "every check fits the benchmark policy");
    }
    let grown = live_bytes() - before;
    let allocations = HEAP.stats().allocations - allocations_before;

    let counters = limiter.store().len();
    let per_counter = grown as f64 / counters as f64;
    let raw = MemoryStore::ENTRY_BYTES;
    println!("checks by distinct users  {users}");
    println!("store capacity            {}", limiter.store().capacity());
    println!("counters held             {counters}");
    println!("heap growth               {grown} bytes");
    println!("per counter               {per_counter:.1} bytes");
    println!("raw key + value           {raw} bytes");
    println!("overhead ratio            {:.2}", per_counter / raw as f64);
    // Mostly the check's own short-lived buffers; the tables' growth adds
    // a few hundred in all.
    let per_check = allocations as f64 / users as f64;
    println!("allocations per check     {per_check:.2}");
}
