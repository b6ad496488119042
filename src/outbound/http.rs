//! One POST to an endpoint, over hyper's HTTP/1 client on the same rustls
//! (aws-lc-rs) stack as the rest of the daemon, trusting the web's roots
//! (`webpki-roots`). `http://` is allowed for loopback endpoints only (the
//! admin API refuses others). Redirects are not followed: a 3xx answer is
//! an answer that is not 2xx, i.e. a failed attempt.

use std::sync::Arc;

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

/// `POST url` with `headers` and `body`; the answer's status code, or why
/// there was none. The caller bounds the time.
pub async fn post(
    url: &str,
    headers: &[(&'static str, String)],
    body: Bytes,
    tls: Arc<rustls::ClientConfig>,
) -> Result<u16, String> {
    let uri: Uri = url.parse().map_err(|_| "bad URL".to_string())?;
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
    let req = request(&uri, headers, body)?;
    if https {
        let name = ServerName::try_from(host.clone()).map_err(|_| "bad host name".to_string())?;
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(stream, req).await
    } else {
        send(tcp, req).await
    }
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

async fn send<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<u16, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"));
    let status = match res {
        Ok(res) => {
            let status = res.status().as_u16();
            let mut body = res.into_body();
            let mut read = 0;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |d| d.len());
                if read > MAX_ANSWER_BODY {
                    break;
                }
            }
            Ok(status)
        }
        Err(e) => Err(e),
    };
    conn.abort();
    status
}
