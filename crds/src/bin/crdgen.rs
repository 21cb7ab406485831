//! Prints the `RateLimitPolicy` CustomResourceDefinition as YAML.

use kube::CustomResourceExt;
use sluice_crds::RateLimitPolicy;

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", serde_yaml::to_string(&RateLimitPolicy::crd())?);
    Ok(())
}
