//! `sluice-operator`: parses arguments and hands over to a subcommand.

use std::process::ExitCode;

use clap::Parser;
use sluice_operator::{
    adaptive,
    cli::{Cli, Command, RbacArgs},
    rbac, run,
};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // One TLS provider for the whole process, chosen before any client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match Cli::parse().command {
        Command::Run(args) => run::run(args).await,
        Command::Rbac(args) => print_rbac(&args),
        Command::Adapt(args) => adaptive::standalone::adapt(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_rbac(args: &RbacArgs) -> anyhow::Result<()> {
    let install = rbac::Install {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
    };
    print!("{}", rbac::manifests(&install)?);
    Ok(())
}
