//! WebSocket edge cases against the real server (issue #4): fragmented
//! messages, abrupt disconnects (between frames, mid-frame, while the server
//! is writing), a peer that stalls mid-frame, and garbage after the upgrade.
//! Every case ends with the server's connection count back where it was
//! and new clients still served.

use std::time::Duration;

use crate::common::edges::*;
use crate::common::*;
use callbridge::client::Wss;
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// How long the server may take to notice a dead peer and clean up.
const CLEANUP: Duration = Duration::from_secs(10);
const PING: &str = r#"{"type":"ping","data":{}}"#;

/// One client frame as it goes on the wire: masked, with `opcode` and FIN.
fn masked_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend((len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend((len as u64).to_be_bytes());
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend(mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Write raw bytes into the TLS stream under the WebSocket.
async fn write_raw(ws: &mut Wss, bytes: &[u8]) {
    let tls = ws.get_mut();
    tls.write_all(bytes).await.expect("raw write");
    tls.flush().await.expect("raw flush");
}

/// Make the socket send RST instead of FIN when dropped.
fn reset_on_drop(ws: &Wss) {
    ws.get_ref().get_ref().0.set_zero_linger().unwrap();
}

/// A server with users `u1` and `u2`, none connected.
async fn server_with_users(extra: &[(&str, &str)]) -> Server {
    let s = Server::start_with(extra).await;
    s.put_users(&["u1", "u2"]).await;
    s
}

// ------------------------------------------------------------ fragmentation

#[tokio::test]
async fn fragmented_text_message_is_reassembled() {
    let s = server_with_users(&[]).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let (a, b) = PING.split_at(10);
    ws.send(Message::Frame(Frame::message(
        a.as_bytes().to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        b.as_bytes().to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    let pong = next_json(&mut ws).await;
    assert_eq!(pong["event"], "pong", "{pong}");
    assert_alive(&mut ws).await;
    s.stop().await;
}

#[tokio::test]
async fn many_fragments_with_a_ping_in_between_are_reassembled() {
    let s = server_with_users(&[]).await;
    let (mut ws, _, _) = s.connect("u1").await;
    // One byte per fragment, a control frame (allowed by RFC 6455 §5.4)
    // in the middle; a frame split across TLS writes too.
    let bytes = PING.as_bytes();
    let mut wire = Vec::new();
    for (i, byte) in bytes.iter().enumerate() {
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        wire.extend(masked_frame(opcode, i + 1 == bytes.len(), &[*byte]));
        if i == bytes.len() / 2 {
            wire.extend(masked_frame(0x9, true, b"mid"));
        }
    }
    for chunk in wire.chunks(7) {
        write_raw(&mut ws, chunk).await;
    }
    let pong = next_json(&mut ws).await;
    assert_eq!(pong["event"], "pong", "{pong}");
    assert_alive(&mut ws).await;
    s.stop().await;
}

#[tokio::test]
async fn fragmented_message_over_the_size_limit_closes_with_1009() {
    let s = server_with_users(&[("CALLBRIDGE_MAX_CLIENT_MESSAGE_BYTES", "4096")]).await;
    let (mut ws, _, _) = s.connect("u1").await;
    // 8 fragments of 1 KB: each frame is under the limit, the message is not.
    let chunk = vec![b' '; 1024];
    for i in 0..8 {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        if ws
            .send(Message::Frame(Frame::message(
                chunk.clone(),
                opcode,
                i == 7,
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1009);
    wait_total(&s, 0, CLEANUP).await;
    assert_healthy(&s, "u1").await;
    s.stop().await;
}

// ------------------------------------------------------------ abrupt disconnects

#[tokio::test]
async fn client_vanishing_between_frames_is_cleaned_up() {
    let s = server_with_users(&[]).await;
    for (label, rst) in [("FIN", false), ("RST", true)] {
        let (ws, _, _) = s.connect("u1").await;
        // And one that has not authenticated yet.
        let mut pre = s.ws_raw("", &[]).await;
        assert_eq!(next_json(&mut pre).await["event"], "auth-required");
        assert_eq!(total_connections(&s).await, 2, "{label}");
        // No close frame, no TLS close_notify: just the TCP connection going.
        if rst {
            reset_on_drop(&ws);
            reset_on_drop(&pre);
        }
        drop(ws);
        drop(pre);
        wait_total(&s, 0, CLEANUP).await;
        let st = status(&s).await;
        assert_eq!(st["connections"]["authenticated"], 0, "{label}: {st}");
        assert!(
            st["connections"]["perUser"].get("u1").is_none(),
            "{label}: {st}"
        );
        assert_healthy(&s, "u1").await;
        wait_total(&s, 0, CLEANUP).await;
    }
    // Presence follows: u1 is offline again.
    let u = s.admin("GET", "/api/users/u1", None).await.json();
    assert_eq!(u["presence"]["online"], false, "{u}");
    s.stop().await;
}

#[tokio::test]
async fn client_vanishing_mid_frame_is_cleaned_up() {
    let s = server_with_users(&[]).await;
    let (mut bystander, _, _) = s.connect("u2").await;
    for rst in [false, true] {
        let (mut ws, _, _) = s.connect("u1").await;
        let frame = masked_frame(0x1, true, "x".repeat(300).as_bytes());
        write_raw(&mut ws, &frame[..frame.len() / 2]).await;
        if rst {
            reset_on_drop(&ws);
        }
        drop(ws);
        wait_total(&s, 1, CLEANUP).await;
    }
    // Half a frame header only.
    let (mut ws, _, _) = s.connect("u1").await;
    write_raw(&mut ws, &[0x81, 0xfe]).await;
    drop(ws);
    wait_total(&s, 1, CLEANUP).await;
    assert_alive(&mut bystander).await;
    assert_healthy(&s, "u1").await;
    s.stop().await;
}

#[tokio::test]
async fn client_vanishing_while_the_server_writes_is_cleaned_up() {
    let s = server_with_users(&[]).await;
    // A client that does not read, so the server is blocked mid-write when
    // the connection resets.
    let mut ws = ws_with_rcvbuf(&s, &format!("token={}", s.token("u1")), Some(4096)).await;
    read_connected(&mut ws).await;
    let mut poster = Poster::connect(&s).await;
    for _ in 0..300 {
        let env = event_for("u1", "call.dtmf.received", "c1", 16 * 1024);
        let r = poster.post(&s.signer, env.to_string().as_bytes()).await;
        assert_eq!(r.status, 200);
    }
    reset_on_drop(&ws);
    drop(ws);
    wait_total(&s, 0, CLEANUP).await;
    assert_healthy(&s, "u1").await;
    // Posting for a user whose socket is gone still works.
    let env = event_for("u1", "call.dtmf.received", "c1", 0);
    let r = poster.post(&s.signer, env.to_string().as_bytes()).await;
    assert_eq!(r.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn client_stalling_mid_frame_is_closed_by_the_ping_timeout() {
    let s = server_with_users(&[("CALLBRIDGE_PING_INTERVAL_SECS", "1")]).await;
    let (mut ws, _, _) = s.connect("u1").await;
    // Half a frame, then nothing (the socket stays open, nothing is read).
    let frame = masked_frame(0x1, true, PING.as_bytes());
    write_raw(&mut ws, &frame[..frame.len() - 5]).await;
    wait_total(&s, 0, CLEANUP).await;
    assert_healthy(&s, "u1").await;
    drop(ws);
    s.stop().await;
}

// ------------------------------------------------------------ garbage

/// Byte strings that are not a valid client frame sequence.
fn garbage_cases() -> Vec<(String, Vec<u8>)> {
    let mut cases = vec![
        ("0xff bytes".to_string(), vec![0xff; 64]),
        (
            "unmasked text frame".to_string(),
            [&[0x81, PING.len() as u8][..], PING.as_bytes()].concat(),
        ),
        (
            "an HTTP request".to_string(),
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "reserved opcode".to_string(),
            masked_frame(0x3, true, b"hello"),
        ),
        (
            "RSV bits without an extension".to_string(),
            masked_frame(0x40 | 0x1, true, PING.as_bytes()),
        ),
        (
            "2^63-byte length".to_string(),
            [&[0x82u8, 0xff, 0x7f][..], &[0xff; 7], &[0, 0, 0, 0], b"abc"].concat(),
        ),
        (
            "continuation without a start".to_string(),
            masked_frame(0x0, true, b"abc"),
        ),
        (
            "fragmented ping".to_string(),
            masked_frame(0x9, false, b"abc"),
        ),
        (
            "ping with 126-byte payload".to_string(),
            masked_frame(0x9, true, &[b'p'; 126]),
        ),
    ];
    for seed in 1..=6u64 {
        cases.push((
            format!("random bytes, seed {seed}"),
            Rng::new(seed).bytes(4096),
        ));
    }
    cases
}

#[tokio::test]
async fn garbage_after_the_upgrade_closes_only_that_connection() {
    let s = server_with_users(&[]).await;
    let (mut bystander, _, _) = s.connect("u2").await;
    for (label, bytes) in garbage_cases() {
        for authenticated in [true, false] {
            let mut ws = if authenticated {
                s.connect("u1").await.0
            } else {
                let mut ws = s.ws_raw("", &[]).await;
                let first = next_json(&mut ws).await;
                assert_eq!(first["event"], "auth-required", "{first}");
                ws
            };
            write_raw(&mut ws, &bytes).await;
            let (texts, end) = read_until_end(&mut ws, WAIT).await;
            eprintln!("{label} (authenticated: {authenticated}): {end:?}");
            assert!(
                end.is_some(),
                "{label} (authenticated: {authenticated}): connection still open after {WAIT:?}; \
                 got {texts:?}"
            );
            drop(ws);
            wait_total(&s, 1, CLEANUP).await;
        }
    }
    assert_alive(&mut bystander).await;
    assert_healthy(&s, "u1").await;
    s.stop().await;
}

/// A text frame that is not UTF-8 is closed with 1007 (RFC 6455 §7.4.1:
/// inconsistent data), and the server stays healthy.
#[tokio::test]
async fn invalid_utf8_text_frame_does_not_hurt_the_server() {
    let s = server_with_users(&[]).await;
    let (mut ws, _, _) = s.connect("u1").await;
    write_raw(&mut ws, &masked_frame(0x1, true, &[0x7b, 0xff, 0xfe, 0x7d])).await;
    let (texts, end) = read_until_end(&mut ws, Duration::from_secs(5)).await;
    assert!(texts.is_empty(), "{texts:?}");
    match end {
        Some(End::Close(code, _)) => assert_eq!(code, 1007),
        other => panic!("expected a 1007 close, got {other:?}"),
    }
    assert_healthy(&s, "u1").await;
    s.stop().await;
}
