//! `callbridge verify-webhook` as a receiver's developer runs it: header and
//! body files of a received outbound webhook (contract §10), the verdict and
//! the exit code (0 valid, 1 does not verify, 2 unusable arguments).

use std::io::Write as _;
use std::process::{Output, Stdio};

use callbridge::outbound::signature::{new_secret, secret_key, sign};

use crate::common::process::clean_command;

/// The Python `standardwebhooks` vector pinned in
/// `src/outbound/signature.rs` (the Svix documentation's example):
/// `Webhook(SECRET).sign(ID, datetime.fromtimestamp(TS, tz=timezone.utc), BODY)`.
const PY_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PY_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const PY_TS: i64 = 1_614_265_330;
const PY_BODY: &str = r#"{"test": 2432232314}"#;
const PY_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

const BODY: &str = r#"{"type":"call-hangup","timestamp":"2025-01-02T03:04:05.678Z","data":{"callId":"v3:abc","durationSecs":42}}"#;

fn now() -> i64 {
    callbridge::clock::now_secs()
}

/// A received request as files: its header lines and its body.
struct Received {
    dir: tempfile::TempDir,
}

impl Received {
    fn new(headers: &str, body: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("headers.txt"), headers).unwrap();
        std::fs::write(dir.path().join("body.json"), body).unwrap();
        Received { dir }
    }

    /// A request as callbridge sends it, signed with `secret`.
    fn signed(secret: &str, id: &str, ts: i64, body: &str) -> Self {
        let sig = sign(&secret_key(secret).unwrap(), id, ts, body.as_bytes());
        Self::new(&headers(id, &ts.to_string(), &sig), body.as_bytes())
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn verify(&self, secret: &str, extra: &[&str]) -> Output {
        let (h, b) = (self.path("headers.txt"), self.path("body.json"));
        clean_command()
            .args(["verify-webhook", "--secret", secret, "--headers", &h])
            .args(["--body", &b])
            .args(extra)
            .output()
            .unwrap()
    }
}

fn headers(id: &str, ts: &str, sig: &str) -> String {
    format!(
        "POST /hooks/callbridge HTTP/1.1\r\nhost: crm.example\r\ncontent-type: application/json\r\n\
         webhook-id: {id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\n\r\n"
    )
}

/// The exit code, stdout and stderr; neither stream shows the secret.
fn outcome(out: &Output, secret: &str) -> (i32, String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    assert!(
        !stdout.contains(b64) && !stderr.contains(b64),
        "secret printed: {stdout} {stderr}"
    );
    (out.status.code().unwrap(), stdout, stderr)
}

#[test]
fn a_request_signed_by_callbridge_verifies() {
    let secret = new_secret();
    let req = Received::signed(&secret, "msg_2xYzAbC", now(), BODY);
    let (code, stdout, stderr) = outcome(&req.verify(&secret, &[]), &secret);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        "ok: signature valid (webhook-id msg_2xYzAbC)"
    );
}

#[test]
fn the_pinned_python_vector_verifies() {
    // Header names in any case, a status line first, LF line ends.
    let text = format!(
        "HTTP/1.1 200 OK\nWebhook-Id: {PY_ID}\nWEBHOOK-TIMESTAMP: {PY_TS}\nWebhook-Signature: {PY_SIGNATURE}\n"
    );
    let req = Received::new(&text, PY_BODY.as_bytes());
    // The vector is from 2021: a tolerance that reaches back to it.
    let tolerance = (now() - PY_TS + 60).to_string();
    let out = req.verify(PY_SECRET, &["--tolerance-secs", &tolerance]);
    let (code, stdout, stderr) = outcome(&out, PY_SECRET);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("ok: signature valid (webhook-id {PY_ID})")
    );
    // With the default tolerance the same request is too old.
    let (code, _, stderr) = outcome(&req.verify(PY_SECRET, &[]), PY_SECRET);
    assert_eq!(code, 1);
    assert!(stderr.contains("in the past"), "{stderr}");
}

