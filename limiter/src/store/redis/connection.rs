//! Connecting to Redis: a standalone server or a cluster, with the
//! password and TLS roots of the configuration, and telling a refused
//! password (a mistake to fix) from a server that is down (a failure to
//! ride out).

use std::time::Duration;

use redis::{
    Client, ErrorKind, RedisError, TlsCertificates,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};

use super::RedisConfig;
use crate::store::StoreError;

/// The longest wait between two attempts to reconnect to a lost server.
/// Left to grow (the client's default), the waits reach seconds while
/// Redis is down, and a limiter would keep deciding without Redis for that
/// long after it is back. An attempt is one connect, cheap even when
/// refused.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(100);

/// A connection shared by every check: requests from concurrent checks are
/// pipelined on it.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Sends a command.
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, RedisError> {
        match self {
            Self::Single(c) => command.query_async(&mut c.clone()).await,
            Self::Cluster(c) => command.query_async(&mut c.clone()).await,
        }
    }

    /// Runs a script, loading it first if Redis does not have it.
    pub(super) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        match self {
            Self::Single(c) => invocation.invoke_async(&mut c.clone()).await,
            Self::Cluster(c) => invocation.invoke_async(&mut c.clone()).await,
        }
    }
}

/// Connects as `config` says and checks that Redis runs commands for us.
pub(super) async fn open(config: &RedisConfig) -> Result<Connection, StoreError> {
    let connection = match config.cluster {
        false => Connection::Single(connect_single(config).await?),
        true => Connection::Cluster(connect_cluster(config).await?),
    };
    check_access(&connection).await?;
    Ok(connection)
}

async fn connect_single(config: &RedisConfig) -> Result<ConnectionManager, StoreError> {
    let mut info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
        .map_err(connect_error)?;
    if let Some(password) = &config.password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let client = match &config.ca_cert {
        Some(pem) => Client::build_with_tls(info, trusting(pem)),
        None => Client::open(info),
    };
    let client = client.map_err(connect_error)?;
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout.max(Duration::from_secs(1))))
        .set_response_timeout(Some(config.timeout))
        .set_max_delay(RECONNECT_MAX_DELAY);
    ConnectionManager::new_with_config(client, manager)
        .await
        .map_err(connect_error)
}

async fn connect_cluster(config: &RedisConfig) -> Result<ClusterConnection, StoreError> {
    let nodes: Vec<&str> = config.url.split(',').map(str::trim).collect();
    let mut builder = ClusterClientBuilder::new(nodes)
        .connection_timeout(config.timeout.max(Duration::from_secs(1)))
        .response_timeout(config.timeout);
    if let Some(password) = &config.password {
        builder = builder.password(password.clone());
    }
    if let Some(pem) = &config.ca_cert {
        builder = builder.certs(trusting(pem));
    }
    let client = builder.build().map_err(connect_error)?;
    client.get_async_connection().await.map_err(connect_error)
}

/// TLS settings that trust the authorities in `pem` and present no client
/// certificate.
fn trusting(pem: &[u8]) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// Refuses a connection on which Redis will not run commands for want of
/// a password. Connecting alone does not tell: a server that requires a
/// password accepts the connection and refuses each command, so without
/// this a limiter started without its password would run degraded until
/// someone noticed. Any other failure of the probe is left to the breaker,
/// so that a slow first answer does not stop a limiter from starting.
async fn check_access(connection: &Connection) -> Result<(), StoreError> {
    let answer = connection.query::<()>(&redis::cmd("PING")).await;
    match answer {
        Err(error) if error.code() == Some("NOAUTH") => {
            Err(StoreError::Refused(PASSWORD_MISSING.into()))
        }
        Err(error) if error.kind() == ErrorKind::AuthenticationFailed => Err(connect_error(error)),
        _ => Ok(()),
    }
}

/// Why a limiter that Redis asks for a password does not start, and what
/// to do about it.
const PASSWORD_MISSING: &str = "Redis requires a password, and none was given; \
    set SLUICE_REDIS_PASSWORD or --redis-password-file";

/// Like [`backend_error`], telling apart what waiting does not mend: a
/// refused password (said plainly), a configuration the client cannot use,
/// a TLS handshake that failed because the server's certificate is not
/// trusted or not for this host, a server that does not speak Redis, and a
/// standalone Redis asked for as a cluster. A limiter does not start on
/// those; on any other failure it starts degraded and keeps trying.
fn connect_error(error: RedisError) -> StoreError {
    match error.kind() {
        ErrorKind::AuthenticationFailed => StoreError::Refused("Redis refused the password".into()),
        ErrorKind::InvalidClientConfig => StoreError::Refused(error.to_string()),
        ErrorKind::Parse => StoreError::Refused(format!(
            "the server at the Redis URL does not answer like Redis ({error})"
        )),
        _ if error.to_string().contains("cluster support disabled") => StoreError::Refused(
            "--redis-cluster is set but this Redis is not a cluster; drop the flag".into(),
        ),
        _ if failed_tls_handshake(&error) => StoreError::Refused(error.to_string()),
        _ => backend_error(error),
    }
}

/// Whether `error` comes from a TLS handshake that failed on the server's
/// certificate. The client hands the TLS layer's error over as an I/O error
/// whose type it does not expose, so its message is what tells: these are
/// the words the TLS layer starts such a failure with.
fn failed_tls_handshake(error: &RedisError) -> bool {
    const CERTIFICATE_FAILURES: [&str; 2] = ["invalid peer certificate", "received fatal alert"];
    let message = error.to_string();
    error.is_io_error() && CERTIFICATE_FAILURES.iter().any(|m| message.contains(m))
}

pub(super) fn backend_error(error: RedisError) -> StoreError {
    // The client's own response timeout reports as an I/O error.
    match error.is_timeout() {
        true => StoreError::Timeout,
        false => StoreError::Backend(error.to_string()),
    }
}
