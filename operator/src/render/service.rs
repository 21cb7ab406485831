//! The Service through which the API asks the limiters.

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{
    Owner,
    deployment::{HTTP_PORT, PORT_NAME},
};

/// Renders the ClusterIP Service `<policy>-limiter` in front of the
/// limiter pods. Pure.
pub fn render_service(owner: &Owner) -> Service {
    Service {
        metadata: owner.child_metadata(owner.limiter_name()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(owner.selector_labels()),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                app_protocol: Some("http".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
