//! File bodies: rendered on a blocking thread into bounded chunks (memory does not grow with
//! file size), optionally gzipped, then shaped by body faults (reset, truncation, throttling).
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::export::FileSpec;
use crate::faults::Fault;

/// A piece of a streamed response body.
pub(crate) type BodyChunk = Result<Bytes, std::io::Error>;

const CHUNK: usize = 64 * 1024;

/// Sends full chunks to the response; fails once the client is gone.
struct ChunkWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

fn produce(
    spec: &FileSpec,
    range: Option<(u64, u64)>,
    gzip: bool,
    tx: mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let out = ChunkWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
    };
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        let mut failed = None;
        spec.render(&mut |b| match gz.write_all(b) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let mut out = gz.finish()?;
        return out.flush();
    }
    let mut out = out;
    let (start, end) = range.unwrap_or((0, u64::MAX - 1));
    let mut pos = 0u64;
    let mut failed = None;
    spec.render(&mut |b| {
        let (lo, hi) = (pos, pos + b.len() as u64);
        pos = hi;
        if hi <= start {
            return true;
        }
        let from = start.saturating_sub(lo) as usize;
        let to = ((end + 1).min(hi) - lo) as usize;
        if from < to
            && let Err(e) = out.write_all(&b[from..to])
        {
            failed = Some(e);
            return false;
        }
        hi <= end
    });
    if let Some(e) = failed {
        return Err(e);
    }
    out.flush()
}

struct Shaper {
    rx: mpsc::Receiver<Bytes>,
    fault: Option<Fault>,
    sent: u64,
    pending: Option<Bytes>,
    finished: bool,
}

/// The body of one file download.
pub(crate) fn stream(
    spec: Arc<FileSpec>,
    range: Option<(u64, u64)>,
    gzip: bool,
    fault: Option<Fault>,
) -> impl Stream<Item = BodyChunk> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = produce(&spec, range, gzip, tx) {
            tracing::debug!(error = %e, "file download stopped");
        }
    });
    let shaper = Shaper {
        rx,
        fault,
        sent: 0,
        pending: None,
        finished: false,
    };
    futures::stream::unfold(shaper, |mut s| async move {
        if s.finished {
            return None;
        }
        let chunk = match s.pending.take() {
            Some(c) => c,
            None => match s.rx.recv().await {
                Some(c) => c,
                None => return None,
            },
        };
        match s.fault.clone() {
            Some(Fault::ResetAfter { bytes }) | Some(Fault::Truncate { bytes, .. }) => {
                let left = bytes.saturating_sub(s.sent);
                if (chunk.len() as u64) < left {
                    s.sent += chunk.len() as u64;
                    return Some((Ok(chunk), s));
                }
                s.finished = true;
                let head = chunk.slice(..left as usize);
                let truncate_cleanly =
                    matches!(s.fault, Some(Fault::Truncate { chunked: false, .. }));
                if head.is_empty() {
                    if truncate_cleanly {
                        return None;
                    }
                    return Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "connection reset (injected fault)",
                        )),
                        s,
                    ));
                }
                if !truncate_cleanly {
                    // Send the head, then fail on the next poll.
                    s.pending = Some(Bytes::new());
                    s.finished = false;
                    s.fault = Some(Fault::ResetAfter { bytes: 0 });
                    s.sent = 0;
                }
                Some((Ok(head), s))
            }
            Some(Fault::Slow { bytes_per_sec }) => {
                let piece = (bytes_per_sec / 10).max(1) as usize;
                let (now, later) = if chunk.len() > piece {
                    (chunk.slice(..piece), Some(chunk.slice(piece..)))
                } else {
                    (chunk, None)
                };
                s.pending = later;
                tokio::time::sleep(Duration::from_millis(100)).await;
                s.sent += now.len() as u64;
                Some((Ok(now), s))
            }
            _ => {
                s.sent += chunk.len() as u64;
                Some((Ok(chunk), s))
            }
        }
    })
}
