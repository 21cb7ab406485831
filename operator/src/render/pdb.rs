//! The PodDisruptionBudget that keeps limiters up through node drains.

use k8s_openapi::{
    api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use sluice_crds::LimiterSpec;

use super::Owner;

/// Renders the PodDisruptionBudget `<policy>-limiter`, or nothing for a
/// single replica. Pure.
///
/// A budget over one pod would either block every drain (`minAvailable:
/// 1`) or protect nothing, so a single limiter gets none. With more, one
/// pod may be evicted at a time, which a drain can always make progress
/// with.
pub fn render_pdb(owner: &Owner, limiter: &LimiterSpec) -> Option<PodDisruptionBudget> {
    if limiter.replicas <= 1 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: owner.child_metadata(owner.limiter_name()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(owner.selector()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
