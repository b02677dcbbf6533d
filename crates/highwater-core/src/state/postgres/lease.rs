//! Owns "only one worker runs a given sync's run of a given kind at a time" for
//! the shared PostgreSQL store: a lease per sync and run kind, a row holding
//! its owner, its expiry by the database's clock and a fencing token that
//! grows with every new holder. The holder renews it while it runs; every
//! write transaction of its run checks the token under a share lock on the
//! row (a worker taking the lease over waits for that transaction, and the
//! server ends a session left idle in one for a whole lease, so that a worker
//! frozen inside a commit holds no other up for longer), and every
//! write to the destination first checks the lease's expiry by this process's
//! monotonic clock, less a margin: a worker paused past its lease (SIGSTOP, a
//! stall, a partition) starts no request and commits nothing when it wakes
//! (a request that had passed its last check as the pause began still
//! leaves: only the destination, by a version precondition, can refuse it
//! then). Once lost by either check, a lease stays lost for the process: the
//! run stops and the worker that took it over finishes it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::*;
use crate::state::LockError;

/// The leases one run (or one operator command) holds, as its writes check them.
#[derive(Debug)]
pub struct Fence {
    sync: String,
    /// The kinds held and the token of each.
    held: Vec<(RunKind, i64)>,
    /// How long a lease lasts from its last renewal.
    duration: Duration,
    /// When the lease runs out by this process's clock: the instant its last
    /// renewal was sent, plus its duration.
    deadline: Mutex<Instant>,
    lost: AtomicBool,
}

impl Fence {
    pub(crate) fn sync(&self) -> &str {
        &self.sync
    }

    /// The part of the lease no write may start in: a write checked just
    /// before it still has this long to leave.
    fn margin(&self) -> Duration {
        self.duration / 5
    }

    /// Whether a write may be sent now: the lease is held, with time to
    /// spare, by this process's monotonic clock.
    pub(crate) fn check(&self) -> Result<(), StateError> {
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if self.lost.load(Ordering::Acquire) || Instant::now() + self.margin() >= deadline {
            self.lost.store(true, Ordering::Release);
            return Err(self.lost_error());
        }
        Ok(())
    }

