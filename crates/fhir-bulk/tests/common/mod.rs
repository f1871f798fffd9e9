//! Shared test utilities: fast client settings, reading an export directory back, and a tiny
//! scripted HTTP/1.1 server for answers the full test server does not give.
#![allow(dead_code)]
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fhir_bulk::{
    BulkClient, BulkError, BulkEvent, ClientConfig, ExportOptions, ExportRequest, ExportSummary,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

/// Client settings with short waits, so fault tests finish quickly on a loaded machine.
pub fn fast_config(base: Url) -> ClientConfig {
    let mut c = ClientConfig::new(base);
    c.poll.min_delay = Duration::from_millis(10);
    c.poll.initial_delay = Duration::from_millis(20);
    c.poll.max_delay = Duration::from_millis(1500);
    c.poll.timeout = Duration::from_secs(120);
    c.retry.initial_backoff = Duration::from_millis(20);
    c.retry.max_backoff = Duration::from_millis(300);
    c.retry.max_retries = 5;
    c.read_timeout = Duration::from_secs(30);
    c
}

/// A system-level export with default options into `dir`.
pub async fn export_system(client: &BulkClient, dir: &Path) -> Result<ExportSummary, BulkError> {
    client
        .export_to_dir(&ExportRequest::system(), dir, &ExportOptions::default())
        .await
}

/// Records every event, for assertions on what observers see.
pub fn recorder() -> (fhir_bulk::EventHandler, Arc<Mutex<Vec<BulkEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (
        Arc::new(move |e: &BulkEvent| sink.lock().unwrap().push(e.clone())),
        events,
    )
}

/// Type → id → the resource lines with that id, from every `<Type>.<n>.ndjson` in `dir`.
pub fn content(dir: &Path) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !path.is_file() || !name.ends_with(".ndjson") {
            continue;
        }
        let ty = name.split('.').next().unwrap().to_string();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["resourceType"], ty.as_str(), "{name}");
            let id = v["id"].as_str().unwrap().to_string();
            out.entry(ty.clone())
                .or_default()
                .entry(id)
                .or_default()
                .push(line.to_string());
        }
    }
    out
}

pub fn total_resources(c: &BTreeMap<String, BTreeMap<String, Vec<String>>>) -> usize {
    c.values().flat_map(|ids| ids.values()).map(Vec::len).sum()
}

/// One canned answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = b.into();
        self
    }
    pub fn json(self, v: serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }
}

/// A request as the scripted server saw it (header names lower-case).
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Answers each path from a queue of replies; the last reply of a queue repeats.
#[derive(Clone)]
pub struct Scripted {
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = Scripted {
            addr,
            routes: Arc::default(),
            seen: Arc::default(),
        };
        let server = s.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    let reply = server.reply_for(&req.path);
                    server.seen.lock().unwrap().push(req);
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (k, v) in &reply.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&reply.body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        s
    }

    pub fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.addr)).unwrap()
    }

    pub fn on(&self, path: &str, reply: Reply) -> &Self {
        self.routes
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .push_back(reply);
        self
    }

    fn reply_for(&self, path: &str) -> Reply {
        let mut routes = self.routes.lock().unwrap();
        match routes.get_mut(path) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) if q.len() == 1 => q[0].clone(),
            _ => Reply::new(404).body("no such path"),
        }
    }

    pub fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let path = target.split('?').next()?.to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}
