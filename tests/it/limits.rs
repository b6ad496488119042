//! Connection limits at the edge (issue #4): request header size, TLS
//! handshakes (concurrency and the handshake timeout), idle TLS connections,
//! and WebSocket keep-alive pings (contract §2 `CALLBRIDGE_PING_INTERVAL_SECS`:
//! "a connection silent for 2 intervals is closed").

use std::time::Duration;

use crate::common::edges::*;
use crate::common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Generous bound for the server to drop a connection whose timeout is 1 s.
const DROP_WITHIN: Duration = Duration::from_secs(8);

/// Read from a raw socket until EOF or an error (reset); `Err` with what was
/// read if it stays open past `within`.
async fn wait_closed(tcp: &mut TcpStream, within: Duration) -> Result<Duration, String> {
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 4096];
    let mut got = 0usize;
    loop {
        match tokio::time::timeout_at(start + within, tcp.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {within:?} ({got} bytes read)")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(start.elapsed()),
            // A TLS alert before closing is fine.
            Ok(Ok(n)) => got += n,
        }
    }
}

// ------------------------------------------------------------ header size

/// `GET path` with `headers` on a fresh keep-alive connection; `Ok(status)`,
/// or `Err` when the server closed the connection instead of answering.
async fn get_with_headers(s: &Server, path: &str, headers: &[(&str, &str)]) -> Result<u16, String> {
    let mut c = callbridge::client::Https::connect(&s.base, s.tls.clone())
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(WAIT, c.request("GET", path, headers, "")).await {
        Err(_) => panic!("request with large headers neither answered nor closed within {WAIT:?}"),
        Ok(Ok(r)) => Ok(r.status),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn request_with_64kb_of_headers_is_refused_and_server_keeps_serving() {
    let s = Server::start().await;
    let value = "v".repeat(1000);
    let names: Vec<String> = (0..64).map(|i| format!("x-pad-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    let big = "b".repeat(64 * 1024);
    for (label, headers) in [
        ("64 headers of 1000 bytes", many.clone()),
        ("one 64 KB header", vec![("x-big", big.as_str())]),
    ] {
        let outcome = get_with_headers(&s, "/health", &headers).await;
        eprintln!("{label}: {outcome:?}");
        match outcome {
            Ok(431) | Err(_) => {}
            Ok(other) => panic!("{label}: expected 431 or a closed connection, got {other}"),
        }
        // Others are still served, on new connections.
        let r = s.get("/health").await.expect("/health after refusal");
        assert_eq!(r.status, 200, "{label}: /health afterwards");
    }
    // Headers of a normal size (a JWT-sized Authorization plus a few KB) pass.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let pad = "p".repeat(4096);
    let status = get_with_headers(
        &s,
        "/api/status",
        &[("authorization", &auth), ("x-pad", &pad)],
    )
    .await
    .expect("4 KB of headers are served");
    assert_eq!(status, 200);
    s.stop().await;
}

// ------------------------------------------------------------ TLS handshakes

#[tokio::test]
async fn silent_tcp_connection_is_closed_by_the_handshake_timeout() {
    let s = Server::start_with(&[("CALLBRIDGE_HANDSHAKE_TIMEOUT_SECS", "1")]).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let took = wait_closed(&mut tcp, DROP_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("a TCP client that sends nothing is not dropped: {e}"));
    eprintln!("silent TCP connection dropped after {took:?}");
    assert_eq!(s.get("/health").await.unwrap().status, 200);
    s.stop().await;
}

#[tokio::test]
async fn stalled_partial_client_hello_is_closed_by_the_handshake_timeout() {
    let s = Server::start_with(&[("CALLBRIDGE_HANDSHAKE_TIMEOUT_SECS", "1")]).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    // A TLS handshake record header announcing 512 bytes, and only 8 of them.
    tcp.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .await
    .unwrap();
    let took = wait_closed(&mut tcp, DROP_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("a stalled ClientHello is not dropped: {e}"));
    eprintln!("stalled handshake dropped after {took:?}");
    assert_eq!(s.get("/health").await.unwrap().status, 200);
    s.stop().await;
}

#[tokio::test]
async fn flood_of_silent_connections_does_not_lock_out_real_clients() {
    let s = Server::start_with(&[("CALLBRIDGE_HANDSHAKE_TIMEOUT_SECS", "1")]).await;
    // More stalled connections than handshakes may run at once (256).
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let start = tokio::time::Instant::now();
    let r = tokio::time::timeout(DROP_WITHIN, s.get("/health"))
        .await
        .expect("a real client is served despite 300 stalled handshakes")
        .expect("/health");
    assert_eq!(r.status, 200);
    eprintln!("real client served after {:?}", start.elapsed());
    // Every stalled connection is dropped eventually.
    let mut open = 0;
    for tcp in &mut silent {
        let left = (start + Duration::from_secs(15))
            .saturating_duration_since(tokio::time::Instant::now());
        if wait_closed(tcp, left.max(Duration::from_millis(10)))
            .await
            .is_err()
        {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "stalled connections still open 15 s after the flood"
    );
    s.stop().await;
}

#[tokio::test]
async fn hundreds_of_concurrent_tls_handshakes_all_complete() {
    let s = Server::start().await;
    let n = 300;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (url, tls) = (format!("{}/health", s.base), s.tls.clone());
        tasks.spawn(async move {
            callbridge::client::request_once(&url, "GET", &[], "", tls)
                .await
                .map(|r| r.status)
        });
    }
    let results = tokio::time::timeout(Duration::from_secs(25), tasks.join_all())
        .await
        .expect("300 concurrent HTTPS requests finish within 25 s");
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|r| match r {
            Ok(200) => None,
            Ok(st) => Some(format!("status {st}")),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {n} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    s.stop().await;
}

/// hyper's header read timeout (15 s) drops a client that finished TLS but
/// never sends a request.
#[tokio::test]
async fn tls_client_that_sends_no_request_is_eventually_closed() {
    let s = Server::start().await;
    let mut tls = tls_connect(&s, None).await;
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(Duration::from_secs(25), tls.read(&mut buf))
        .await
        .expect("an idle TLS connection without a request is dropped within 25 s");
    match r {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            // A 408 before closing is fine too.
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(
                head.starts_with("HTTP/1.1 408"),
                "unexpected bytes: {head:?}"
            );
        }
    }
    eprintln!("idle TLS connection dropped after {:?}", start.elapsed());
    s.stop().await;
}

// ------------------------------------------------------------ pings

#[tokio::test]
async fn server_pings_at_the_configured_interval() {
    let s = Server::start_with(&[("CALLBRIDGE_PING_INTERVAL_SECS", "1")]).await;
    s.put_user("u1", json!({})).await;
    let (mut ws, connected, _) = s.connect("u1").await;
    assert_eq!(connected["data"]["heartbeatSecs"], 1, "{connected}");
    let deadline = tokio::time::Instant::now() + Duration::from_millis(4500);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("unexpected while waiting for pings: {other:?}"),
        }
    }
    assert!(
        pings >= 2,
        "expected a ping about every second, got {pings} in 4.5 s"
    );
    s.stop().await;
}

#[tokio::test]
async fn client_that_never_answers_pings_is_closed_after_two_intervals() {
    let s = Server::start_with(&[("CALLBRIDGE_PING_INTERVAL_SECS", "1")]).await;
    s.put_user("u1", json!({})).await;
    // Connected and authenticated, then never polled again: tungstenite
    // answers pings only while the stream is read, so this client is silent
    // (a half-open peer looks the same to the server).
    let (mut ws, _, _) = s.connect("u1").await;
    assert_eq!(total_connections(&s).await, 1);
    let took = wait_total(&s, 0, Duration::from_secs(10)).await;
    eprintln!("silent client dropped after {took:?}");
    let st = status(&s).await;
    assert_eq!(st["connections"]["authenticated"], 0, "{st}");
    assert!(st["connections"]["perUser"].get("u1").is_none(), "{st}");
    // The client, reading now, sees its connection end.
    let (_, end) = read_until_end(&mut ws, WAIT).await;
    assert!(end.is_some(), "the dropped client's stream did not end");
    assert_healthy(&s, "u1").await;
    s.stop().await;
}

#[tokio::test]
async fn client_that_reads_answers_pings_and_stays_connected() {
    let s = Server::start_with(&[("CALLBRIDGE_PING_INTERVAL_SECS", "1")]).await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    // Reading makes tungstenite answer each ping with a pong.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("a client answering pings was disturbed: {other:?}"),
        }
    }
    assert!(pings >= 3, "only {pings} pings in 5 s");
    assert_eq!(total_connections(&s).await, 1);
    send_json(&mut ws, json!({"type":"ping","data":{}})).await;
    let pong = next_json(&mut ws).await;
    assert_eq!(pong["event"], "pong", "{pong}");
    s.stop().await;
}
