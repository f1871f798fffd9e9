//! An exclusive lock on a file, so that one process at a time owns what it guards (an export
//! directory here; a sync's tables in the sync layer). It is the operating system's advisory
//! lock: released when the value is dropped or the process ends, even by `kill -9`, so a
//! crashed run never leaves a stale lock behind. The lock file itself stays (removing it
//! would let a process lock a file that another has just replaced).
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another process holds the lock {path}")]
    Held { path: PathBuf },
    #[error("cannot open lock file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock on `path` (created, with its directory, if missing) without waiting.
    pub fn try_acquire(path: &Path) -> Result<Self, LockError> {
        let open_error = |source| LockError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(open_error)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(open_error)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held {
                path: path.to_owned(),
            }),
            Err(TryLockError::Error(source)) => Err(open_error(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/lock");
        let first = FileLock::try_acquire(&path).unwrap();
        let err = FileLock::try_acquire(&path).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        drop(first);
        FileLock::try_acquire(&path).unwrap();
    }

    #[test]
    fn a_lock_file_that_cannot_be_created_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let err = FileLock::try_acquire(&blocker.join("lock")).unwrap_err();
        assert!(matches!(err, LockError::Open { .. }), "{err}");
    }
}