#[test]
fn several_signatures_one_valid_verifies() {
    let secret = new_secret();
    let ts = now();
    let good = sign(
        &secret_key(&secret).unwrap(),
        "msg_rot",
        ts,
        BODY.as_bytes(),
    );
    let old = sign(
        &secret_key(&new_secret()).unwrap(),
        "msg_rot",
        ts,
        BODY.as_bytes(),
    );
    let req = Received::new(
        &headers("msg_rot", &ts.to_string(), &format!("{old} {good}")),
        BODY.as_bytes(),
    );
    let (code, _, stderr) = outcome(&req.verify(&secret, &[]), &secret);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_tampered_body_does_not_verify() {
    let secret = new_secret();
    let req = Received::signed(&secret, "msg_t", now(), BODY);
    let tampered = BODY.replace("42", "43");
    std::fs::write(req.dir.path().join("body.json"), tampered).unwrap();
    let (code, stdout, stderr) = outcome(&req.verify(&secret, &[]), &secret);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("no matching v1 signature"), "{stderr}");
    // One byte more (a trailing newline an editor adds) is tampering too.
    std::fs::write(req.dir.path().join("body.json"), format!("{BODY}\n")).unwrap();
    let (code, _, _) = outcome(&req.verify(&secret, &[]), &secret);
    assert_eq!(code, 1);
}

#[test]
fn a_wrong_secret_does_not_verify() {
    let secret = new_secret();
    let other = new_secret();
    let req = Received::signed(&secret, "msg_w", now(), BODY);
    let (code, _, stderr) = outcome(&req.verify(&other, &[]), &other);
    assert_eq!(code, 1);
    assert!(stderr.contains("no matching v1 signature"), "{stderr}");
}

#[test]
fn timestamps_outside_the_tolerance_do_not_verify() {
    let secret = new_secret();
    let old = Received::signed(&secret, "msg_o", now() - 400, BODY);
    let (code, _, stderr) = outcome(&old.verify(&secret, &[]), &secret);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("in the past, more than the 300 s allowed"),
        "{stderr}"
    );
    // A wider tolerance accepts it.
    let (code, _, stderr) = outcome(&old.verify(&secret, &["--tolerance-secs", "600"]), &secret);
    assert_eq!(code, 0, "{stderr}");

    let new = Received::signed(&secret, "msg_n", now() + 400, BODY);
    let (code, _, stderr) = outcome(&new.verify(&secret, &[]), &secret);
    assert_eq!(code, 1);
    assert!(stderr.contains("in the future"), "{stderr}");

    let ts = now().to_string();
    let sig = sign(
        &secret_key(&secret).unwrap(),
        "msg_x",
        now(),
        BODY.as_bytes(),
    );
    let garbled = Received::new(
        &headers("msg_x", &format!("{ts}abc"), &sig),
        BODY.as_bytes(),
    );
    let (code, _, stderr) = outcome(&garbled.verify(&secret, &[]), &secret);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a number of Unix seconds"), "{stderr}");
}

#[test]
fn missing_headers_do_not_verify() {
    let secret = new_secret();
    let ts = now().to_string();
    let sig = sign(
        &secret_key(&secret).unwrap(),
        "msg_m",
        now(),
        BODY.as_bytes(),
    );
    let cases = [
        (
            format!("webhook-timestamp: {ts}\nwebhook-signature: {sig}\n"),
            "webhook-id",
        ),
        (
            format!("webhook-id: msg_m\nwebhook-signature: {sig}\n"),
            "webhook-timestamp",
        ),
        (
            format!("webhook-id: msg_m\nwebhook-timestamp: {ts}\n"),
            "webhook-signature",
        ),
        (
            "content-type: application/json\n".to_string(),
            "webhook-id, webhook-timestamp, webhook-signature",
        ),
        (
            format!("webhook-id:\nwebhook-timestamp: {ts}\nwebhook-signature: {sig}\n"),
            "webhook-id",
        ),
    ];
    for (text, missing) in cases {
        let req = Received::new(&text, BODY.as_bytes());
        let (code, _, stderr) = outcome(&req.verify(&secret, &[]), &secret);
        assert_eq!(code, 1, "{text}");
        assert!(
            stderr.contains(&format!("missing header: {missing}")),
            "{stderr}"
        );
    }
}

