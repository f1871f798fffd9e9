//! Concurrent, streaming downloads of the manifest's files, with per-line integrity checks,
//! rejects kept aside, and per-file retries that resume with `Range` where the server allows.
mod cloud;
mod contents;
mod encoding;
mod fetch;
mod files;
mod gunzip;
mod lines;

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

pub(crate) use cloud::CloudStores;
pub use encoding::FileEncoding;
pub use files::{DownloadedFile, PlannedFile, RejectedLine, plan};
pub use lines::check_line;

use crate::client::BulkClient;
use crate::error::{BulkError, FileFailure};
use crate::events::BulkEvent;
use crate::manifest::Manifest;
use fetch::fetch;

/// Options of one download run.
#[derive(Clone, Debug, Default)]
pub struct DownloadOptions {
    /// Files finished in an earlier run, by name: yielded as they are, not downloaded again
    /// (unless the file on disk no longer has the size it was written with).
    pub finished: BTreeMap<String, DownloadedFile>,
}

/// The files of a download as they finish, in completion order. Dropping it stops all
/// downloads (partial files stay as `*.part` and are redone by a resumed run).
pub struct Downloads {
    rx: mpsc::UnboundedReceiver<Result<DownloadedFile, FileFailure>>,
    driver: JoinHandle<()>,
    total: usize,
}

impl Downloads {
    /// Number of files this download yields (finished and failed together).
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Stream for Downloads {
    type Item = Result<DownloadedFile, FileFailure>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl BulkClient {
    /// Downloads every file of `manifest` into `dir` (outputs, then deletions and errors),
    /// `max_concurrent_downloads` at a time. Must be called within a Tokio runtime.
    pub fn download(&self, manifest: &Manifest, dir: &Path, options: DownloadOptions) -> Downloads {
        let planned = plan(manifest);
        let total = planned.len();
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.clone();
        let dir = dir.to_path_buf();
        let requires_token = manifest.requires_access_token;
        let driver = tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(client.inner.config.max_concurrent_downloads));
            let mut tasks = JoinSet::new();
            for file in planned {
                // A finished file is taken over only while it is still what was written: one
                // cut short or changed on disk since is downloaded again.
                if let Some(done) = options.finished.get(&file.name)
                    && done.url == file.url
                    && std::fs::metadata(dir.join(&file.name))
                        .is_ok_and(|m| m.is_file() && m.len() == done.bytes)
                {
                    let mut done = done.clone();
                    done.resumed = true;
                    done.path = dir.join(&file.name);
                    let _ = tx.send(Ok(done));
                    continue;
                }
                let (client, dir, tx, permits) =
                    (client.clone(), dir.clone(), tx.clone(), permits.clone());
                tasks.spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    let result = fetch(&client, &dir, &file, requires_token)
                        .await
                        .map_err(|e| {
                            let gone = matches!(e, BulkError::FileGone { .. });
                            let message = e.to_string();
                            client.emit(BulkEvent::DownloadError {
                                url: file.url.clone(),
                                resource_type: file.resource_type.clone(),
                                kind: file.kind,
                                message: message.clone(),
                            });
                            FileFailure {
                                url: file.url.clone(),
                                resource_type: file.resource_type.clone(),
                                message,
                                gone,
                            }
                        });
                    let _ = tx.send(result);
                });
            }
            drop(tx);
            while let Some(joined) = tasks.join_next().await {
                if let Err(e) = joined
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a download task panicked");
                }
            }
        });
        Downloads { rx, driver, total }
    }
}
