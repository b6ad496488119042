//! A small HTTPS and WSS client over the same rustls stack: used by
//! `simulate` and `listen`, by the integration tests and by the benchmark.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::WebSocketStream;
use warp::http::Uri;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL {0}")]
    Url(String),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("WebSocket: {0}")]
    Ws(String),
}

/// Host, port and path of an `https://` or `wss://` URL.
pub struct Target {
    pub host: String,
    /// The name the server's certificate is checked against, when it is
    /// not `host` (a daemon reached at its listen address).
    pub tls_name: Option<String>,
    pub port: u16,
    pub path_and_query: String,
    pub authority: String,
}

pub fn parse_url(url: &str) -> Result<Target, ClientError> {
    let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.into()))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "https" && scheme != "wss" {
        return Err(ClientError::Url(format!(
            "{url}: only https:// and wss:// are supported"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Url(url.into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    Ok(Target {
        tls_name: None,
        authority: uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| host.clone()),
        host,
        port,
        path_and_query: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
    })
}

pub async fn connect_tls(
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(ClientError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let name = target.tls_name.as_ref().unwrap_or(&target.host);
    let name = ServerName::try_from(name.clone()).map_err(|_| ClientError::Url(name.clone()))?;
    TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(ClientError::Tls)
}

/// A keep-alive HTTPS connection.
pub struct Https {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: warp::http::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl Https {
    pub async fn connect(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<Self, ClientError> {
        Self::connect_target(&parse_url(url)?, tls).await
    }

    async fn connect_target(
        target: &Target,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, ClientError> {
        let stream = connect_tls(target, tls).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Https {
            sender,
            authority: target.authority.clone(),
        })
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse, ClientError> {
        let resp = self.send(method, path, headers, body.into()).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// A request whose response body is read as it arrives (an event
    /// stream), chunk by chunk, rather than collected.
    pub async fn request_streaming(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Streaming, ClientError> {
        let resp = self.send(method, path, headers, body.into()).await?;
        Ok(Streaming {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.into_body(),
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        self.sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }
}

/// A response being received: status and headers, and the body's chunks
/// as they come (hyper's body frames; trailers are skipped).
pub struct Streaming {
    pub status: u16,
    pub headers: warp::http::HeaderMap,
    body: hyper::body::Incoming,
}

impl Streaming {
    /// The next chunk of the body; `None` once it has ended.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Http(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// One request on a fresh connection.
pub async fn request_once(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<HttpResponse, ClientError> {
    request_once_as(url, None, method, headers, body, tls).await
}

/// [`request_once`], checking the server's certificate against `tls_name`
/// instead of the URL's host when given.
pub async fn request_once_as(
    url: &str,
    tls_name: Option<&str>,
    method: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<HttpResponse, ClientError> {
    let mut target = parse_url(url)?;
    target.tls_name = tls_name.map(str::to_string);
    let mut c = Https::connect_target(&target, tls).await?;
    c.request(method, &target.path_and_query, headers, body)
        .await
}

pub type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// Open a `wss://` connection with extra request headers. Returns the stream
/// and the response (for the negotiated subprotocol).
pub async fn ws_connect(
    url: &str,
    headers: &[(&str, &str)],
    tls: Arc<rustls::ClientConfig>,
) -> Result<
    (
        Wss,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    ClientError,
> {
    let target = parse_url(url)?;
    let stream = connect_tls(&target, tls).await?;
    let ws_url = format!("wss://{}{}", target.authority, target.path_and_query);
    let mut req = ws_url
        .into_client_request()
        .map_err(|e| ClientError::Ws(e.to_string()))?;
    for (k, v) in headers {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| ClientError::Ws(e.to_string()))?;
        let value = HeaderValue::from_str(v).map_err(|e| ClientError::Ws(e.to_string()))?;
        req.headers_mut().append(name, value);
    }
    tokio_tungstenite::client_async(req, stream)
        .await
        .map_err(|e| ClientError::Ws(e.to_string()))
}
