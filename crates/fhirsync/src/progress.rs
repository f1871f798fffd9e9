//! The terminal progress display of `export` and `sync`: a spinner while the server prepares the
//! export (with its `X-Progress` text), then a bar over the files with resources and bytes.
//!
//! It is fed by the bulk client's events ([`Progress::handler`]). Log lines must not tear the
//! bar: [`LogWriter`] writes to stderr with the active bar hidden for the moment of the write.
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fhir_bulk::{BulkEvent, EventHandler, FileKind};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar currently on screen, if any; [`LogWriter`] hides it while a log line is written.
static ACTIVE: Mutex<Option<(u64, ProgressBar)>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

// `wide_msg` is cut to the terminal width: a wrapped bar would leave copies of itself behind.
const SPINNER: &str = "{spinner} {elapsed_precise} {wide_msg}";
const FILES: &str = "{spinner} {elapsed_precise} [{bar:25}] {pos}/{len} files {wide_msg}";

/// A progress display on stderr. Cheap to clone; all clones drive the same bar.
#[derive(Clone)]
pub struct Progress {
    id: u64,
    bar: ProgressBar,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    resources: AtomicU64,
    bytes: AtomicU64,
    retries: AtomicU64,
}

impl Progress {
    /// Shows a spinner with `message` on stderr (nothing when stderr is not a terminal).
    pub fn new(message: impl Into<String>) -> Self {
        Self::with_target(message, ProgressDrawTarget::stderr())
    }

