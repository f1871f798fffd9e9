//! The terminal display of `export`, `sync` and `import`: one bar per phase, fed by the bulk
//! client's events ([`Progress::handler`]) and the sync's ([`Progress::sync_events`]):
//! - `export`: kick-off, then the server's `X-Progress` text and the next poll;
//! - `download`: files, resources, bytes, rate and ETA;
//! - `encode`: files encoded and resources;
//! - `commit`: tables committed, and those committing now.
//!
//! A finished phase's bar stays on screen with its totals. Log lines must not tear the bars:
//! [`LogWriter`] writes to stderr with the bars hidden for the moment of the write, so warnings
//! and errors appear above them.
use std::collections::BTreeSet;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fhir_bulk::{BulkEvent, EventHandler, FileKind};
use indicatif::{HumanBytes, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget};
use indicatif::{HumanCount, ProgressStyle};

use crate::run::{SyncEvent, SyncEvents};

/// The display currently on screen, if any; [`LogWriter`] hides it while a log line is written.
static ACTIVE: Mutex<Option<(u64, MultiProgress)>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

// `wide_msg` is cut to the terminal width: a wrapped bar would leave copies of itself behind.
const SPINNER: &str = "{spinner:.green} {prefix:>8.bold} {elapsed:>4} {wide_msg}";
const BAR: &str =
    "{spinner:.green} {prefix:>8.bold} {elapsed:>4} [{bar:25}] {pos}/{len} {wide_msg}";
const DONE: &str = "  {prefix:>8.bold} {elapsed:>4} {wide_msg}";

/// A progress display on stderr. Cheap to clone; all clones drive the same bars.
#[derive(Clone)]
pub struct Progress {
    id: u64,
    multi: MultiProgress,
    phases: Arc<Mutex<Phases>>,
}

/// The bars, created as their phase begins, and what their messages show.
#[derive(Default)]
struct Phases {
    /// The opening phase: the export's kick-off and polling (or an import's file listing).
    export: Option<ProgressBar>,
    download: Option<ProgressBar>,
    encode: Option<ProgressBar>,
    commit: Option<ProgressBar>,
    /// Output files the manifest lists (what the encode bar counts up to).
    output_files: Option<u64>,
    downloaded_resources: u64,
    bytes: u64,
    retries: u64,
    encoded_resources: u64,
    committing: BTreeSet<String>,
}

impl Progress {
    /// A display on stderr (drawn only when stderr is a terminal), starting with a spinner for
    /// the opening `phase` (`export`, or `import` for local files) that says `message`.
    pub fn new(phase: &'static str, message: impl Into<String>) -> Self {
        Self::with_target(phase, message, ProgressDrawTarget::stderr())
    }

