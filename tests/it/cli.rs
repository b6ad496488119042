//! The `callbridge` binary as a user runs it: `serve --dev`, `simulate`,
//! `listen`, `token`, `keygen`, `check-config`, and their exit codes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::mongo_required;
use crate::common::process::{clean_command, free_port, signal, wait_exit};
use serde_json::Value;

/// A command with a clean CALLBRIDGE_* environment.
fn cmd(data_dir: &Path) -> Command {
    let mut c = clean_command();
    c.env("CALLBRIDGE_DATA_DIR", data_dir);
    c
}

/// Lines of a child's stream, delivered through a channel.
pub(crate) fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub(crate) fn wait_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("expected output line did not come");
        if pred(&line) {
            return line;
        }
    }
}

#[test]
fn dev_quick_tour_serve_simulate_listen() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen_addr = format!("127.0.0.1:{port}");

    let mut serve = cmd(dir.path())
        .args(["serve", "--dev"])
        .env("CALLBRIDGE_LISTEN", &listen_addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(serve.stdout.take().unwrap());
    let err = lines(serve.stderr.take().unwrap());
    let listen_line = wait_line(&out, |l| l.contains("callbridge listen "));
    // The server logs that it listens once it accepts.
    wait_line(&err, |l| l.contains("listening"));

    // Run the printed line as a user would paste it.
    let args: Vec<&str> = listen_line.split_whitespace().skip(1).collect();
    assert!(args.contains(&"--ca"), "{listen_line}");
    let mut listen = cmd(dir.path())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let l_out = lines(listen.stdout.take().unwrap());
    let l_err = lines(listen.stderr.take().unwrap());
    let connected: Value = serde_json::from_str(&wait_line(&l_out, |_| true)).unwrap();
    assert_eq!(connected["event"], "connected");
    assert_eq!(connected["data"]["userId"], "demo");
    let snapshot: Value = serde_json::from_str(&wait_line(&l_out, |_| true)).unwrap();
    assert_eq!(snapshot["event"], "snapshot");

    let sim = cmd(dir.path())
        .args(["simulate", "call.initiated", "--to", "+15550000001"])
        .env("CALLBRIDGE_LISTEN", &listen_addr)
        .output()
        .unwrap();
    let sim_out = String::from_utf8_lossy(&sim.stdout);
    assert!(
        sim.status.success(),
        "simulate failed: {sim_out} {}",
        String::from_utf8_lossy(&sim.stderr)
    );
    assert!(sim_out.starts_with("HTTP 200"), "{sim_out}");

    let ev: Value = serde_json::from_str(&wait_line(&l_out, |_| true)).unwrap();
    assert_eq!(ev["event"], "call-initiated");
    assert_eq!(ev["seq"], 1);
    assert_eq!(ev["data"]["to"], "+15550000001");
    assert_eq!(ev["data"]["userIds"], serde_json::json!(["demo"]));

    // A simulated event for nobody's number is not delivered to demo
    // (unrouted → supervisors, and demo is an agent).
    let sim = cmd(dir.path())
        .args(["simulate", "call.initiated", "--to", "+15559999999"])
        .env("CALLBRIDGE_LISTEN", &listen_addr)
        .output()
        .unwrap();
    assert!(sim.status.success());

    check_dev_page(dir.path(), &listen_addr);

    // SIGTERM: the daemon closes sockets with 1001 and exits 0.
    signal(&serve, "-TERM");
    assert_eq!(wait_exit(&mut serve), 0, "serve exit code");
    let closed = wait_line(&l_err, |l| l.starts_with("closed:"));
    assert!(closed.starts_with("closed: 1001"), "{closed}");
    assert!(l_out.try_iter().all(|l| !l.contains("+15559999999")));
    assert_eq!(wait_exit(&mut listen), 1);

    // Second start reuses the same generated files (same CA).
    let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let mut again = cmd(dir.path())
        .args(["serve", "--dev"])
        .env("CALLBRIDGE_LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out2 = lines(again.stdout.take().unwrap());
    wait_line(&out2, |l| l.contains("callbridge listen "));
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);
    signal(&again, "-TERM");
    assert_eq!(wait_exit(&mut again), 0);
}

