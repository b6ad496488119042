//! The daemon's HTTP client: hyper's HTTP/1 client on the same rustls
//! (aws-lc-rs) stack as the rest of the daemon, trusting the web's roots
//! (`webpki-roots`), with keep-alive connections reused per origin
//! ([`Pool`]). Outbound webhooks POST through it, and the Telnyx API client
//! talks to Telnyx through it. `http://` is for loopback only (the callers
//! check their URLs: the admin API and the configuration refuse others).
//! Redirects are not followed: a 3xx is an answer like any other. The
//! caller bounds the time of a request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use warp::http::{HeaderMap, Method, Request, Uri};

/// An answer whose body is not wanted is read up to this much (and
/// dropped), so its connection can be reused; a longer one is cut off and
/// its connection closed.
const DISCARDED_BODY: usize = 64 * 1024;

/// Idle keep-alive connections kept per origin: as many as the outbound
/// dispatcher's attempts in flight per endpoint, and a few more.
const MAX_IDLE_PER_ORIGIN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad URL")]
    Url,
    #[error("connect: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("answer body larger than {0} bytes")]
    TooLarge(usize),
}

/// What the server answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// Empty when the body was not asked for.
    pub body: Bytes,
}

/// What to do with an answer's body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// Only the status counts (outbound webhooks).
    Discard,
    /// Keep it, refusing one larger than this many bytes.
    Keep(usize),
}

/// One request.
pub struct Call<'a> {
    pub method: Method,
    pub url: &'a str,
    pub headers: &'a [(&'static str, String)],
    pub body: Bytes,
    pub answer: Body,
}

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

/// Keep-alive connections, reused across requests: a new TCP and TLS
/// handshake per event would cost more than the event.
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Conn>>>,
    tls: Arc<rustls::ClientConfig>,
}

impl Pool {
    /// A pool trusting the web's roots.
    pub fn new() -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
            tls: crate::tls::client_config(None).expect("the built-in roots load"),
        }
    }

    /// Send `call`; the answer, or why there was none. The caller bounds
    /// the time.
    pub async fn send(&self, call: Call<'_>) -> Result<Answer, HttpError> {
        let uri: Uri = call.url.parse().map_err(|_| HttpError::Url)?;
        let origin = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        if let Some(conn) = self.take(&origin) {
            // A kept connection the server closed meanwhile fails at once:
            // then once more on a new one (the request may have been seen:
            // at least once; Telnyx ignores a repeated `command_id`).
            let req = request(&call, &uri)?;
            if let Ok(answer) = self.exchange(&origin, conn, req, call.answer).await {
                return Ok(answer);
            }
        }
        let conn = connect(&uri, self.tls.clone()).await?;
        self.exchange(&origin, conn, request(&call, &uri)?, call.answer)
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
        want: Body,
    ) -> Result<Answer, HttpError> {
        let http = |e: hyper::Error| HttpError::Http(e.to_string());
        conn.sender.ready().await.map_err(http)?;
        let res = conn.sender.send_request(req).await.map_err(http)?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let limit = match want {
            Body::Discard => DISCARDED_BODY,
            Body::Keep(n) => n,
        };
        let mut body = res.into_body();
        let mut kept = BytesMut::new();
        let mut read = 0;
        let mut complete = true;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                complete = false;
                break;
            };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            read += data.len();
            if read > limit {
                complete = false;
                break;
            }
            if let Body::Keep(_) = want {
                kept.extend_from_slice(data);
            }
        }
        if complete {
            self.put(origin, conn);
        }
        match want {
            Body::Keep(n) if read > n => Err(HttpError::TooLarge(n)),
            Body::Keep(_) if !complete => Err(HttpError::Http("answer cut off".into())),
            _ => Ok(Answer {
                status,
                headers,
                body: kept.freeze(),
            }),
        }
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

async fn connect(uri: &Uri, tls: Arc<rustls::ClientConfig>) -> Result<Conn, HttpError> {
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(HttpError::Url),
    };
    let host = uri
        .host()
        .ok_or(HttpError::Url)?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| HttpError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = ServerName::try_from(host.clone()).map_err(|_| HttpError::Url)?;
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Tls(e.to_string()))?;
        handshake(stream).await
    } else {
        handshake(tcp).await
    }
}

async fn handshake<IO>(io: IO) -> Result<Conn, HttpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| HttpError::Http(e.to_string()))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender, task })
}

fn request(call: &Call<'_>, uri: &Uri) -> Result<Request<Full<Bytes>>, HttpError> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let mut b = Request::builder()
        .method(call.method.clone())
        .uri(path)
        .header("host", authority)
        .header(
            "user-agent",
            concat!("callbridge/", env!("CARGO_PKG_VERSION")),
        );
    if !call.body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    for (k, v) in call.headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(call.body.clone()))
        .map_err(|e| HttpError::Http(e.to_string()))
}