    /// Like [`Progress::new`] with another draw target (a hidden one in tests).
    pub fn with_target(
        phase: &'static str,
        message: impl Into<String>,
        target: ProgressDrawTarget,
    ) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut active) = ACTIVE.lock() {
            *active = Some((id, multi.clone()));
        }
        let this = Self {
            id,
            multi,
            phases: Arc::default(),
        };
        let bar = this.spinner(phase);
        bar.set_message(message.into());
        this.lock().export = Some(bar);
        this
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

    /// Where a sync or import reports its encoding and commits.
    pub fn sync_events(&self) -> SyncEvents {
        let this = self.clone();
        SyncEvents::new(move |event| this.on_sync_event(event))
    }

    /// Updates the display for one event of the bulk client.
    pub fn on_event(&self, event: &BulkEvent) {
        let mut p = self.lock();
        match event {
            BulkEvent::KickOff { .. } => {
                if let Some(bar) = &p.export {
                    bar.set_message("kicked off; waiting for the server");
                }
            }
            BulkEvent::StatusProgress {
                progress,
                next_poll_in,
                ..
            } => {
                let text = progress
                    .as_deref()
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .unwrap_or("in progress");
                if let Some(bar) = &p.export {
                    bar.set_message(format!(
                        "server: {text} · next poll in {}",
                        HumanDuration(*next_poll_in)
                    ));
                }
            }
            BulkEvent::StatusComplete {
                output_files,
                deleted_files,
                error_files,
                ..
            } => {
                let files = output_files + deleted_files + error_files;
                if let Some(bar) = &p.export {
                    done(bar, format!("ready: {files} files"));
                }
                // A Group's new members bring exports of their own: each gets a download bar,
                // and the files to encode add up.
                if p.download.as_ref().is_none_or(|b| b.is_finished()) {
                    p.download = Some(self.bar("download", files as u64));
                }
                let outputs = p.output_files.unwrap_or(0) + *output_files as u64;
                p.output_files = Some(outputs);
                if let Some(bar) = &p.encode {
                    bar.set_style(style(BAR));
                    bar.set_length(outputs);
                }
                p.refresh_download();
            }
            BulkEvent::DownloadProgress { bytes, .. } => {
                p.bytes += bytes;
                p.refresh_download();
            }
            BulkEvent::DownloadComplete { kind, lines, .. } => {
                if *kind == FileKind::Output {
                    p.downloaded_resources += lines;
                }
                if let Some(bar) = &p.download {
                    bar.inc(1);
                }
                p.refresh_download();
            }
            BulkEvent::Retry { .. } => {
                p.retries += 1;
                p.refresh_download();
            }
            BulkEvent::ExportComplete {
                files,
                resources,
                bytes,
                ..
            } => {
                if let Some(bar) = &p.export
                    && !bar.is_finished()
                {
                    done(bar, format!("ready: {files} files (resumed)"));
                }
                let bar = p
                    .download
                    .get_or_insert_with(|| self.bar("download", *files as u64));
                let secs = bar.elapsed().as_secs_f64().max(0.001);
                done(
                    bar,
                    format!(
                        "{files} files · {} resources · {} · {}/s",
                        HumanCount(*resources),
                        HumanBytes(*bytes),
                        HumanBytes((*bytes as f64 / secs) as u64)
                    ),
                );
            }
            _ => {}
        }
    }

    /// Updates the display for one event of the sync.
    pub fn on_sync_event(&self, event: &SyncEvent) {
        let mut p = self.lock();
        match event {
            SyncEvent::EncodingStarted { files } => {
                if let Some(bar) = &p.export
                    && !bar.is_finished()
                {
                    bar.finish_and_clear();
                }
                p.output_files = Some(*files as u64);
                self.encode_bar(&mut p);
            }
            SyncEvent::FileEncoded { resources } => {
                p.encoded_resources += resources;
                let total = p.encoded_resources;
                let bar = self.encode_bar(&mut p);
                bar.inc(1);
                bar.set_message(format!("{} resources", HumanCount(total)));
            }
            SyncEvent::CommitsStarted { tables } => {
                let total = p.encoded_resources;
                let bar = self.encode_bar(&mut p);
                let files = bar.position();
                done(
                    bar,
                    format!("{files} files · {} resources", HumanCount(total)),
                );
                p.commit = Some(self.bar("commit", *tables as u64));
            }
            SyncEvent::TableCommitStarted { resource_type } => {
                p.committing.insert(resource_type.clone());
                p.refresh_commit();
            }
            SyncEvent::TableCommitted { resource_type } => {
                p.committing.remove(resource_type);
                if let Some(bar) = &p.commit {
                    bar.inc(1);
                }
                p.refresh_commit();
            }
        }
    }

    /// Clears the bars of unfinished phases (finished ones stay with their totals) and stops
    /// drawing; further events change nothing visible.
    pub fn finish(&self) {
        {
            let p = self.lock();
            for bar in [&p.export, &p.download, &p.encode, &p.commit]
                .into_iter()
                .flatten()
            {
                if !bar.is_finished() {
                    bar.finish_and_clear();
                }
            }
        }
        if let Ok(mut active) = ACTIVE.lock()
            && active.as_ref().is_some_and(|(id, _)| *id == self.id)
        {
            *active = None;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Phases> {
        // A panic elsewhere while the display was updated leaves counts, nothing to distrust.
        self.phases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn encode_bar<'a>(&self, p: &'a mut Phases) -> &'a ProgressBar {
        let len = p.output_files;
        p.encode.get_or_insert_with(|| match len {
            Some(n) => self.bar("encode", n),
            None => self.spinner("encode"),
        })
    }

    fn spinner(&self, phase: &'static str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::no_length());
        bar.set_style(style(SPINNER));
        bar.set_prefix(phase);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    fn bar(&self, phase: &'static str, len: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(style(BAR));
        bar.set_prefix(phase);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

impl Phases {
    fn refresh_download(&self) {
        let Some(bar) = &self.download else { return };
        if bar.is_finished() {
            return;
        }
        let secs = bar.elapsed().as_secs_f64().max(0.001);
        let retries = match self.retries {
            0 => String::new(),
            1 => " · 1 retry".to_owned(),
            n => format!(" · {n} retries"),
        };
        let eta = if bar.position() > 0 && Some(bar.position()) < bar.length() {
            format!(" · ETA {}", HumanDuration(bar.eta()))
        } else {
            String::new()
        };
        bar.set_message(format!(
            "files · {} resources · {} · {}/s{eta}{retries}",
            HumanCount(self.downloaded_resources),
            HumanBytes(self.bytes),
            HumanBytes((self.bytes as f64 / secs) as u64),
        ));
    }

    fn refresh_commit(&self) {
        let Some(bar) = &self.commit else { return };
        if bar.length() == Some(bar.position()) {
            done(bar, format!("{} tables", bar.position()));
        } else {
            let now: Vec<&str> = self.committing.iter().map(String::as_str).collect();
            bar.set_message(format!("tables · committing {}", now.join(", ")));
        }
    }
}

/// Ends a phase's bar, keeping one line with its totals.
fn done(bar: &ProgressBar, message: String) {
    bar.set_style(style(DONE));
    bar.finish_with_message(message);
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A `tracing_subscriber` writer for stderr that hides the active display while a log line is
/// written, so logs stand above the bars and never share a line with them:
/// `fmt::layer().with_writer(fhirsync::progress::LogWriter)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let multi = ACTIVE
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(|(_, m)| m.clone()));
        match multi {
            // The formatter hands over a whole line at once: one suspend per line.
            Some(multi) => multi.suspend(|| io::stderr().write_all(buf).map(|()| buf.len())),
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

    fn hidden() -> Progress {
        Progress::with_target("export", "starting", ProgressDrawTarget::hidden())
    }

    fn bar(p: &Progress, pick: fn(&Phases) -> &Option<ProgressBar>) -> ProgressBar {
        pick(&p.lock()).clone().expect("the phase's bar exists")
    }

    #[test]
    fn export_and_download_bars_follow_the_bulk_events() {
        let p = hidden();
        let seen = Arc::new(AtomicU64::new(0));
        let inner_seen = seen.clone();
        let handler = p.handler(Some(Arc::new(move |_: &BulkEvent| {
            inner_seen.fetch_add(1, Ordering::Relaxed);
        })));
        handler(&BulkEvent::StatusProgress {
            status_url: url(),
            progress: Some("42% done".into()),
            next_poll_in: Duration::from_secs(5),
        });
        assert_eq!(
            bar(&p, |p| &p.export).message(),
            "server: 42% done · next poll in 5 seconds"
        );
        handler(&BulkEvent::StatusComplete {
            status_url: url(),
            output_files: 2,
            deleted_files: 1,
            error_files: 0,
            output_files_by_type: Default::default(),
        });
        let export = bar(&p, |p| &p.export);
        assert!(export.is_finished());
        assert_eq!(export.message(), "ready: 3 files");
        let download = bar(&p, |p| &p.download);
        assert_eq!(download.length(), Some(3));
        handler(&BulkEvent::DownloadProgress {
            url: url(),
            bytes: 1500,
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
        assert_eq!(download.position(), 2);
        let message = download.message();
        assert!(
            message.starts_with("files · 7 resources · 1.46 KiB · ") && message.contains("ETA"),
            "deletions are not resources; {message}"
        );
        handler(&BulkEvent::Retry {
            what: "download",
            url: url(),
            attempt: 1,
            reason: fhir_bulk::RetryReason::RateLimited,
            delay: Duration::from_secs(1),
        });
        assert!(
            download.message().ends_with(" · 1 retry"),
            "{}",
            download.message()
        );
        handler(&BulkEvent::ExportComplete {
            files: 3,
            resources: 7,
            bytes: 1500,
            rejected: 0,
            duration: Duration::from_secs(1),
        });
        assert!(download.is_finished());
        assert!(
            download
                .message()
                .starts_with("3 files · 7 resources · 1.46 KiB · "),
            "{}",
            download.message()
        );
        assert_eq!(
            seen.load(Ordering::Relaxed),
            7,
            "the inner handler sees every event"
        );
        p.finish();
    }

    #[test]
    fn encode_and_commit_bars_follow_the_sync_events() {
        let p = hidden();
        let events = p.sync_events();
        events.emit(SyncEvent::EncodingStarted { files: 2 });
        assert!(
            bar(&p, |p| &p.export).is_finished(),
            "an import has no export phase"
        );
        let encode = bar(&p, |p| &p.encode);
        assert_eq!(encode.length(), Some(2));
        events.emit(SyncEvent::FileEncoded { resources: 1200 });
        events.emit(SyncEvent::FileEncoded { resources: 34 });
        assert_eq!(encode.position(), 2);
        assert_eq!(encode.message(), "1,234 resources");
        events.emit(SyncEvent::CommitsStarted { tables: 2 });
        assert!(encode.is_finished());
        assert_eq!(encode.message(), "2 files · 1,234 resources");
        let commit = bar(&p, |p| &p.commit);
        for t in ["Observation", "Encounter"] {
            events.emit(SyncEvent::TableCommitStarted {
                resource_type: t.into(),
            });
        }
        assert_eq!(
            commit.message(),
            "tables · committing Encounter, Observation"
        );
        events.emit(SyncEvent::TableCommitted {
            resource_type: "Encounter".into(),
        });
        assert_eq!(commit.message(), "tables · committing Observation");
        assert!(!commit.is_finished());
        events.emit(SyncEvent::TableCommitted {
            resource_type: "Observation".into(),
        });
        assert!(commit.is_finished());
        assert_eq!(commit.message(), "2 tables");
        p.finish();
    }

    #[test]
    fn the_encode_bar_counts_up_to_the_manifests_output_files() {
        let p = hidden();
        // Files can finish encoding before the manifest's count is known (a resumed export).
        p.on_sync_event(&SyncEvent::FileEncoded { resources: 5 });
        let encode = bar(&p, |p| &p.encode);
        assert_eq!(encode.length(), None);
        p.on_event(&BulkEvent::StatusComplete {
            status_url: url(),
            output_files: 4,
            deleted_files: 0,
            error_files: 1,
            output_files_by_type: Default::default(),
        });
        assert_eq!(encode.length(), Some(4));
        assert_eq!(bar(&p, |p| &p.download).length(), Some(5));
        p.finish();
        assert!(encode.is_finished(), "finish clears unfinished phases");
    }

    #[test]
    fn log_writer_writes_with_and_without_a_display() {
        let mut w = LogWriter;
        assert_eq!(w.write(b"").unwrap(), 0);
        let p = hidden();
        // Through the active display's suspend; the display keeps working afterwards.
        assert_eq!(w.write(b"").unwrap(), 0);
        w.flush().unwrap();
        p.on_sync_event(&SyncEvent::CommitsStarted { tables: 1 });
        assert!(bar(&p, |p| &p.commit).length() == Some(1));
        p.finish();
        assert!(
            ACTIVE
                .lock()
                .unwrap()
                .as_ref()
                .is_none_or(|(id, _)| *id != p.id),
            "a finished display is no longer active"
        );
        assert_eq!(w.write(b"").unwrap(), 0);
    }
}