    /// Like [`Progress::new`] with another draw target (a hidden one in tests).
    pub fn with_target(message: impl Into<String>, target: ProgressDrawTarget) -> Self {
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(spinner_style());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar.set_message(message.into());
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut active) = ACTIVE.lock() {
            *active = Some((id, bar.clone()));
        }
        Self {
            id,
            bar,
            counts: Arc::default(),
        }
    }

    /// An event handler for `ClientConfig::events` that feeds this display and then calls `inner`.
    pub fn handler(&self, inner: Option<EventHandler>) -> EventHandler {
        let this = self.clone();
        Arc::new(move |event: &BulkEvent| {
            this.on_event(event);
            if let Some(h) = &inner {
                h(event);
            }
        })
    }

    /// Updates the display for one event of the bulk client.
    pub fn on_event(&self, event: &BulkEvent) {
        match event {
            BulkEvent::KickOff { .. } => self
                .bar
                .set_message("export started; waiting for the server"),
            BulkEvent::StatusProgress { progress, .. } => {
                let text = progress
                    .as_deref()
                    .map(|p| p.trim())
                    .filter(|p| !p.is_empty())
                    .unwrap_or("in progress");
                self.bar.set_message(format!("server working: {text}"));
            }
            BulkEvent::StatusComplete {
                output_files,
                deleted_files,
                error_files,
                ..
            } => {
                self.bar
                    .set_length((output_files + deleted_files + error_files) as u64);
                self.bar.set_position(0);
                self.bar.set_style(files_style());
                self.refresh();
            }
            BulkEvent::DownloadProgress { bytes, .. } => {
                self.counts.bytes.fetch_add(*bytes, Ordering::Relaxed);
                self.refresh();
            }
            BulkEvent::DownloadComplete { kind, lines, .. } => {
                if *kind == FileKind::Output {
                    self.counts.resources.fetch_add(*lines, Ordering::Relaxed);
                }
                self.bar.inc(1);
                self.refresh();
            }
            BulkEvent::Retry { .. } => {
                self.counts.retries.fetch_add(1, Ordering::Relaxed);
                self.refresh();
            }
            _ => {}
        }
    }

    /// Switches back to a spinner for a stage after the downloads (e.g. writing the tables).
    pub fn stage(&self, message: impl Into<String>) {
        self.bar.set_style(spinner_style());
        self.bar.set_message(message.into());
    }

    /// Resources counted so far (lines of output files).
    pub fn resources(&self) -> u64 {
        self.counts.resources.load(Ordering::Relaxed)
    }

    /// Bytes downloaded so far.
    pub fn bytes(&self) -> u64 {
        self.counts.bytes.load(Ordering::Relaxed)
    }

    /// Removes the display from the screen; further events change nothing visible.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        if let Ok(mut active) = ACTIVE.lock()
            && active.as_ref().is_some_and(|(id, _)| *id == self.id)
        {
            *active = None;
        }
    }

    fn refresh(&self) {
        let retries = self.counts.retries.load(Ordering::Relaxed);
        let retries = match retries {
            0 => String::new(),
            1 => ", 1 retry".to_owned(),
            n => format!(", {n} retries"),
        };
        self.bar.set_message(format!(
            "{} resources, {}{retries}",
            self.resources(),
            HumanBytes(self.bytes())
        ));
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template(SPINNER).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn files_style() -> ProgressStyle {
    ProgressStyle::with_template(FILES)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A `tracing_subscriber` writer for stderr that hides the active progress bar while a log line
/// is written, so logs and the bar never share a line:
/// `fmt::layer().with_writer(fhirsync::progress::LogWriter)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = ACTIVE
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(|(_, b)| b.clone()));
        match bar {
            // The formatter hands over a whole line at once: one suspend per line.
            Some(bar) => bar.suspend(|| io::stderr().write_all(buf).map(|()| buf.len())),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn url() -> Url {
        Url::parse("http://127.0.0.1/file/1.ndjson").unwrap()
    }

    #[test]
    fn counts_resources_bytes_and_files_from_events() {
        let p = Progress::with_target("starting", ProgressDrawTarget::hidden());
        let seen = Arc::new(AtomicU64::new(0));
        let inner_seen = seen.clone();
        let handler = p.handler(Some(Arc::new(move |_: &BulkEvent| {
            inner_seen.fetch_add(1, Ordering::Relaxed);
        })));
        handler(&BulkEvent::StatusComplete {
            status_url: url(),
            output_files: 2,
            deleted_files: 1,
            error_files: 0,
            output_files_by_type: Default::default(),
        });
        assert_eq!(p.bar.length(), Some(3));
        handler(&BulkEvent::DownloadProgress {
            url: url(),
            bytes: 1500,
        });
        handler(&BulkEvent::DownloadProgress {
            url: url(),
            bytes: 500,
        });
        for (kind, lines) in [(FileKind::Output, 7), (FileKind::Deleted, 3)] {
            handler(&BulkEvent::DownloadComplete {
                url: url(),
                resource_type: "Patient".into(),
                kind,
                path: "x".into(),
                lines,
                bytes: 0,
                rejected: 0,
            });
        }
        assert_eq!(p.resources(), 7, "deletions are not resources");
        assert_eq!(p.bytes(), 2000);
        assert_eq!(p.bar.position(), 2);
        assert!(
            p.bar.message() == "7 resources, 1.95 KiB",
            "{}",
            p.bar.message()
        );
        assert_eq!(
            seen.load(Ordering::Relaxed),
            5,
            "the composed handler sees every event"
        );
        p.stage("writing tables");
        assert_eq!(p.bar.message(), "writing tables");
        p.finish();
        assert!(p.bar.is_finished());
    }

    #[test]
    fn shows_the_servers_progress_text() {
        let p = Progress::with_target("starting", ProgressDrawTarget::hidden());
        p.on_event(&BulkEvent::StatusProgress {
            status_url: url(),
            progress: Some("42% done".into()),
            next_poll_in: Duration::from_secs(1),
        });
        assert_eq!(p.bar.message(), "server working: 42% done");
        p.on_event(&BulkEvent::StatusProgress {
            status_url: url(),
            progress: None,
            next_poll_in: Duration::from_secs(1),
        });
        assert_eq!(p.bar.message(), "server working: in progress");
        p.finish();
    }

    #[test]
    fn log_writer_writes_with_and_without_a_bar() {
        let mut w = LogWriter;
        assert_eq!(w.write(b"").unwrap(), 0);
        let p = Progress::with_target("starting", ProgressDrawTarget::hidden());
        // Through the active bar's suspend; the bar keeps working afterwards.
        assert_eq!(w.write(b"").unwrap(), 0);
        w.flush().unwrap();
        p.stage("next");
        p.finish();
        assert_eq!(w.write(b"").unwrap(), 0);
    }
}
