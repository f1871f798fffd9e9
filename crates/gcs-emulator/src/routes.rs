//! The XML API's requests: objects at `/{bucket}/{name}`, listings at `/{bucket}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::Response;
use axum::routing::{any, get};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use http::header::{
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::store::{Buckets, Object, WriteError};
use crate::xml;

const GENERATION_MATCH: &str = "x-goog-if-generation-match";
const COPY_SOURCE: &str = "x-goog-copy-source";
const META_PREFIX: &str = "x-goog-meta-";
const MAX_KEYS: usize = 1000;
/// Headers of a write that GCS keeps as the object's metadata.
const STORED_HEADERS: [&str; 5] = [
    "content-type",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
];

#[derive(Clone)]
pub struct Shared {
    base_url: Arc<str>,
    buckets: Arc<Mutex<Buckets>>,
}

impl Shared {
    pub fn new(base_url: String) -> Self {
        Self {
            base_url: base_url.into(),
            buckets: Arc::default(),
        }
    }

    pub fn buckets(&self) -> MutexGuard<'_, Buckets> {
        // A handler cannot panic while holding the lock (no code in it does), so a poisoned
        // lock still holds consistent buckets.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/{bucket}", get(list))
        .route("/{bucket}/{*name}", any(object))
        // Parts and objects are as large as the client sends (GCS takes up to 5 TiB).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

type Params = Query<HashMap<String, String>>;

fn respond(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut r = respond(status, body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    r
}

fn fail(status: StatusCode, code: &str, message: &str) -> Response {
    xml_response(status, xml::error(code, message))
}

fn write_error(e: WriteError) -> Response {
    match e {
        WriteError::NoSuchBucket => fail(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        ),
        WriteError::NoSuchKey => fail(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        ),
        WriteError::NoSuchUpload => fail(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The requested upload was not found.",
        ),
        WriteError::PreconditionFailed => fail(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
        ),
        WriteError::InvalidPart(n) => fail(
            StatusCode::BAD_REQUEST,
            "InvalidPart",
            &format!("Part {n} was not uploaded, or its ETag does not match."),
        ),
    }
}

fn header(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `x-goog-if-generation-match`, when sent; `Err` with the value when it is not a number.
fn generation_match(headers: &HeaderMap) -> Result<Option<u64>, String> {
    match header(headers, GENERATION_MATCH) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| v.to_string()),
    }
}

/// The request headers kept with an object and sent back on reads.
fn attributes(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| {
            STORED_HEADERS.contains(&k.as_str()) || k.as_str().starts_with(META_PREFIX)
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    if !kept.iter().any(|(k, _)| k == CONTENT_TYPE.as_str()) {
        kept.push((
            CONTENT_TYPE.as_str().into(),
            "application/octet-stream".into(),
        ));
    }
    kept
}

/// The headers GCS sends with an object (reads, heads, writes).
fn object_headers(r: &mut Response, o: &Object) {
    let h = r.headers_mut();
    let mut set = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::try_from(name),
            HeaderValue::from_str(value),
        ) {
            h.insert(n, v);
        }
    };
    set(ETAG.as_str(), &o.etag);
    set(
        LAST_MODIFIED.as_str(),
        &httpdate::fmt_http_date(o.updated.into()),
    );
    set("x-goog-generation", &o.generation.to_string());
    set("x-goog-metageneration", "1");
    set("x-goog-stored-content-length", &o.data.len().to_string());
    set("x-goog-hash", "crc32c=AAAAAA==");
    for (k, v) in &o.attributes {
        set(k, v);
    }
}

fn http_date(headers: &HeaderMap, name: http::HeaderName) -> Option<DateTime<Utc>> {
    httpdate::parse_http_date(header(headers, name)?)
        .ok()
        .map(DateTime::<Utc>::from)
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t.trim_matches('"') == etag.trim_matches('"'))
}

