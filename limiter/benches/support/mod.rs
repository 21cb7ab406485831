//! What every benchmark shares: the policy it checks against, and a way to
//! run the memory store's futures without a runtime.

use std::{
    pin::pin,
    task::{Context, Poll, Waker},
};

/// The quickstart's three limits with quotas no benchmark exhausts; see
/// `policy.yaml`.
pub const POLICY: &str = include_str!("../policy.yaml");

/// Runs a future that completes without waiting, as every future of the
/// memory store does; no runtime is needed, so none is measured.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a memory store check never waits"),
    }
}
