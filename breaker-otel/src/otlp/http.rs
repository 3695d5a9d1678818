//! OTLP over HTTP with protobuf bodies: `opentelemetry-http`'s client trait over reqwest,
//! the request encoded with prost and gzipped with flate2 when configured. The whole
//! response (status, headers, body) is classified.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use super::USER_AGENT;
use super::report::{ExportFailure, ExportReport, FailureCause, classify_http_for};
use super::service::Service;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use opentelemetry_http::{Bytes, HttpClient, HttpError, ResponseBodyTooLarge};

const PROTOBUF: HeaderValue = HeaderValue::from_static("application/x-protobuf");
const GZIP: HeaderValue = HeaderValue::from_static("gzip");

#[derive(Debug)]
pub(super) struct HttpTransport {
    client: reqwest::Client,
    endpoint: Uri,
    headers: HeaderMap,
    gzip: bool,
}

impl HttpTransport {
    pub(super) fn new(
        endpoint: Uri,
        headers: &[(HeaderName, HeaderValue)],
        gzip: bool,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|err| error_chain(&err.without_url()))?;
        let mut map = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            map.insert(name.clone(), value.clone());
        }
        Ok(Self {
            client,
            endpoint,
            headers: map,
            gzip,
        })
    }

    /// One POST; the request is encoded (and dropped) before anything is sent.
    pub(super) async fn send<S: Service>(&self, request: S) -> ExportReport {
        let mut body = request.encode_to_vec();
        drop(request);
        if self.gzip {
            body = match gzip(&body) {
                Ok(compressed) => compressed,
                Err(err) => {
                    return ExportReport::Failed(ExportFailure::new(
                        FailureCause::Internal,
                        false,
                        format!("gzip: {err}"),
                    ));
                }
            };
        }
        let mut request = http::Request::new(Bytes::from(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.endpoint.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, PROTOBUF);
        if self.gzip {
            headers.insert(CONTENT_ENCODING, GZIP);
        }
        // Configured headers last, so that they win, as with the stock exporter.
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        match self.client.send_bytes(request).await {
            Ok(response) => classify_http_for::<S>(
                response.status(),
                response.headers(),
                response.body(),
                SystemTime::now(),
            ),
            Err(err) => ExportReport::Failed(transport_failure(err)),
        }
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::default());
    encoder.write_all(body)?;
    encoder.finish()
}

/// No HTTP answer: the backend was not reached (refused, reset, DNS), or took too long.
/// The specification has the client retry both.
fn transport_failure(err: HttpError) -> ExportFailure {
    if err.is::<ResponseBodyTooLarge>() {
        return ExportFailure::new(FailureCause::Internal, false, err.to_string());
    }
    match err.downcast::<reqwest::Error>() {
        Ok(err) => {
            // Without the URL: it may carry userinfo.
            let err = err.without_url();
            let cause = if err.is_timeout() {
                FailureCause::Timeout
            } else {
                FailureCause::Unavailable
            };
            ExportFailure::new(cause, true, error_chain(&err))
        }
        Err(other) => ExportFailure::new(FailureCause::Unavailable, true, error_chain(&*other)),
    }
}

/// The error and its sources, `: `-separated (reqwest's own message is only the outer layer,
/// e.g. "error sending request"; "Connection refused" is a few sources down).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let next = inner.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = inner.source();
    }
    text
}