/// The byte range asked for: `None` for the whole object, `Err` when it cannot be served.
fn byte_range(spec: Option<&str>, len: usize) -> Result<Option<(usize, usize)>, ()> {
    let Some(spec) = spec else { return Ok(None) };
    let (start, end) = spec
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or(())?;
    let parse = |s: &str| s.trim().parse::<usize>().map_err(|_| ());
    let (start, end_inclusive) = match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, false) => {
            let n = parse(end)?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
        }
        (false, true) => (parse(start)?, len.checked_sub(1).ok_or(())?),
        (false, false) => (parse(start)?, parse(end)?.min(len.saturating_sub(1))),
        (true, true) => return Err(()),
    };
    if start >= len || start > end_inclusive {
        return Err(());
    }
    Ok(Some((start, end_inclusive)))
}

/// A request to one object, by what it asks for.
struct ObjectRequest {
    bucket: String,
    name: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

async fn object(
    State(s): State<Shared>,
    method: Method,
    Path((bucket, name)): Path<(String, String)>,
    Query(query): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = ObjectRequest {
        bucket,
        name,
        query,
        headers,
        body,
    };
    match method {
        Method::GET | Method::HEAD => read(&s, method == Method::HEAD, req),
        Method::PUT => put(&s, req),
        Method::POST => post(&s, req),
        Method::DELETE => delete(&s, req),
        _ => fail(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        ),
    }
}

fn read(s: &Shared, head: bool, req: ObjectRequest) -> Response {
    let (bucket, name, q) = (&req.bucket, &req.name, &req.query);
    let headers = &req.headers;
    let found = {
        let buckets = s.buckets();
        match q.get("generation") {
            None => buckets.get(bucket, name).cloned(),
            Some(g) => match g.parse::<u64>() {
                Ok(g) => buckets
                    .get(bucket, name)
                    .ok()
                    .filter(|o| o.generation == g)
                    .or_else(|| buckets.noncurrent(bucket, name, g))
                    .cloned()
                    .ok_or(WriteError::NoSuchKey),
                Err(_) => Err(WriteError::NoSuchKey),
            },
        }
    };
    let object = match found {
        Ok(o) => o,
        Err(e) => return write_error(e),
    };
    let modified = object.updated.timestamp();
    let precondition = if header(headers, IF_MATCH).is_some_and(|m| !etag_matches(m, &object.etag))
        || http_date(headers, IF_UNMODIFIED_SINCE).is_some_and(|d| modified > d.timestamp())
    {
        Some(StatusCode::PRECONDITION_FAILED)
    } else if header(headers, IF_NONE_MATCH).is_some_and(|m| etag_matches(m, &object.etag))
        || http_date(headers, IF_MODIFIED_SINCE).is_some_and(|d| modified <= d.timestamp())
    {
        Some(StatusCode::NOT_MODIFIED)
    } else {
        None
    };
    if let Some(status) = precondition {
        let mut r = if status == StatusCode::NOT_MODIFIED {
            respond(status, Body::empty())
        } else {
            write_error(WriteError::PreconditionFailed)
        };
        object_headers(&mut r, &object);
        return r;
    }
    let len = object.data.len();
    let (status, body, range) = match byte_range(header(headers, RANGE), len) {
        Ok(None) => (StatusCode::OK, object.data.clone(), None),
        Ok(Some((a, b))) => (
            StatusCode::PARTIAL_CONTENT,
            object.data.slice(a..=b),
            Some(format!("bytes {a}-{b}/{len}")),
        ),
        Err(()) => {
            return fail(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range cannot be satisfied.",
            );
        }
    };
    let body_len = body.len();
    let mut r = if head {
        respond(status, Body::empty())
    } else {
        respond(status, body)
    };
    object_headers(&mut r, &object);
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
    if let Some(v) = range.and_then(|r| HeaderValue::from_str(&r).ok()) {
        h.insert(CONTENT_RANGE, v);
    }
    r
}

fn put(s: &Shared, req: ObjectRequest) -> Response {
    let (bucket, name, q) = (&req.bucket, &req.name, &req.query);
    let headers = &req.headers;
    if let (Some(part), Some(id)) = (q.get("partNumber"), q.get("uploadId")) {
        let Ok(number) = part.parse::<u32>() else {
            return fail(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                &format!("Invalid partNumber: {part}"),
            );
        };
        return match s.buckets().put_part((bucket, name), id, number, req.body) {
            Ok(etag) => {
                let mut r = respond(StatusCode::OK, Body::empty());
                if let Ok(v) = HeaderValue::from_str(&etag) {
                    r.headers_mut().insert(ETAG, v);
                }
                r
            }
            Err(e) => write_error(e),
        };
    }
    let if_generation = match generation_match(headers) {
        Ok(g) => g,
        Err(v) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                &format!("Invalid {GENERATION_MATCH}: {v}"),
            );
        }
    };
    if let Some(source) = header(headers, COPY_SOURCE) {
        let source = percent_encoding::percent_decode_str(source.trim_start_matches('/'))
            .decode_utf8_lossy()
            .into_owned();
        let Some((from_bucket, from)) = source.split_once('/') else {
            return fail(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                &format!("Invalid {COPY_SOURCE}: {source}"),
            );
        };
        let mut buckets = s.buckets();
        return match buckets.copy((from_bucket, from), (bucket, name), if_generation) {
            Ok(o) => {
                let mut r = xml_response(StatusCode::OK, xml::copy_result(o));
                object_headers(&mut r, o);
                r
            }
            Err(e) => write_error(e),
        };
    }
    let mut buckets = s.buckets();
    let written = buckets.put(bucket, name, req.body, attributes(headers), if_generation);
    match written {
        Ok(o) => {
            let mut r = respond(StatusCode::OK, Body::empty());
            object_headers(&mut r, o);
            r
        }
        Err(e) => write_error(e),
    }
}

