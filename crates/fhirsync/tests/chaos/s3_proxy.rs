//! A fault-injecting HTTP proxy in front of the local S3 server: per request, from a seeded
//! schedule, it answers `503 SlowDown` or `500 InternalError`, resets the connection before
//! forwarding, cuts an upload short, or forwards the request and then drops the response (the
//! write happened; the client cannot know).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::TALLY;
use crate::schedule::{mix, unit};

/// What the proxy does to one request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum S3Fault {
    SlowDown,
    InternalError,
    /// The connection closes before the request reaches the store.
    Reset,
    /// The connection closes while the client is still sending the body.
    CutUpload,
    /// The store does the request; the connection closes before the answer.
    LostResponse,
}

impl S3Fault {
    fn name(self) -> &'static str {
        match self {
            S3Fault::SlowDown => "503 SlowDown",
            S3Fault::InternalError => "500 InternalError",
            S3Fault::Reset => "connection reset before the request",
            S3Fault::CutUpload => "upload cut short",
            S3Fault::LostResponse => "response lost after the write",
        }
    }
}

struct Ctx {
    upstream: String,
    client: reqwest::Client,
    seed: u64,
    rate: f64,
    /// Whether a commit's write to the log may lose its response.
    lost_log_writes: bool,
    on: AtomicBool,
    attempts: Mutex<HashMap<String, u64>>,
}

/// The running proxy; stops when dropped.
pub struct S3Proxy {
    pub endpoint: String,
    ctx: Arc<Ctx>,
    task: tokio::task::JoinHandle<()>,
}

impl S3Proxy {
    /// Listens on a free loopback port, forwarding to `upstream` (e.g. `http://127.0.0.1:5000`).
    /// `lost_log_writes`: a write to a table's log (a commit) may lose its response too.
    pub async fn start(
        upstream: &str,
        seed: u64,
        rate: f64,
        lost_log_writes: bool,
    ) -> anyhow::Result<S3Proxy> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let ctx = Arc::new(Ctx {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            seed,
            rate,
            lost_log_writes,
            on: AtomicBool::new(false),
            attempts: Mutex::new(HashMap::new()),
        });
        let c = ctx.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(c.clone(), req));
                    // An injected fault ends the connection with an error: nothing to report.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(S3Proxy {
            endpoint,
            ctx,
            task,
        })
    }

    /// Turns the faults on or off (off: a plain proxy).
    pub fn faults(&self, on: bool) {
        self.ctx.on.store(on, Ordering::Relaxed);
    }
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What kind of S3 request this is, for the schedule: log writes, data writes, reads, lists.
fn kind(req: &Request<Incoming>) -> String {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let what = if query.contains("list-type") {
        "list"
    } else if path.contains("/_delta_log/") {
        "log"
    } else if query.contains("uploadId") || query.contains("uploads") {
        "multipart"
    } else {
        "data"
    };
    format!("{} {what}", req.method())
}

impl Ctx {
    fn draw(&self, kind: &str, has_body: bool) -> Option<S3Fault> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        let n = {
            let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            let n = a.entry(kind.to_string()).or_insert(0);
            *n += 1;
            *n - 1
        };
        if unit(self.seed, kind, n) >= self.rate {
            return None;
        }
        let mut options = vec![S3Fault::SlowDown, S3Fault::InternalError, S3Fault::Reset];
        if self.lost_log_writes || kind != "PUT log" {
            options.push(S3Fault::LostResponse);
        }
        if has_body {
            options.push(S3Fault::CutUpload);
        }
        let f = options[(mix(self.seed, kind, n ^ 0x77) % options.len() as u64) as usize];
        TALLY.fault(format!("s3: {} ({kind})", f.name()));
        Some(f)
    }
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>chaos</RequestId></Error>"
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    r
}

fn cut(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, what.to_string())
}

async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let kind = kind(&req);
    let has_body = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    let fault = ctx.draw(&kind, has_body);
    match fault {
        Some(S3Fault::SlowDown) => {
            return Ok(s3_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
            ));
        }
        Some(S3Fault::InternalError) => {
            return Ok(s3_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ));
        }
        Some(S3Fault::Reset) => return Err(cut("injected: reset before the request")),
        _ => {}
    }
    let (parts, mut body) = req.into_parts();
    if fault == Some(S3Fault::CutUpload) {
        // Take a part of the body, then hang up.
        let _ = body.frame().await;
        return Err(cut("injected: upload cut short"));
    }
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let url = format!(
        "{}{}",
        ctx.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut forward = ctx.client.request(parts.method.clone(), url);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            forward = forward.header(name, value);
        }
    }
    let answer = forward
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.map_err(std::io::Error::other)?;
    if fault == Some(S3Fault::LostResponse) {
        return Err(cut("injected: response lost"));
    }
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            r.headers_mut().append(name, value.clone());
        }
    }
    Ok(r)
}