#[test]
fn token_keygen_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = cmd(dir.path())
        .args(["token", "--user", "u1", "--ttl", "30m"])
        .env("CALLBRIDGE_JWT_SECRET", "cli-test-secret-0123456789")
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let claims = jsonwebtoken_claims(token);
    assert_eq!(claims["sub"], "u1");
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 1800);

    let bad_ttl = cmd(dir.path())
        .args(["token", "--user", "u1", "--ttl", "soon"])
        .output()
        .unwrap();
    assert_eq!(bad_ttl.status.code(), Some(2));

    let out = cmd(dir.path()).arg("keygen").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("public_key="))
        .expect("public_key line");
    let key = callbridge::config::parse_ed25519_public_key(public).unwrap();
    assert_eq!(key.len(), 32);
    assert!(text.contains("private_key_pkcs8="));

    let unknown = cmd(dir.path()).arg("frobnicate").output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let help = cmd(dir.path()).args(["serve", "--help"]).output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--dev"));
}

/// `GET /dev` (contract §7): the web dialer page with a token for the demo
/// user filled in, and `GET /dev/token` for a fresh one. (The page itself
/// is driven in Chromium by clients/js/test/browser.)
fn check_dev_page(dir: &Path, listen_addr: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ca = std::fs::read(dir.join("ca.pem")).unwrap();
        let tls = callbridge::tls::client_config(Some(&ca)).unwrap();
        let get = |path: &str| {
            let url = format!("https://{listen_addr}{path}");
            let tls = tls.clone();
            async move {
                callbridge::client::request_once(&url, "GET", &[], "", tls)
                    .await
                    .unwrap()
            }
        };
        let page = get("/dev").await;
        assert_eq!(page.status, 200);
        let ct = page.headers.get("content-type").unwrap().to_str().unwrap();
        assert!(ct.starts_with("text/html"), "{ct}");
        assert!(page.headers.get("content-security-policy").is_some());
        let html = String::from_utf8(page.body.to_vec()).unwrap();
        assert!(html.contains("callbridge dev dialer"));
        assert!(
            !html.contains("__CALLBRIDGE_DEV_TOKEN__"),
            "token filled in"
        );
        let start = html.find("token: \"").expect("token in the page") + "token: \"".len();
        let token = &html[start..start + html[start..].find('"').unwrap()];
        assert_eq!(jsonwebtoken_claims(token)["sub"], "demo");
        let fresh = get("/dev/token").await;
        assert_eq!(fresh.status, 200);
        let token = fresh.json()["token"].as_str().unwrap().to_string();
        assert_eq!(jsonwebtoken_claims(&token)["sub"], "demo");
    });
}

