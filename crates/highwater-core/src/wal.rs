//! Owns syncing a SQLite database's write-ahead log from outside SQLite. A
//! connection with `synchronous = NORMAL` commits without syncing; syncing
//! its WAL file afterwards makes every commit in it durable at once, which is
//! what lets a page's many commits cost one sync at the page's checkpoint
//! instead of one each. Both the state store's shared transaction and the
//! SQLite table destination use it.

use std::path::Path;

/// Syncs the WAL beside the database at `db`: every commit in it is then
/// durable. None there means the last connection checkpointed it into the
/// database, and synced that.
pub async fn sync(db: &Path) -> std::io::Result<()> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    tokio::task::spawn_blocking(move || match std::fs::File::open(&wal) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    })
    .await
    .map_err(std::io::Error::other)?
}
