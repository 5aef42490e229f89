//! The HTTP client of the OTLP push: one HTTP/1.1 POST per export over hyper, which the
//! endpoint already uses. opentelemetry-otlp's bundled clients would pull in reqwest and, through
//! it, URL and Unicode-normalization crates that cost more build time than all of telemetry's
//! own code; an export every few seconds needs neither pooling nor redirects.

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use std::time::Duration;

/// Posts on a private single-threaded runtime: the exporter calls from its own thread, outside
/// any tokio runtime.
pub(crate) struct OtlpHttpClient {
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

impl std::fmt::Debug for OtlpHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpHttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OtlpHttpClient {
    pub(crate) fn new(timeout: Duration) -> std::io::Result<Self> {
        Ok(OtlpHttpClient {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?,
            timeout,
        })
    }
}

/// Most response body kept (a collector answers with a small status message).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

async fn post(request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    use http_body_util::BodyExt as _;
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("http") {
        return Err(format!("{uri}: only http:// endpoints are supported").into());
    }
    let host = uri.host().ok_or_else(|| format!("{uri}: no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    // Origin form on the request line, the authority in Host, as HTTP/1.1 expects.
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    parts.uri = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| format!("{uri}: {e}"))?;
    parts.headers.insert(
        hyper::header::HOST,
        authority.parse().map_err(|e| format!("{uri}: {e}"))?,
    );
    let response = sender
        .send_request(Request::from_parts(parts, http_body_util::Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await?
        .to_bytes();
    connection.abort();
    Ok(Response::from_parts(parts, body))
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let uri = request.uri().clone();
        // The exporter's thread blocks for the round trip, which is what it does with any
        // blocking client; the runtime only drives this one request.
        self.runtime
            .block_on(async { tokio::time::timeout(self.timeout, post(request)).await })
            .map_err(|_| format!("{uri}: no answer within {:?}", self.timeout))?
    }
}
