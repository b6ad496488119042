//! One POST to an endpoint, over hyper's HTTP/1 client on the same rustls
//! (aws-lc-rs) stack as the rest of the daemon, trusting the web's roots
//! (`webpki-roots`). `http://` is allowed for loopback endpoints only (the
//! admin API refuses others). Redirects are not followed: a 3xx answer is
//! an answer that is not 2xx, i.e. a failed attempt. Connections are kept
//! alive and reused ([`Pool`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use warp::http::{Request, Uri};

/// At most this much of an answer's body is read (and then dropped): the
/// status is all that counts.
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// Idle keep-alive connections kept per origin: as many as the
/// dispatcher's attempts in flight per endpoint, and a few more.
const MAX_IDLE_PER_ORIGIN: usize = 8;

/// A connection: its request handle and its I/O task, aborted (closing the
/// socket) when the connection is dropped, e.g. after an attempt timed out.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keep-alive connections to endpoints, reused across attempts: a new TCP
/// and TLS handshake per event would cost more than the event.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Conn>>>,
}

impl Pool {
    /// `POST url` with `headers` and `body`; the answer's status code, or
    /// why there was none. The caller bounds the time.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<u16, String> {
        let uri: Uri = url.parse().map_err(|_| "bad URL".to_string())?;
        let origin = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        if let Some(conn) = self.take(&origin) {
            // A kept connection the server closed meanwhile fails at once:
            // then once more on a new one (the request may have been seen:
            // at least once).
            if let Ok(answer) = self
                .exchange(&origin, conn, request(&uri, headers, body.clone())?)
                .await
            {
                return Ok(answer);
            }
        }
        let conn = connect(&uri, tls).await?;
        self.exchange(&origin, conn, request(&uri, headers, body)?)
            .await
    }

    fn take(&self, origin: &str) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(origin)?;
        while let Some(c) = list.pop() {
            if !c.sender.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn put(&self, origin: &str, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(origin.to_string()).or_default();
        list.retain(|c| !c.sender.is_closed());
        if list.len() < MAX_IDLE_PER_ORIGIN {
            list.push(conn);
        }
    }

    async fn exchange(
        &self,
        origin: &str,
        mut conn: Conn,
        req: Request<Full<Bytes>>,
    ) -> Result<u16, String> {
        conn.sender
            .ready()
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let res = conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = res.status().as_u16();
        let mut body = res.into_body();
        let mut read = 0;
        let mut complete = true;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                complete = false;
                break;
            };
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > MAX_ANSWER_BODY {
                complete = false;
                break;
            }
        }
        if complete {
            self.put(origin, conn);
        }
        Ok(status)
    }
}

async fn connect(uri: &Uri, tls: Arc<rustls::ClientConfig>) -> Result<Conn, String> {
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("URL is neither https nor http".into()),
    };
    let host = uri
        .host()
        .ok_or("URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = ServerName::try_from(host.clone()).map_err(|_| "bad host name".to_string())?;
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        handshake(stream).await
    } else {
        handshake(tcp).await
    }
}

async fn handshake<IO>(io: IO) -> Result<Conn, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender, task })
}

fn request(
    uri: &Uri,
    headers: &[(&'static str, String)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let mut b = Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("callbridge/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(body)).map_err(|e| format!("request: {e}"))
}
