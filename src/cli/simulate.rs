//! `callbridge simulate EVENT_TYPE …`: a realistic Telnyx webhook, signed
//! with the dev signing key as Telnyx signs, POSTed to the daemon; prints
//! the HTTP status and body.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

use super::{connect_host, dev_data, CliError, CliResult};
use crate::config::Sources;
use crate::dev;
use crate::telnyx::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Build a realistic Telnyx webhook, sign it with the dev key and POST it.
#[derive(clap::Args, Debug)]
pub struct Simulate {
    /// Telnyx event type, e.g. call.initiated, call.answered, call.hangup.
    event_type: String,
    /// Route to this user through client_state {"userId": ID}.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    /// call_control_id (and the base of the session and leg ids).
    #[arg(long)]
    call: Option<String>,
    /// Webhook URL; defaults to https://<CALLBRIDGE_LISTEN>/webhooks/telnyx.
    #[arg(long)]
    url: Option<String>,
    /// JSON payload (or a whole envelope with `data`) to send instead of the built one.
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Simulate {
    pub async fn run(self) -> CliResult {
        let opts = SimOptions {
            user: self.user,
            from: self.from,
            to: self.to,
            call: self.call,
        };
        simulate(
            &self.event_type,
            opts,
            self.url,
            self.file.as_deref(),
            self.config.as_deref(),
        )
        .await
    }
}

pub struct SimOptions {
    pub user: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call: Option<String>,
}

/// A realistic Telnyx envelope for `event_type`.
pub fn build_envelope(event_type: &str, o: &SimOptions, payload_override: Option<Value>) -> Value {
    let call = o
        .call
        .clone()
        .unwrap_or_else(|| format!("v3:sim-{}", uuid::Uuid::new_v4().simple()));
    let now = crate::clock::now_rfc3339();
    let mut payload = json!({
        "call_control_id": call,
        "call_leg_id": format!("leg-{call}"),
        "call_session_id": format!("session-{call}"),
        "connection_id": dev::DEV_CONNECTION_ID,
        "from": o.from.clone().unwrap_or_else(|| dev::DEV_CALLER.into()),
        "to": o.to.clone().unwrap_or_else(|| dev::DEMO_PHONE.into()),
        "direction": "incoming",
        "state": "parked",
        "start_time": now,
    });
    let p = payload.as_object_mut().expect("object");
    add_event_fields(p, event_type, &now);
    if let Some(user) = &o.user {
        let cs = json!({ "userId": user }).to_string();
        p.insert(
            "client_state".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(cs)),
        );
    }
    if let Some(Value::Object(over)) = payload_override {
        if over.contains_key("data") {
            return Value::Object(over);
        }
        payload = Value::Object(over);
    }
    json!({
        "data": {
            "record_type": "event",
            "id": uuid::Uuid::new_v4().to_string(),
            "event_type": event_type,
            "occurred_at": now,
            "payload": payload,
        },
        "meta": {"attempt": 1, "delivered_to": "callbridge simulate"}
    })
}

/// The payload fields Telnyx adds for `event_type`, with plausible values.
fn add_event_fields(p: &mut serde_json::Map<String, Value>, event_type: &str, now: &str) {
    match event_type {
        "call.initiated" => {
            p.insert("caller_id_name".into(), json!("Simulated Caller"));
        }
        "call.answered" | "call.bridged" => {
            p.insert("state".into(), json!("answered"));
        }
        "call.hangup" => {
            p.insert("state".into(), json!("hangup"));
            p.insert("hangup_cause".into(), json!("normal_clearing"));
            p.insert("hangup_source".into(), json!("caller"));
            p.insert("sip_hangup_cause".into(), json!("200"));
            p.insert("end_time".into(), json!(now));
        }
        "call.dtmf.received" => {
            p.insert("digit".into(), json!("5"));
        }
        "call.recording.saved" => {
            p.insert("channels".into(), json!("single"));
            p.insert("recording_started_at".into(), json!(now));
            p.insert("recording_ended_at".into(), json!(now));
            p.insert(
                "recording_urls".into(),
                json!({"mp3":"https://example.com/r.mp3","wav":"https://example.com/r.wav"}),
            );
            p.insert(
                "public_recording_urls".into(),
                json!({"mp3":"https://example.com/p.mp3","wav":"https://example.com/p.wav"}),
            );
        }
        "call.gather.ended" => {
            p.insert("digits".into(), json!("1234"));
            p.insert("status".into(), json!("valid"));
        }
        "call.machine.detection.ended" | "call.machine.greeting.ended" => {
            p.insert("result".into(), json!("human"));
        }
        _ => {}
    }
}

async fn simulate(
    event_type: &str,
    opts: SimOptions,
    url: Option<String>,
    file: Option<&Path>,
    config_file: Option<&Path>,
) -> CliResult {
    let src = Sources::gather(config_file)?;
    let Some((files, _)) = dev_data(&src) else {
        return Err(CliError::usage(
            "the dev data dir is needed for the signing key (CALLBRIDGE_DATA_DIR)",
        ));
    };
    let signer = dev::load_signer(&files).map_err(CliError::usage)?;
    let payload = file.map(read_payload).transpose()?;
    let url = url.unwrap_or_else(|| {
        let listen = src
            .get("listen")
            .and_then(|l| l.parse().ok())
            .unwrap_or(crate::config::DEFAULT_LISTEN);
        format!("https://{}/webhooks/telnyx", connect_host(listen))
    });
    let body = build_envelope(event_type, &opts, payload).to_string();
    let ts = crate::clock::now_secs();
    let sig = signer.sign(ts, body.as_bytes());
    let ca = std::fs::read(&files.ca).ok();
    let tls = crate::tls::client_config(ca.as_deref()).map_err(CliError::usage)?;
    let ts_s = ts.to_string();
    let headers = [
        ("content-type", "application/json"),
        (SIGNATURE_HEADER, sig.as_str()),
        (TIMESTAMP_HEADER, ts_s.as_str()),
    ];
    let resp = crate::client::request_once(&url, "POST", &headers, body, tls)
        .await
        .map_err(|e| CliError::runtime(format!("{url}: {e}")))?;
    println!("HTTP {}", resp.status);
    println!("{}", String::from_utf8_lossy(&resp.body));
    if (200..300).contains(&resp.status) {
        Ok(())
    } else {
        Err(CliError::NotAccepted(resp.status))
    }
}

/// `simulate --file`: a JSON object (a payload, or a whole envelope).
fn read_payload(path: &Path) -> Result<Value, CliError> {
    let parsed = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
    match parsed {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(CliError::usage(format!(
            "--file {}: not a JSON object",
            path.display()
        ))),
        Err(e) => Err(CliError::usage(format!("--file {}: {e}", path.display()))),
    }
}