    fn lost_error(&self) -> StateError {
        StateError::LeaseLost {
            sync: self.sync.clone(),
            kinds: self
                .held
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Checks the lease inside a write transaction: by this process's clock,
    /// then by the token in the database, the row share-locked until the
    /// transaction ends so that no other worker takes the lease over before
    /// it commits.
    pub(super) async fn check_in(&self, tx: &mut Tx) -> Result<(), StateError> {
        self.check()?;
        let kinds: Vec<&str> = self.held.iter().map(|(k, _)| k.as_str()).collect();
        let tokens: Vec<i64> = self.held.iter().map(|(_, t)| *t).collect();
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (
               SELECT 1 FROM leases AS l
                 JOIN unnest($2::text[], $3::bigint[]) AS h (kind, token)
                   ON l.kind = h.kind AND l.token = h.token
               WHERE l.sync = $1 FOR SHARE OF l) AS held",
        )
        .bind(&self.sync)
        .bind(&kinds)
        .bind(&tokens)
        .fetch_one(&mut **tx)
        .await?;
        if held != self.held.len() as i64 {
            self.lost.store(true, Ordering::Release);
            return Err(self.lost_error());
        }
        Ok(())
    }
}

/// Leases held by this process; renewed in the background until released.
#[derive(Debug)]
pub struct Leases {
    fence: Arc<Fence>,
    renewing: CancellationToken,
    store: PgStore,
}

impl Leases {
    pub(crate) fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// Lets the leases go now, so the next worker need not wait out their
    /// expiry; leases lost already are left to their new holders.
    pub async fn release(self) {
        self.renewing.cancel();
        let kinds: Vec<&str> = self.fence.held.iter().map(|(k, _)| k.as_str()).collect();
        let tokens: Vec<i64> = self.fence.held.iter().map(|(_, t)| *t).collect();
        let released = sqlx::query(
            "DELETE FROM leases AS l USING unnest($2::text[], $3::bigint[]) AS h (kind, token)
             WHERE l.sync = $1 AND l.kind = h.kind AND l.token = h.token",
        )
        .bind(&self.fence.sync)
        .bind(&kinds)
        .bind(&tokens)
        .execute(self.store.pool())
        .await;
        if let Err(e) = released {
            tracing::warn!(sync = %self.fence.sync, error = %e, "could not release the lease; it expires on its own");
        }
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        self.renewing.cancel();
    }
}

/// Who this worker is, as `status` and a refused worker name it: its process
/// id on its host.
pub(crate) fn owner() -> String {
    format!("{} on {}", std::process::id(), host())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".to_owned())
}

/// Whether `owner` is a process of this host that is gone: its lease need not
/// be waited out (a worker restarted after a crash takes its syncs back at
/// once). Anything else — another host, a process alive, a pid that cannot
/// be read — waits for the lease to expire.
fn gone(owner: &str) -> bool {
    let Some((pid, on)) = owner.split_once(" on ") else {
        return false;
    };
    if on != host() {
        return false;
    }
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if pid == std::process::id() as i32 {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        rustix::process::Pid::from_raw(pid).is_some_and(|pid| {
            matches!(
                rustix::process::test_kill_process(pid),
                Err(rustix::io::Errno::SRCH)
            )
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

impl PgStore {
    /// Takes the leases of `sync`'s runs of `kinds`, all or none: a lease held
    /// by another worker, not expired, is the error, and those taken already
    /// are let go.
    pub async fn lease(&self, sync: &str, kinds: &[RunKind]) -> Result<Leases, LockError> {
        let duration = self.location.lease;
        let owner = owner();
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        let sent = Instant::now();
        let mut tx = self.pool.begin().await.map_err(lease_error)?;
        // A lease row is share-locked by each commit of its holder's run. A
        // holder frozen inside one keeps that lock until the server ends its
        // idle session (after a lease, see `pool_in`): taking the lease over
        // waits for that, and no longer.
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(format!("{}ms", duration.as_millis().max(1_000)))
            .execute(&mut *tx)
            .await
            .map_err(lease_error)?;
        let mut held = Vec::with_capacity(kinds.len());
        for kind in kinds {
            // Read without a lock first: a live holder is refused at once,
            // not waited on behind a commit it has in flight.
            let current: Option<(String, bool)> = sqlx::query_as(
                "SELECT owner, expires_at > clock_timestamp() FROM leases
                 WHERE sync = $1 AND kind = $2",
            )
            .bind(sync)
            .bind(kind.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(lease_error)?;
            let leased = |holder: Option<String>| LockError::Leased {
                sync: sync.to_owned(),
                kind: *kind,
                holder: holder.unwrap_or_else(|| "unknown".to_owned()),
            };
            // A live lease of a process of this host that is gone is taken
            // over at once, but only from that process.
            let holder = current.as_ref().map(|(owner, _)| owner.clone());
            let from_gone = match current {
                Some((holder, true)) if gone(&holder) => Some(holder),
                Some((holder, true)) => return Err(leased(Some(holder))),
                _ => None,
            };
            let token: Option<i64> = sqlx::query_scalar(
                "INSERT INTO leases (sync, kind, owner, token, acquired_at, expires_at)
                 VALUES ($1, $2, $3, nextval('lease_tokens'), clock_timestamp(),
                         clock_timestamp() + $4 * interval '1 microsecond')
                 ON CONFLICT (sync, kind) DO UPDATE SET
                   owner = excluded.owner, token = excluded.token,
                   acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
                 WHERE leases.expires_at < clock_timestamp() OR leases.owner = $5
                 RETURNING token",
            )
            .bind(sync)
            .bind(kind.as_str())
            .bind(&owner)
            .bind(micros)
            .bind(&from_gone)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| {
                if is_lock_timeout(&e) {
                    leased(holder.clone())
                } else {
                    lease_error(e)
                }
            })?;
            match token {
                Some(token) => held.push((*kind, token)),
                // Taken by another worker since it was read.
                None => {
                    let holder: Option<String> = sqlx::query_scalar(
                        "SELECT owner FROM leases WHERE sync = $1 AND kind = $2",
                    )
                    .bind(sync)
                    .bind(kind.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(lease_error)?;
                    return Err(leased(holder));
                }
            }
        }
        tx.commit().await.map_err(lease_error)?;
        let fence = Arc::new(Fence {
            sync: sync.to_owned(),
            held,
            duration,
            deadline: Mutex::new(sent + duration),
            lost: AtomicBool::new(false),
        });
        let renewing = CancellationToken::new();
        tokio::spawn(renew(self.clone(), fence.clone(), renewing.clone()));
        Ok(Leases {
            fence,
            renewing,
            store: self.clone(),
        })
    }

    /// Which workers hold leases now, by sync (one row per sync and worker).
    pub async fn lease_holders(&self) -> Result<Vec<(String, String)>, StateError> {
        let holders: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT sync, owner FROM leases WHERE expires_at > clock_timestamp()",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(holders
            .into_iter()
            .filter(|(_, owner)| !gone(owner))
            .collect())
    }

    /// The worker holding the lease of `sync`'s runs of `kind` now, if any.
    pub async fn lease_holder(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<String>, StateError> {
        let holder: Option<String> = sqlx::query_scalar(
            "SELECT owner FROM leases
             WHERE sync = $1 AND kind = $2 AND expires_at > clock_timestamp()",
        )
        .bind(sync)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?;
        // A process of this host that is gone holds nothing.
        Ok(holder.filter(|owner| !gone(owner)))
    }
}

/// Renews the leases a third of their duration after each renewal, until
/// cancelled or lost. A renewal that finds the deadline passed (the process
/// was paused) does not revive the lease: another worker may have run since.
async fn renew(store: PgStore, fence: Arc<Fence>, cancelled: CancellationToken) {
    let kinds: Vec<&str> = fence.held.iter().map(|(k, _)| k.as_str()).collect();
    let tokens: Vec<i64> = fence.held.iter().map(|(_, t)| *t).collect();
    let micros = i64::try_from(fence.duration.as_micros()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = cancelled.cancelled() => return,
            () = tokio::time::sleep(fence.duration / 3) => {}
        }
        if fence.check().is_err() {
            tracing::error!(sync = %fence.sync, "the lease ran out before it was renewed (was this worker paused?); its run stops and commits nothing more");
            return;
        }
        let sent = Instant::now();
        let renewed = sqlx::query(
            "UPDATE leases AS l SET expires_at = clock_timestamp() + $4 * interval '1 microsecond'
             FROM unnest($2::text[], $3::bigint[]) AS h (kind, token)
             WHERE l.sync = $1 AND l.kind = h.kind AND l.token = h.token",
        )
        .bind(&fence.sync)
        .bind(&kinds)
        .bind(&tokens)
        .bind(micros)
        .execute(store.pool())
        .await;
        match renewed {
            Ok(done) if done.rows_affected() == fence.held.len() as u64 => {
                let mut deadline = fence.deadline.lock().unwrap_or_else(|e| e.into_inner());
                *deadline = sent + fence.duration;
            }
            Ok(_) => {
                fence.lost.store(true, Ordering::Release);
                tracing::error!(sync = %fence.sync, "the lease was taken over by another worker; this run stops and commits nothing more");
                return;
            }
            // The next renewal tries again; the deadline stands until then.
            Err(e) => tracing::warn!(sync = %fence.sync, error = %e, "could not renew the lease"),
        }
    }
}

/// Whether `e` is PostgreSQL giving up on a lock after `lock_timeout`.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "55P03")
}

fn lease_error(source: sqlx::Error) -> LockError {
    LockError::Store(StateError::Sql(source))
}
