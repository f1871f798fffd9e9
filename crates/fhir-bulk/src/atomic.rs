//! Files that readers see whole or not at all: written under a temporary name beside the
//! target, synced, renamed over the target, and the directory synced so that the rename
//! survives a crash. A writer that stops before [`AtomicFile::commit`] leaves the target as it
//! was and the temporary file behind, as a crash would; the next writer of the same temporary
//! name starts it over.
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use crate::error::BulkError;

/// A file being written in place of `target`. `F` is the open temporary file: a
/// [`std::fs::File`], or a [`tokio::fs::File`] for async writers (see
/// [`AtomicFile::create_async`]). Writes go to the temporary file; [`AtomicFile::get_mut`]
/// gives the file itself, e.g. to cut it back before writing again.
#[derive(Debug)]
pub struct AtomicFile<F = File> {
    file: F,
    temp: PathBuf,
    target: PathBuf,
}

impl AtomicFile<File> {
    /// Starts replacing `target`, writing to `.NAME.PID.tmp` in its directory (created if
    /// missing).
    pub fn create(target: impl AsRef<Path>) -> io::Result<Self> {
        let target = target.as_ref();
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = directory(target).join(format!(".{name}.{}.tmp", std::process::id()));
        Self::create_with_temp(target, temp)
    }

    /// Starts replacing `target`, writing to `temp`, which must lie in the same directory (a
    /// rename is atomic only within one file system). An existing `temp` is truncated.
    pub fn create_with_temp(target: impl AsRef<Path>, temp: impl AsRef<Path>) -> io::Result<Self> {
        let (target, temp) = (target.as_ref(), temp.as_ref());
        let dir = directory(target);
        if directory(temp) != dir {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "temporary file {} is not in the directory of {}",
                    temp.display(),
                    target.display()
                ),
            ));
        }
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(temp)?;
        Ok(AtomicFile {
            file,
            temp: temp.to_path_buf(),
            target: target.to_path_buf(),
        })
    }

    /// [`AtomicFile::create_with_temp`] for async writers, without blocking the runtime.
    pub async fn create_async(
        target: impl AsRef<Path>,
        temp: impl AsRef<Path>,
    ) -> io::Result<AtomicFile<tokio::fs::File>> {
        let (target, temp) = (target.as_ref().to_path_buf(), temp.as_ref().to_path_buf());
        let file = tokio::task::spawn_blocking(move || Self::create_with_temp(target, temp))
            .await
            .map_err(io::Error::other)??;
        Ok(AtomicFile {
            file: tokio::fs::File::from_std(file.file),
            temp: file.temp,
            target: file.target,
        })
    }

    /// Syncs the written data, renames the file over the target and syncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.sync_all()?;
        drop(self.file);
        publish(&self.temp, &self.target)
    }
}

impl AtomicFile<tokio::fs::File> {
    /// [`AtomicFile::commit`] for async writers.
    pub async fn commit(mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.file.sync_all().await?;
        drop(self.file);
        let (temp, target) = (self.temp, self.target);
        tokio::task::spawn_blocking(move || publish(&temp, &target))
            .await
            .map_err(io::Error::other)?
    }
}

impl<F> AtomicFile<F> {
    /// Where the file goes on commit.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Where it is written until then.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    pub fn get_ref(&self) -> &F {
        &self.file
    }

    pub fn get_mut(&mut self) -> &mut F {
        &mut self.file
    }
}

impl Write for AtomicFile<File> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for AtomicFile<File> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl AsyncWrite for AtomicFile<tokio::fs::File> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().file).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

/// The directory a path is in (`.` for a bare file name).
fn directory(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn publish(temp: &Path, target: &Path) -> io::Result<()> {
    std::fs::rename(temp, target)?;
    // Makes the rename itself durable. Not every file system can sync a directory; the data
    // is synced already, so a failure here is not one of the write.
    if let Ok(d) = File::open(directory(target)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix: an
/// [`AtomicFile`] written at once.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

/// [`write_file_atomically`] off the async runtime.
pub(crate) async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BulkError> {
    let (bytes, target) = (bytes.to_vec(), path.to_path_buf());
    tokio::task::spawn_blocking(move || write_file_atomically(&target, &bytes))
        .await
        .map_err(|e| BulkError::io(path, std::io::Error::other(e)))?
        .map_err(|e| BulkError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_target_changes_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/state.json");
        write_file_atomically(&target, b"old").unwrap();
        let mut file = AtomicFile::create(&target).unwrap();
        file.write_all(b"new, in two").unwrap();
        file.write_all(b" writes").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert!(file.temp_path().exists());
        let temp = file.temp_path().to_path_buf();
        file.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new, in two writes");
        assert!(!temp.exists());
        assert_eq!(names(&dir.path().join("sub")), ["state.json"]);
    }

    #[test]
    fn an_abandoned_write_leaves_the_target_and_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.ndjson");
        let temp = dir.path().join("a.ndjson.part");
        std::fs::write(&target, "old").unwrap();
        let mut file = AtomicFile::create_with_temp(&target, &temp).unwrap();
        file.write_all(b"half").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(std::fs::read_to_string(&temp).unwrap(), "half");
        // The next writer starts the temporary file over.
        let mut file = AtomicFile::create_with_temp(&target, &temp).unwrap();
        file.write_all(b"whole").unwrap();
        file.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "whole");
        assert_eq!(names(dir.path()), ["a.ndjson"]);
    }

    #[test]
    fn the_temporary_file_must_be_beside_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let err = AtomicFile::create_with_temp(dir.path().join("a"), dir.path().join("x/a.tmp"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(names(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn async_writers_stream_cut_back_and_commit() {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out/Patient.1.ndjson");
        let temp = dir.path().join("out/Patient.1.ndjson.part");
        let mut file = AtomicFile::create_async(&target, &temp).await.unwrap();
        file.write_all(b"line 1\nline 2 (cut)\n").await.unwrap();
        file.flush().await.unwrap();
        file.get_mut().set_len(7).await.unwrap();
        file.get_mut().seek(SeekFrom::Start(7)).await.unwrap();
        file.write_all(b"line 2\n").await.unwrap();
        assert!(!target.exists());
        file.commit().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "line 1\nline 2\n"
        );
        assert!(!temp.exists());
    }
}