fn jsonwebtoken_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = callbridge::telnyx::decode_base64(payload).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn invalid_configuration_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing set, no --dev: every required variable is named.
    let out = cmd(dir.path()).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for var in [
        "CALLBRIDGE_TLS_CERT",
        "CALLBRIDGE_TLS_KEY",
        "CALLBRIDGE_TELNYX_PUBLIC_KEY",
        "CALLBRIDGE_JWT_SECRET",
    ] {
        assert!(err.contains(var), "{var} not named in: {err}");
    }

    // --dev fills those, but a bad number still stops startup.
    let out = cmd(dir.path())
        .args(["serve", "--dev"])
        .env("CALLBRIDGE_PING_INTERVAL_SECS", "often")
        .env("CALLBRIDGE_TELNYX_PUBLIC_KEY", "c2hvcnQ=")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CALLBRIDGE_PING_INTERVAL_SECS"), "{err}");
    assert!(err.contains("CALLBRIDGE_TELNYX_PUBLIC_KEY"), "{err}");

    // A certificate that does not match its key.
    let other = tempfile::tempdir().unwrap();
    callbridge::dev::prepare(other.path()).unwrap();
    callbridge::dev::prepare(dir.path()).unwrap();
    let out = cmd(dir.path())
        .args(["check-config", "--dev"])
        .env("CALLBRIDGE_TLS_CERT", dir.path().join("cert.pem"))
        .env("CALLBRIDGE_TLS_KEY", other.path().join("key.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CALLBRIDGE_TLS_KEY"), "{err}");

    // A usable dev configuration checks out.
    let out = cmd(dir.path())
        .args(["check-config", "--dev"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("store: embedded"));

    // A TOML file with an unknown key is refused; environment beats the file.
    let file = dir.path().join("callbridge.toml");
    std::fs::write(&file, "ping_intervall_secs = 5\n").unwrap();
    let out = cmd(dir.path())
        .args(["check-config", "--dev", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(&file, "ping_interval_secs = \"x\"\n").unwrap();
    let out = cmd(dir.path())
        .args(["check-config", "--dev", "--config"])
        .arg(&file)
        .env("CALLBRIDGE_PING_INTERVAL_SECS", "7")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Secrets never reach the messages.
    let out = cmd(dir.path())
        .args(["check-config", "--dev"])
        .env("CALLBRIDGE_JWT_SECRET", "tooshort-SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("CALLBRIDGE_JWT_SECRET"));
    assert!(!all.contains("tooshort-SECRET"));
}

#[test]
fn check_config_reports_mongodb_reachability_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port: unreachable is a runtime failure (1).
    let dead = format!("mongodb://127.0.0.1:{}/?replicaSet=secantus", free_port());
    let out = cmd(dir.path())
        .args(["check-config", "--dev"])
        .env("CALLBRIDGE_MONGODB_URI", &dead)
        .env("CALLBRIDGE_STORE_TIMEOUT_SECS", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MongoDB not reachable"));

    let Some(uri) = mongo_required("check-config against a reachable MongoDB") else {
        return;
    };
    let db = format!("cc{}", uuid::Uuid::new_v4().simple());
    let check = || {
        cmd(dir.path())
            .args(["check-config", "--dev"])
            .env("CALLBRIDGE_MONGODB_URI", &uri)
            .env("CALLBRIDGE_MONGODB_DB", &db)
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("MongoDB reachable"), "{text}");
    assert!(text.contains("indexes not created yet"), "{text}");
    // The transaction lifetime (how long a killed instance's locks last) is
    // reported, whatever the server says of it.
    assert!(
        text.contains("MongoDB transactionLifetimeLimitSeconds"),
        "{text}"
    );

    // After a daemon start created them, they are reported in place.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        callbridge::store::mongo::MongoStore::connect(
            &uri,
            &db,
            std::time::Duration::from_secs(24 * 3600),
            std::time::Duration::from_secs(5),
            false,
        )
        .await
        .unwrap();
    });
    let out = check();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MongoDB indexes in place"));
}

/// `listen --send-to USER --sign`: lines typed on stdin go out as signed
/// `send`s with the line as `payload` text; `sent` comes back on stdout.
/// And `--call` sends to everyone on a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_sends_stdin_lines_signed_to_a_user_and_to_a_call() {
    use crate::common::*;
    use std::io::Write;
    let s = Server::start_with(&[("CALLBRIDGE_CLIENT_SIGNING", "required")]).await;
    s.put_user("u1", serde_json::json!({"phoneNumbers": ["+15550002222"]}))
        .await;
    s.put_user("u2", serde_json::json!({"phoneNumbers": ["+15550002222"]}))
        .await;
    let (mut u2, _, _) = s.connect("u2").await;
    let ca = s.dir.join("ca.pem");
    let spawn = |extra: &[&str]| {
        let mut c = crate::common::process::clean_command();
        c.args([
            "listen",
            "--url",
            &s.ws_url,
            "--token",
            &s.token("u1"),
            "--sign",
        ])
        .arg("--ca")
        .arg(&ca)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
    };
    let mut child = spawn(&["--send-to", "u2"]);
    let out = lines(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "hello there\n\nsecond line ☎").unwrap();
    for (n, text) in [(1, "hello there"), (2, "second line ☎")] {
        let m = next_json(&mut u2).await;
        assert_eq!(m["event"], "message", "{m}");
        assert_eq!(m["data"]["payload"], text);
        assert_eq!(m["data"]["ref"], format!("line-{n}"));
    }
    let sent = wait_line(&out, |l| l.contains("\"sent\""));
    assert!(sent.contains("line-1"), "{sent}");
    let _ = child.kill();
    let _ = child.wait();

    // A call bound to both users (same number): `--call` reaches u2.
    let ring = envelope(
        "call.initiated",
        call_payload("cli1", "+15559990000", "+15550002222"),
    );
    assert_eq!(s.post_webhook(&ring).await.status, 200);
    assert_eq!(next_json(&mut u2).await["event"], "call-initiated");
    let mut child = spawn(&["--call", "cli1"]);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "on the call").unwrap();
    let m = next_json(&mut u2).await;
    assert_eq!(
        (m["data"]["call"].as_str(), m["data"]["payload"].as_str()),
        (Some("cli1"), Some("on the call"))
    );
    let _ = child.kill();
    let _ = child.wait();
    s.stop().await;
}
