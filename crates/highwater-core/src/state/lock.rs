//! Owns "only one process runs a given sync at a time" for the embedded store: an OS
//! file lock per sync next to the state file. The OS releases it when the process
//! dies, even by SIGKILL, so a crash never leaves a stale lock behind.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Held for the whole run; dropping it releases the sync.
#[derive(Debug)]
pub struct SyncLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "sync {sync:?} is already running (process {holder}, lock {path}); not starting a second run"
    )]
    Held {
        sync: String,
        holder: String,
        path: PathBuf,
    },
    #[error("cannot create the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Takes the lock for `sync`, stored beside the state file. Never waits.
pub fn acquire(state_path: &Path, sync: &str) -> Result<SyncLock, LockError> {
    let dir = state_path
        .parent()
        .map_or_else(|| PathBuf::from("locks"), |p| p.join("locks"));
    let path = dir.join(format!("{sync}.lock"));
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    super::private::create_dir_all(&dir).map_err(io)?;
    let mut file = super::private::file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Held {
                sync: sync.to_owned(),
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder.to_owned()
                },
                path,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    // Who holds it, for the message a second process prints.
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(SyncLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("hw-lock-{}", std::process::id()));
        let state = dir.join("state.db");
        let first = acquire(&state, "billing").expect("first lock");
        let second = acquire(&state, "billing").expect_err("second lock");
        let message = second.to_string();
        assert!(message.contains("already running"), "{message}");
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        assert!(acquire(&state, "other").is_ok());
        drop(first);
        assert!(acquire(&state, "billing").is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