fn post(s: &Shared, req: ObjectRequest) -> Response {
    let (bucket, name, q) = (&req.bucket, &req.name, &req.query);
    let headers = &req.headers;
    if q.contains_key("uploads") {
        let started = s.buckets().start_upload(bucket, name, attributes(headers));
        return match started {
            Ok(id) => xml_response(StatusCode::OK, xml::initiate_result(bucket, name, &id)),
            Err(e) => write_error(e),
        };
    }
    let Some(id) = q.get("uploadId") else {
        return fail(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "POST to an object needs ?uploads or ?uploadId=",
        );
    };
    let parts = match std::str::from_utf8(&req.body)
        .map_err(|e| e.to_string())
        .and_then(xml::parse_complete)
    {
        Ok(p) => p,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "MalformedXML",
                &format!("CompleteMultipartUpload: {e}"),
            );
        }
    };
    let mut buckets = s.buckets();
    match buckets.complete_upload((bucket, name), id, &parts) {
        Ok(o) => {
            let body = xml::complete_result(&s.base_url, bucket, name, &o.etag);
            let mut r = xml_response(StatusCode::OK, body);
            object_headers(&mut r, o);
            r
        }
        Err(e) => write_error(e),
    }
}

fn delete(s: &Shared, req: ObjectRequest) -> Response {
    let (bucket, name, q) = (&req.bucket, &req.name, &req.query);
    let done = match q.get("uploadId") {
        Some(id) => s.buckets().abort_upload(bucket, name, id),
        None => s.buckets().delete(bucket, name),
    };
    match done {
        Ok(()) => respond(StatusCode::NO_CONTENT, Body::empty()),
        Err(e) => write_error(e),
    }
}

/// A continuation token: where the previous page stopped (a key, or a whole common prefix).
enum Resume {
    After(String),
    PastPrefix(String),
}

