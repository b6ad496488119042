//! `callbridge endpoints add|list|remove`: thin clients of `/api/endpoints`
//! (outbound webhooks, contract §10).

use serde_json::{json, Value};

use super::admin::{pretty, AdminArgs, AdminClient};
use super::{CliError, CliResult};

/// Manage outbound webhook endpoints through the admin API (contract §10).
#[derive(clap::Args, Debug)]
pub struct Endpoints {
    #[command(subcommand)]
    action: EndpointsCommand,
}

/// `callbridge endpoints …`: thin clients of `/api/endpoints`.
#[derive(clap::Subcommand, Debug)]
pub enum EndpointsCommand {
    /// Create an endpoint; prints it as JSON with its secret (shown only here).
    Add {
        /// Where events are POSTed: https://…, or http:// to a loopback address.
        #[arg(value_name = "URL")]
        endpoint: String,
        /// Event names to send, comma-separated (e.g. call-hangup,message); all when omitted.
        #[arg(long, value_delimiter = ',', value_name = "a,b")]
        events: Vec<String>,
        /// A note for people: what the endpoint is for.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List endpoints, one line each: id url events enabled|disabled.
    List {
        /// Print the API's JSON answer instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an endpoint: nothing more is sent to it.
    Remove {
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

impl Endpoints {
    pub async fn run(self) -> CliResult {
        endpoints(self.action).await
    }
}

async fn endpoints(action: EndpointsCommand) -> CliResult {
    match action {
        EndpointsCommand::Add {
            endpoint,
            events,
            description,
            admin,
        } => {
            let client = AdminClient::new(&admin)?;
            endpoints_add(&client, &endpoint, &events, description.as_deref()).await
        }
        EndpointsCommand::List { json, admin } => {
            endpoints_list(&AdminClient::new(&admin)?, json).await
        }
        EndpointsCommand::Remove { id, admin } => {
            endpoints_remove(&AdminClient::new(&admin)?, &id).await
        }
    }
}

async fn endpoints_add(
    client: &AdminClient,
    url: &str,
    events: &[String],
    description: Option<&str>,
) -> CliResult {
    let mut events: Vec<&str> = events
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .collect();
    if events.is_empty() {
        events.push("*");
    }
    let mut body = json!({ "url": url, "events": events });
    if let Some(d) = description {
        body["description"] = json!(d);
    }
    let resp = client.call("POST", "/api/endpoints", Some(&body)).await?;
    // The one place the secret is shown: on stdout, for the user.
    println!("{}", pretty(&resp.body));
    Ok(())
}

async fn endpoints_list(client: &AdminClient, as_json: bool) -> CliResult {
    let resp = client.call("GET", "/api/endpoints", None).await?;
    if as_json {
        println!("{}", pretty(&resp.body));
        return Ok(());
    }
    let answer = resp.json();
    let list = answer["endpoints"]
        .as_array()
        .ok_or_else(|| CliError::runtime("the answer has no `endpoints` list"))?;
    for e in list {
        println!("{}", endpoint_line(e));
    }
    Ok(())
}

/// `id url events enabled|disabled`.
fn endpoint_line(e: &Value) -> String {
    let events: Vec<&str> = e["events"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let state = if e["disabled"].as_bool().unwrap_or(false) {
        "disabled"
    } else {
        "enabled"
    };
    format!(
        "{} {} {} {state}",
        e["id"].as_str().unwrap_or("?"),
        e["url"].as_str().unwrap_or("?"),
        events.join(",")
    )
}

async fn endpoints_remove(client: &AdminClient, id: &str) -> CliResult {
    let id_ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
    if !id_ok {
        return Err(CliError::usage(format!(
            "`{id}` is not an endpoint id (see `callbridge endpoints list`)"
        )));
    }
    client
        .call("DELETE", &format!("/api/endpoints/{id}"), None)
        .await?;
    println!("removed {id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn list_lines() {
        let e = json!({"id": "ep_1", "url": "https://h/x", "events": ["call-hangup", "message"], "disabled": false});
        assert_eq!(
            endpoint_line(&e),
            "ep_1 https://h/x call-hangup,message enabled"
        );
        let d = json!({"id": "ep_2", "url": "https://h/y", "events": ["*"], "disabled": true});
        assert_eq!(endpoint_line(&d), "ep_2 https://h/y * disabled");
    }

    #[test]
    fn endpoints_commands_parse() {
        let cli = Cli::try_parse_from([
            "callbridge",
            "endpoints",
            "add",
            "https://crm.example/hook",
            "--events",
            "call-hangup,message",
            "--url",
            "https://cb:8443",
        ])
        .unwrap();
        let Command::Endpoints(Endpoints {
            action:
                EndpointsCommand::Add {
                    endpoint,
                    events,
                    admin,
                    ..
                },
        }) = cli.command
        else {
            panic!("not endpoints add");
        };
        assert_eq!(endpoint, "https://crm.example/hook");
        assert_eq!(events, ["call-hangup", "message"]);
        assert_eq!(admin.url.as_deref(), Some("https://cb:8443"));
        assert!(Cli::try_parse_from(["callbridge", "endpoints", "remove"]).is_err());
        assert!(Cli::try_parse_from(["callbridge", "verify-webhook", "--secret", "s"]).is_err());
    }
}
