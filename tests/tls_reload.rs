//! Certificate renewal under a running daemon: new connections get the new
//! certificate, open WebSockets keep working, a broken replacement is
//! refused and the old certificate stays in service.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use callbridge::config::{Config, Sources};
use common::*;
use serde_json::json;

/// The leaf certificate a fresh TLS connection is served.
async fn served_leaf(s: &Server, tls: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let target = callbridge::client::parse_url(&s.base).unwrap();
    let stream = callbridge::client::connect_tls(&target, tls).await.unwrap();
    let (_, conn) = stream.get_ref();
    conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn leaf_der(cert_pem: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(cert_pem).unwrap();
    rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Replace a file the way renewals do: write aside, then rename over.
fn replace(dst: &Path, src: &Path) {
    let tmp = dst.with_extension("new");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

struct Setup {
    s: Server,
    live: tempfile::TempDir,
    renewed: tempfile::TempDir,
    both_cas: Arc<rustls::ClientConfig>,
}

/// A daemon serving copies of certificate A from `live/`, and a second
/// certificate B (another CA) ready in `renewed/`; a client trusting both.
async fn setup(poll_secs: &str) -> Setup {
    let data = tempfile::tempdir().unwrap();
    let (files, signer) = dev_files(data.path());
    let live = tempfile::tempdir().unwrap();
    let cert = live.path().join("fullchain.pem");
    let key = live.path().join("privkey.pem");
    std::fs::copy(&files.cert, &cert).unwrap();
    std::fs::copy(&files.key, &key).unwrap();
    let renewed = tempfile::tempdir().unwrap();
    let (other, _) = dev_files(renewed.path());

    let pubkey = callbridge::config::b64(&signer.public_key());
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let config = Config::from_sources(
        &Sources::from_pairs(vec![
            ("CALLBRIDGE_TLS_CERT", c.as_str()),
            ("CALLBRIDGE_TLS_KEY", k.as_str()),
            ("CALLBRIDGE_TELNYX_PUBLIC_KEY", pubkey.as_str()),
            ("CALLBRIDGE_JWT_SECRET", JWT_SECRET),
            ("CALLBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("CALLBRIDGE_TLS_RELOAD_POLL_SECS", poll_secs),
        ]),
        false,
        None,
    )
    .unwrap();
    let s = Server::start_config(config, data.path().to_path_buf(), signer, &files.ca).await;
    let mut cas = std::fs::read(&files.ca).unwrap();
    cas.extend(std::fs::read(&other.ca).unwrap());
    let both_cas = callbridge::tls::client_config(Some(&cas)).unwrap();
    std::mem::forget(data);
    Setup {
        s,
        live,
        renewed,
        both_cas,
    }
}

async fn wait_for_leaf(s: &Server, tls: Arc<rustls::ClientConfig>, want: &[u8]) {
    for _ in 0..100 {
        if served_leaf(s, tls.clone()).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the renewed certificate was not served");
}

async fn still_talks(ws: &mut callbridge::client::Wss) {
    send_json(ws, json!({"type": "ping", "data": {}})).await;
    assert_eq!(next_json(ws).await["event"], "pong");
}

#[tokio::test]
async fn renewed_files_are_served_to_new_connections_and_open_sockets_survive() {
    let Setup {
        s,
        live,
        renewed,
        both_cas,
    } = setup("1").await;
    let old_leaf = leaf_der(&live.path().join("fullchain.pem"));
    assert_eq!(served_leaf(&s, both_cas.clone()).await, old_leaf);
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;

    replace(
        &live.path().join("fullchain.pem"),
        &renewed.path().join("cert.pem"),
    );
    replace(
        &live.path().join("privkey.pem"),
        &renewed.path().join("key.pem"),
    );
    let new_leaf = leaf_der(&renewed.path().join("cert.pem"));
    assert_ne!(new_leaf, old_leaf);
    wait_for_leaf(&s, both_cas.clone(), &new_leaf).await;

    // The socket opened on the old certificate keeps working.
    still_talks(&mut ws).await;
    let metrics = String::from_utf8(s.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        metrics.contains("callbridge_tls_reloads_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn broken_replacement_is_refused_and_the_old_certificate_stays() {
    let Setup {
        s,
        live,
        renewed,
        both_cas,
    } = setup("1").await;
    let old_leaf = leaf_der(&live.path().join("fullchain.pem"));
    // A new certificate with the OLD key: they do not match.
    replace(
        &live.path().join("fullchain.pem"),
        &renewed.path().join("cert.pem"),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = String::from_utf8(s.get("/metrics").await.unwrap().body.to_vec()).unwrap();
        if m.contains("callbridge_tls_reloads_total{outcome=\"error\"}") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no refused reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served_leaf(&s, both_cas.clone()).await, old_leaf);
    // Garbage too.
    std::fs::write(live.path().join("fullchain.pem"), b"not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(served_leaf(&s, both_cas.clone()).await, old_leaf);
    // Fixed files are picked up.
    replace(
        &live.path().join("privkey.pem"),
        &renewed.path().join("key.pem"),
    );
    replace(
        &live.path().join("fullchain.pem"),
        &renewed.path().join("cert.pem"),
    );
    wait_for_leaf(&s, both_cas, &leaf_der(&renewed.path().join("cert.pem"))).await;
    s.stop().await;
}

#[tokio::test]
async fn sighup_reloads_and_expiry_is_a_metric() {
    // No polling: only SIGHUP reloads.
    let Setup {
        s,
        live,
        renewed,
        both_cas,
    } = setup("0").await;
    let m = String::from_utf8(s.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    let expiry: i64 = m
        .lines()
        .find(|l| l.starts_with("callbridge_tls_cert_expiry_timestamp_seconds "))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("expiry metric");
    // rcgen's default validity ends in 4096; anything in the future will do.
    assert!(expiry > now_secs(), "{expiry}");

    replace(
        &live.path().join("fullchain.pem"),
        &renewed.path().join("cert.pem"),
    );
    replace(
        &live.path().join("privkey.pem"),
        &renewed.path().join("key.pem"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new_leaf = leaf_der(&renewed.path().join("cert.pem"));
    assert_ne!(
        served_leaf(&s, both_cas.clone()).await,
        new_leaf,
        "reloaded without SIGHUP"
    );
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    wait_for_leaf(&s, both_cas, &new_leaf).await;
    s.stop().await;
}

/// The value of a metric line with no labels, 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn reload_api_answers_whether_the_certificate_was_taken() {
    // No polling: only the API (and SIGHUP, which a test beside this one
    // may send to the whole process) reloads.
    let Setup {
        s,
        live,
        renewed,
        both_cas,
    } = setup("0").await;
    let (cert, key) = (
        live.path().join("fullchain.pem"),
        live.path().join("privkey.pem"),
    );
    let old_leaf = leaf_der(&cert);
    let unauthorized = s.request("POST", "/api/reload", &[], Vec::new()).await;
    assert_json_error(&unauthorized, 401);

    let same = s.admin("POST", "/api/reload", None).await;
    assert_eq!(same.status, 200, "{}", text(&same));
    assert_eq!(same.json()["reloaded"], true);
    let not_after = same.json()["notAfter"].as_str().unwrap().to_string();
    assert!(
        not_after.ends_with('Z') && not_after.len() >= 20,
        "{not_after}"
    );

    // A renewal whose key does not match its certificate.
    replace(&cert, &renewed.path().join("cert.pem"));
    let refused = s.admin("POST", "/api/reload", None).await;
    let e = assert_json_error(&refused, 409);
    assert_eq!(e["error"], "reload-refused");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(&key.display().to_string()), "{message}");
    assert!(message.contains("previous certificate stays"), "{message}");
    assert_eq!(served_leaf(&s, both_cas.clone()).await, old_leaf);
    let m = text(&s.get("/metrics").await.unwrap());
    assert!(
        metric(&m, "callbridge_tls_reload_failures_total") >= 1.0,
        "{m}"
    );

    // The key follows: the next reload takes both.
    replace(&key, &renewed.path().join("key.pem"));
    let taken = s.admin("POST", "/api/reload", None).await;
    assert_eq!(taken.status, 200, "{}", text(&taken));
    let new_leaf = leaf_der(&renewed.path().join("cert.pem"));
    assert_eq!(served_leaf(&s, both_cas).await, new_leaf);
    s.stop().await;
}

/// `callbridge reload` as systemd's `ExecReload=` runs it: no flags, the
/// service's environment (listen address, certificate, admin token).
fn reload_command(s: &Server, cert: &Path) -> std::process::Command {
    let mut c = common::process::clean_command();
    c.arg("reload")
        .env("CALLBRIDGE_LISTEN", s.addr.to_string())
        .env("CALLBRIDGE_TLS_CERT", cert)
        .env("CALLBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CALLBRIDGE_DATA_DIR", &s.dir);
    c
}

// Multi-threaded: the command runs blocking while the daemon answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_exits_1_when_the_daemon_refuses() {
    let Setup {
        s, live, renewed, ..
    } = setup("0").await;
    let cert = live.path().join("fullchain.pem");
    let ok = reload_command(&s, &cert).output().unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{stdout}{:?}", ok.stderr);
    assert!(
        stdout.starts_with("reloaded: certificate valid until "),
        "{stdout}"
    );

    replace(&cert, &renewed.path().join("cert.pem"));
    // Reached at its listen address, the daemon still serves the old
    // certificate; the command trusts the dev CA and the configured chain.
    let refused = reload_command(&s, &cert).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("reload refused: CALLBRIDGE_TLS_KEY"),
        "{stderr}"
    );

    let no_token = reload_command(&s, &cert)
        .env_remove("CALLBRIDGE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(no_token.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("CALLBRIDGE_ADMIN_TOKEN"));

    // A renewal that left no certificate in the file: there is no name to
    // check the daemon against; said as such (not as a TLS name mismatch).
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let garbage = reload_command(&s, &cert).output().unwrap();
    let stderr = String::from_utf8_lossy(&garbage.stderr);
    assert_eq!(garbage.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds no PEM certificate"), "{stderr}");
    assert!(stderr.contains(&cert.display().to_string()), "{stderr}");
    s.stop().await;
}
