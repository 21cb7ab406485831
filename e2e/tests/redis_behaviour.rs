//! The store behaviour suite on a real Redis server and a real three-master
//! Redis Cluster, with time moved by the suite's manual clock.

use std::{sync::Arc, sync::OnceLock, time::Duration};

use sluice_e2e::{RedisCluster, RedisServer};
use sluice_limiter::{
    clock::ManualClock,
    store::{RedisConfig, RedisStore},
};

fn config(url: String, cluster: bool) -> RedisConfig {
    RedisConfig {
        url,
        cluster,
        password: None,
        ca_cert: None,
        timeout: Duration::from_secs(2),
    }
}

mod standalone {
    use super::*;

    fn server() -> &'static RedisServer {
        static SERVER: OnceLock<RedisServer> = OnceLock::new();
        SERVER.get_or_init(RedisServer::start)
    }

    async fn redis_store(clock: ManualClock) -> RedisStore {
        let store = RedisStore::connect(&config(server().url(), false))
            .await
            .expect("connect");
        store.with_clock(Arc::new(clock))
    }

    sluice_limiter::behaviour_suite!(redis_store);
}

mod cluster {
    use super::*;

    fn cluster() -> &'static RedisCluster {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| RedisCluster::start(3, 0))
    }

    async fn cluster_store(clock: ManualClock) -> RedisStore {
        let url = tokio::task::spawn_blocking(|| cluster().url())
            .await
            .unwrap();
        let store = RedisStore::connect(&config(url, true))
            .await
            .expect("connect");
        store.with_clock(Arc::new(clock))
    }

    sluice_limiter::behaviour_suite!(cluster_store);
}
