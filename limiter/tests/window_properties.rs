//! Properties of the sliding window over random arrival sequences, checked
//! through the engine on the in-memory store.

use std::{collections::HashMap, sync::Arc};

use proptest::prelude::*;
use sluice_limiter::{
    behaviour::{Harness, T0},
    clock::ManualClock,
    store::{MemoryStore, MemoryStoreConfig},
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

async fn memory_store(clock: ManualClock) -> MemoryStore {
    MemoryStore::with_clock(MemoryStoreConfig::default(), Arc::new(clock))
}

fn limits(requests: u64, window: &str) -> String {
    format!("    - {{name: l, requests: {requests}, window: {window}}}\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the arrivals, no window aligned to the limit's windows ever
    /// admits more cost than the effective limit.
    #[test]
    fn no_fixed_window_ever_admits_more_than_the_effective_limit(
        requests in 1u64..40,
        multiplier in 0.05f64..=1.0,
        window_s in prop::sample::select(vec![1u64, 10, 60]),
        arrivals in prop::collection::vec((0u64..3_000, 1u64..4), 1..300),
    ) {
        runtime().block_on(async {
            let h = Harness::new(memory_store, &limits(requests, &format!("{window_s}s"))).await;
            h.set_multiplier(multiplier);
            let window_ms = window_s * 1000;
            let mut admitted: HashMap<u64, u64> = HashMap::new();
            let mut effective = 0;
            for (gap_ms, cost) in arrivals {
                h.clock.advance(gap_ms);
                let d = h.check(None, None, cost).await;
                effective = d.limits[0].effective;
                if d.allowed {
                    let now = h.clock_now();
                    *admitted.entry((now - T0) / window_ms).or_default() += cost;
                }
            }
            for (window, total) in admitted {
                prop_assert!(total <= effective, "window {window} admitted {total} > {effective}");
            }
            Ok(())
        })?;
    }

    /// Two bursts on either side of a window boundary, closer together than
    /// one request's share of the window, admit at most one more than the
    /// limit in total.
    #[test]
    fn bursts_straddling_a_boundary_admit_at_most_one_extra(
        requests in 1u64..100,
        before_ms in 1u64..60_000,
        after_frac in 0.0f64..=1.0,
        first in 0usize..200,
        second in 0usize..200,
    ) {
        runtime().block_on(async {
            let h = Harness::new(memory_store, &limits(requests, "1m")).await;
            let after_ms = 1 + ((60_000 / requests - 1) as f64 * after_frac) as u64;
            h.clock.advance(60_000 - before_ms);
            let a = h.admitted(None, None, first).await;
            h.clock.advance(before_ms + after_ms);
            let b = h.admitted(None, None, second).await;
            prop_assert!((a + b) as u64 <= requests + 1, "{a} + {b} > {requests} + 1");
            Ok(())
        })?;
    }
}
