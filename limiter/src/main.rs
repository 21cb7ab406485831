//! `sluice-limiter`: parses arguments and runs the server.

use std::process::ExitCode;

use clap::Parser;
use sluice_limiter::{config::Config, server};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // One TLS crypto provider for rediss:// connections, chosen explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::parse();
    match server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice-limiter: {error:#}");
            ExitCode::FAILURE
        }
    }
}