impl Resume {
    fn encode(&self) -> String {
        let raw = match self {
            Resume::After(k) => format!("k{k}"),
            Resume::PastPrefix(p) => format!("p{p}"),
        };
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn decode(token: &str) -> Option<Self> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        match raw.split_at_checked(1)? {
            ("k", k) => Some(Resume::After(k.to_string())),
            ("p", p) => Some(Resume::PastPrefix(p.to_string())),
            _ => None,
        }
    }

    fn skips(&self, key: &str) -> bool {
        match self {
            Resume::After(k) => key <= k.as_str(),
            Resume::PastPrefix(p) => key.starts_with(p.as_str()) || key < p.as_str(),
        }
    }
}

async fn list(State(s): State<Shared>, Path(bucket): Path<String>, Query(q): Params) -> Response {
    if q.get("list-type").map(String::as_str) != Some("2") {
        return fail(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "only list-type=2 listings are served",
        );
    }
    let prefix = q.get("prefix").map(String::as_str).unwrap_or("");
    let delimiter = q
        .get("delimiter")
        .map(String::as_str)
        .filter(|d| !d.is_empty());
    let max_keys = match q.get("max-keys").map(|m| m.parse::<usize>()) {
        None => MAX_KEYS,
        Some(Ok(n)) => n.clamp(1, MAX_KEYS),
        Some(Err(_)) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "Invalid max-keys",
            );
        }
    };
    let resume = match q.get("continuation-token") {
        Some(t) => match Resume::decode(t) {
            Some(r) => Some(r),
            None => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "Invalid continuation-token",
                );
            }
        },
        None => None,
    };
    let start_after = q.get("start-after").map(String::as_str);

    let buckets = s.buckets();
    let Some(objects) = buckets.bucket(&bucket) else {
        return write_error(WriteError::NoSuchBucket);
    };
    let mut page = xml::ListPage {
        bucket: &bucket,
        prefix,
        delimiter,
        max_keys,
        objects: Vec::new(),
        prefixes: Vec::new(),
        next_token: None,
    };
    let mut last: Option<Resume> = None;
    for (key, object) in objects.range(prefix.to_string()..) {
        if !key.starts_with(prefix) {
            break;
        }
        if start_after.is_some_and(|s| key.as_str() <= s)
            || resume.as_ref().is_some_and(|r| r.skips(key))
        {
            continue;
        }
        let common = delimiter.and_then(|d| {
            let rest = &key[prefix.len()..];
            rest.find(d)
                .map(|i| format!("{prefix}{}", &rest[..i + d.len()]))
        });
        if let (Some(c), Some(Resume::PastPrefix(p))) = (&common, &last)
            && c == p
        {
            continue;
        }
        if page.objects.len() + page.prefixes.len() == max_keys {
            page.next_token = last.as_ref().map(Resume::encode);
            break;
        }
        last = Some(match common {
            Some(c) => {
                page.prefixes.push(c.clone());
                Resume::PastPrefix(c)
            }
            None => {
                page.objects.push((key.as_str(), object));
                Resume::After(key.clone())
            }
        });
    }
    xml_response(StatusCode::OK, page.to_xml())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_http() {
        assert_eq!(byte_range(None, 10), Ok(None));
        assert_eq!(byte_range(Some("bytes=2-4"), 10), Ok(Some((2, 4))));
        assert_eq!(byte_range(Some("bytes=2-"), 10), Ok(Some((2, 9))));
        assert_eq!(byte_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(byte_range(Some("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(byte_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(byte_range(Some("bytes=4-2"), 10), Err(()));
        assert_eq!(byte_range(Some("items=1-2"), 10), Err(()));
    }

    #[test]
    fn tokens_round_trip() {
        let t = Resume::PastPrefix("a/b/".into()).encode();
        assert!(matches!(Resume::decode(&t), Some(Resume::PastPrefix(p)) if p == "a/b/"));
        assert!(Resume::decode("!!").is_none());
    }
}
