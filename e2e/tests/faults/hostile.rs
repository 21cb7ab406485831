//! Clients that misbehave on purpose, on raw TCP connections.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How long a hostile connection stayed open: it connects, then sends
/// nothing (`silent`) or a request's headers one byte every 100 ms, never
/// finishing them. `None`: still open after five seconds.
pub async fn loris(address: &str, silent: bool) -> Option<Duration> {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(address).await else {
        return Some(Duration::ZERO);
    };
    let headers = b"POST /v1/check HTTP/1.1\r\nhost: sluice\r\ncontent-type: application/json\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut sent = 0;
    let mut buf = [0; 512];
    while started.elapsed() < Duration::from_secs(5) {
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return Some(started.elapsed());
        }
        if !silent && sent < headers.len() {
            if stream.write_all(&headers[sent..=sent]).await.is_err() {
                return Some(started.elapsed());
            }
            sent += 1;
        }
    }
    None
}

/// Sends a check's headers and the first byte of a 100-byte body, then a
/// byte now and then, never finishing; returns what the server answered
/// and when it closed the connection (or gave up after five seconds).
pub async fn slow_body(address: &str) -> (String, Duration) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    let head = "POST /v1/check HTTP/1.1\r\nhost: sluice\r\ncontent-length: 100\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    while started.elapsed() < Duration::from_secs(5) {
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            // The client is slow, not gone.
            Err(_) => {
                let _ = stream.write_all(b" ").await;
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    (answer, started.elapsed())
}
