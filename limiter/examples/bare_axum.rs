//! The floor the HTTP benchmark measures the limiter against: an axum
//! handler that reads each `POST /v1/check` body and answers `200`, with
//! nothing else to do. It runs on the same tokio runtime as
//! `sluice-limiter` (the default multi-threaded one, one worker per core)
//! and is served by the same accept loop (`sluice_limiter::http::serve`,
//! with its default bounds), so that the difference between the two is the
//! limiter's router, request bounds and handler.
//!
//! `cargo run --release -p sluice-limiter --example bare_axum -- 127.0.0.1:0`
//! prints the address it serves on, then serves until killed.

use std::net::SocketAddr;

use anyhow::Context;
use axum::{Router, body::Bytes, http::StatusCode, routing::post};
use sluice_limiter::http::serve::{ServeLimits, serve};
use tokio::net::TcpListener;

async fn check(body: Bytes) -> StatusCode {
    std::hint::black_box(body);
    StatusCode::OK
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("the argument is not an address")?,
        None => "127.0.0.1:0".parse()?,
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    let router = Router::new().route("/v1/check", post(check));
    serve(
        listener,
        router,
        ServeLimits::default(),
        std::future::pending(),
    )
    .await;
    Ok(())
}
