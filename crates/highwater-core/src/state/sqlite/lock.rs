//! Owns "only one process runs a given sync's run of a given kind at a time" for
//! the embedded store: an OS file lock per sync and run kind next to the state
//! file, so that a backfill can run beside the incremental sync while neither runs
//! twice. Operator commands that change what every run reads (a reset, a discard)
//! take the locks of every kind. One more lock lets processes opening the
//! store at once migrate it in turn. The OS releases a lock when the process
//! dies, even by SIGKILL, so a crash never leaves a stale lock behind.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::RunKind;
use crate::state::LockError;

/// Held for the whole run; dropping it releases the sync's run of that kind.
#[derive(Debug)]
pub struct SyncLock {
    _file: File,
    pub path: PathBuf,
}

/// The locks of every run kind of one sync: no run of it can start or go on.
#[derive(Debug)]
pub struct SyncLocks {
    _locks: Vec<SyncLock>,
}

/// How long a process taking a lock tries again before it says the lock is
/// held: another run may be looking, for an instant, whether it is
/// ([`is_running`]).
const PROBE_GRACE: Duration = Duration::from_millis(20);

fn lock_dir(state_path: &Path) -> PathBuf {
    state_path
        .parent()
        .map_or_else(|| PathBuf::from("locks"), |p| p.join("locks"))
}

fn lock_path(state_path: &Path, sync: &str, kind: RunKind) -> (PathBuf, PathBuf) {
    let dir = lock_dir(state_path);
    let path = dir.join(format!("{sync}.{kind}.lock"));
    (dir, path)
}

/// Whether a process holds the lock of `sync`'s runs of `kind` now: whether
/// its open run, if any, is running or was left by a process that is gone.
/// Looking takes the lock for an instant when nobody holds it; [`acquire`]
/// waits that instant out.
pub fn is_running(state_path: &Path, sync: &str, kind: RunKind) -> bool {
    let (_, path) = lock_path(state_path, sync, kind);
    let Ok(file) = File::open(&path) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        // Cannot tell: as if it ran, which waits rather than risks.
        Err(TryLockError::Error(_)) => true,
    }
}

/// Held while this process migrates the store; taking it waits for another
/// process doing the same. sqlx reads which migrations a store has before it
/// applies the rest, so two processes opening a new store at once (a run
/// creating it while `status` looks, workers starting together) would both
/// apply the first, and one would fail.
pub(super) fn migrating(state_path: &Path) -> std::io::Result<File> {
    let dir = lock_dir(state_path);
    super::private::create_dir_all(&dir)?;
    let file = super::private::file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("migrations.lock"))?;
    file.lock()?;
    Ok(file)
}

/// The process holding the lock of `sync`'s runs of `kind` now, as it wrote
/// itself into the lock file (its process id); `None` when nobody holds it.
pub fn holder(state_path: &Path, sync: &str, kind: RunKind) -> Option<String> {
    if !is_running(state_path, sync, kind) {
        return None;
    }
    let (_, path) = lock_path(state_path, sync, kind);
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    Some(match written.trim() {
        "" => "unknown".to_owned(),
        pid => pid.to_owned(),
    })
}

/// Takes the lock of `sync`'s runs of `kind`, stored beside the state file.
/// Waits only out another run's look ([`PROBE_GRACE`]), never for a holder.
pub fn acquire(state_path: &Path, sync: &str, kind: RunKind) -> Result<SyncLock, LockError> {
    let (dir, path) = lock_path(state_path, sync, kind);
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
    let deadline = Instant::now() + PROBE_GRACE;
    let mut taken = file.try_lock();
    while matches!(taken, Err(TryLockError::WouldBlock)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
        taken = file.try_lock();
    }
    match taken {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Held {
                sync: sync.to_owned(),
                kind,
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

impl super::SqliteStore {
    /// Takes the locks of `sync`'s runs of `kinds`, all or none.
    pub fn lock(&self, sync: &str, kinds: &[RunKind]) -> Result<SyncLocks, LockError> {
        let locks = kinds
            .iter()
            .map(|kind| acquire(&self.path, sync, *kind))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SyncLocks { _locks: locks })
    }

    /// The process holding the lock of `sync`'s runs of `kind` now.
    pub fn lock_holder(&self, sync: &str, kind: RunKind) -> Option<String> {
        holder(&self.path, sync, kind)
    }
}

/// Takes the locks of every run kind of `sync`, or none: the first one held
/// elsewhere is the error, and those already taken are let go.
pub fn acquire_all(state_path: &Path, sync: &str) -> Result<SyncLocks, LockError> {
    let locks = RunKind::ALL
        .iter()
        .map(|kind| acquire(state_path, sync, *kind))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SyncLocks { _locks: locks })
}

/// The locks a run of `kind` holds: its kind's, or — when the sync's runs take
/// turns (`alone`) — every kind's.
pub fn acquire_for_run(
    state_path: &Path,
    sync: &str,
    kind: RunKind,
    alone: bool,
) -> Result<SyncLocks, LockError> {
    if alone {
        return acquire_all(state_path, sync);
    }
    Ok(SyncLocks {
        _locks: vec![acquire(state_path, sync, kind)?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_of_a_kind_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("hw-lock-{}", std::process::id()));
        let state = dir.join("state.db");
        assert_eq!(holder(&state, "billing", RunKind::Incremental), None);
        let first = acquire(&state, "billing", RunKind::Incremental).expect("first lock");
        assert_eq!(
            holder(&state, "billing", RunKind::Incremental),
            Some(std::process::id().to_string()),
            "the holder names itself"
        );
        assert_eq!(holder(&state, "billing", RunKind::Backfill), None);
        let second = acquire(&state, "billing", RunKind::Incremental).expect_err("second lock");
        let message = second.to_string();
        assert!(
            message.contains("is already running its incremental run"),
            "{message}"
        );
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        // Another kind of the same sync, and another sync, run beside it.
        let backfill = acquire(&state, "billing", RunKind::Backfill).expect("backfill lock");
        assert!(is_running(&state, "billing", RunKind::Backfill));
        assert!(!is_running(&state, "billing", RunKind::Replay));
        // Looking leaves the lock free.
        let replay = acquire(&state, "billing", RunKind::Replay).expect("replay lock");
        drop(replay);
        assert!(!is_running(&state, "billing", RunKind::Replay));
        assert!(acquire(&state, "other", RunKind::Incremental).is_ok());
        // An operator command needs every kind: refused while any runs, and it
        // keeps none of the locks it did get.
        let refused = acquire_all(&state, "billing").expect_err("all kinds");
        assert!(refused.to_string().contains("billing"), "{refused}");
        drop(first);
        assert_eq!(holder(&state, "billing", RunKind::Incremental), None);
        assert!(
            acquire_all(&state, "billing").is_err(),
            "the backfill still runs"
        );
        drop(backfill);
        let all = acquire_all(&state, "billing").expect("every kind once none runs");
        assert!(acquire(&state, "billing", RunKind::Replay).is_err());
        drop(all);
        assert!(acquire(&state, "billing", RunKind::Incremental).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