#[test]
fn the_body_may_come_on_stdin() {
    let secret = new_secret();
    let req = Received::signed(&secret, "msg_s", now(), BODY);
    let h = req.path("headers.txt");
    let mut child = clean_command()
        .args([
            "verify-webhook",
            "--secret",
            &secret,
            "--headers",
            &h,
            "--body",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(BODY.as_bytes())
        .unwrap();
    let (code, stdout, stderr) = outcome(&child.wait_with_output().unwrap(), &secret);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("ok: signature valid"), "{stdout}");
}

#[test]
fn unusable_arguments_exit_2() {
    let secret = new_secret();
    let req = Received::signed(&secret, "msg_u", now(), BODY);
    let h = req.path("headers.txt");
    let b = req.path("body.json");
    let missing = req.path("nope.txt");
    let runs: [&[&str]; 5] = [
        &["--secret", "whsec_%%%", "--headers", &h, "--body", &b],
        &["--secret", &secret, "--headers", &missing, "--body", &b],
        &["--secret", &secret, "--headers", &h, "--body", &missing],
        &["--secret", &secret, "--headers", "-", "--body", "-"],
        &["--secret", &secret, "--headers", &h],
    ];
    for args in runs {
        let out = clean_command()
            .arg("verify-webhook")
            .args(args)
            .output()
            .unwrap();
        let (code, _, stderr) = outcome(&out, &secret);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(!stderr.is_empty());
    }
    // A headers file that is not header lines.
    std::fs::write(
        req.dir.path().join("headers.txt"),
        "{\"webhook-id\" \"x\"}\n",
    )
    .unwrap();
    let (code, _, stderr) = outcome(&req.verify(&secret, &[]), &secret);
    assert_eq!(code, 2);
    assert!(stderr.contains("line 1"), "{stderr}");
}

/// `callbridge endpoints add|list|remove` against a running daemon's admin
/// API (real TLS, the test server's CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_add_list_remove_through_the_admin_api() {
    use crate::common::{Server, ADMIN_TOKEN};
    let s = Server::start().await;
    let ca = s.dir.join("ca.pem");
    let run = |args: &[&str]| {
        let mut c = clean_command();
        c.arg("endpoints")
            .args(args)
            .arg("--url")
            .arg(&s.base)
            .arg("--ca")
            .arg(&ca)
            .env("CALLBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN);
        c
    };
    let add = |args: &[&str]| run(args).output().unwrap();
    let out = tokio::task::block_in_place(|| {
        add(&[
            "add",
            "https://crm.example.com/hooks",
            "--events",
            "call-hangup,message",
        ])
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        created["events"],
        serde_json::json!(["call-hangup", "message"])
    );

    let out = tokio::task::block_in_place(|| add(&["list"]));
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(
        listed.contains(&id) && listed.contains("https://crm.example.com/hooks"),
        "{listed}"
    );
    assert!(!listed.contains("whsec_"), "list shows no secret");

    let out = tokio::task::block_in_place(|| add(&["add", "http://10.1.2.3/hooks"]));
    assert_eq!(out.status.code(), Some(1), "refused by the API (400)");
    let out = tokio::task::block_in_place(|| add(&["remove", &id]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::task::block_in_place(|| add(&["remove", &id]));
    assert_eq!(out.status.code(), Some(1), "404 the second time");
    let mut no_token = run(&["list"]);
    no_token.env_remove("CALLBRIDGE_ADMIN_TOKEN");
    let out = tokio::task::block_in_place(|| no_token.output().unwrap());
    assert_eq!(
        out.status.code(),
        Some(2),
        "no admin token is a usage error"
    );
    s.stop().await;
}
