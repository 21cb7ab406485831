//! Prints the Lua text of the Redis check script, exactly as the limiter
//! sends it, so that `scripts/bench-redis.sh` can load the same script
//! into Redis without a second copy of it in the repository.
//!
//! `cargo run --release -p sluice-limiter --example check_script`

fn main() {
    print!("{}", sluice_limiter::store::redis::CHECK_LUA);
}
