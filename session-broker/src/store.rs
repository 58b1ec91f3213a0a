//! Durable records of edges and sessions, so a restarted broker has both back.
//!
//! [`Store`] is the one interface; [`RedbStore`] is the embedded default (a redb 2 file in the
//! data dir). Writes use group commit: callers send their change to one committer thread, which
//! gathers changes for at most [`RedbStore::WINDOW`] after the first, applies the whole batch in
//! one write transaction, and answers every caller only after that transaction committed. One
//! fsync then covers many writes, and no caller is told "stored" before it is.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

/// A boxed future, so that [`Store`] can be used as `dyn Store`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Every (key, value) of a table.
pub type Records = Vec<(String, Vec<u8>)>;

/// Which kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Edge registrations, keyed by edge id (hex).
    Edges,
    /// Session records, keyed by session id (hex).
    Sessions,
}

const EDGES: TableDefinition<&str, &[u8]> = TableDefinition::new("edges");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

impl Table {
    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Table::Edges => EDGES,
            Table::Sessions => SESSIONS,
        }
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error(
        "cannot open the store at {path}: {source}; check that the data dir is writable and that no other broker uses it"
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// redb refused a read or a write.
    #[error("store operation failed: {0}; check the data dir's disk")]
    Db(Box<redb::Error>),
    /// The committer thread is gone (the store was closed or crashed).
    #[error("the store is closed: restart the broker")]
    Closed,
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

/// Edges and session records: put, get, list, delete. Values are opaque bytes (JSON above).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores `value` under `key`; resolves once durable.
    fn put(
        &self,
        table: Table,
        key: String,
        value: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The value under `key`, if any.
    fn get<'a>(
        &'a self,
        table: Table,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;
    /// Every (key, value) of a table, in key order.
    fn list(&self, table: Table) -> BoxFuture<'_, Result<Records, StoreError>>;
    /// Removes `key`; resolves once durable. True if it was there.
    fn delete(&self, table: Table, key: String) -> BoxFuture<'_, Result<bool, StoreError>>;
}

enum Op {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
}

struct Write {
    op: Op,
    done: oneshot::Sender<Result<bool, StoreError>>,
}

/// The embedded backend: `broker.redb` in the data dir.
#[derive(Debug)]
pub struct RedbStore {
    db: Arc<Database>,
    tx: Option<mpsc::Sender<Write>>,
    committer: Option<std::thread::JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl RedbStore {
    /// The longest a change waits for others to share its transaction.
    pub const WINDOW: Duration = Duration::from_millis(5);
    /// The most changes in one transaction.
    pub const MAX_BATCH: usize = 4096;

    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("broker.redb");
        let open_err = |e: redb::Error| StoreError::Open {
            path: path.clone(),
            source: Box::new(e),
        };
        std::fs::create_dir_all(data_dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let db = Database::create(&path).map_err(|e| open_err(e.into()))?;
        // Create both tables up front, so readers never meet a missing table.
        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        txn.open_table(EDGES).map_err(|e| open_err(e.into()))?;
        txn.open_table(SESSIONS).map_err(|e| open_err(e.into()))?;
        txn.commit().map_err(|e| open_err(e.into()))?;
        let db = Arc::new(db);
        let commits = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let committer = {
            let db = Arc::clone(&db);
            let commits = Arc::clone(&commits);
            std::thread::Builder::new()
                .name("store-commit".into())
                .spawn(move || commit_loop(&db, &rx, &commits))
                .map_err(|e| open_err(redb::Error::Io(e)))?
        };
        Ok(RedbStore {
            db,
            tx: Some(tx),
            committer: Some(committer),
            commits,
        })
    }

    /// Write transactions committed since open (each is one batch).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Commits what is queued, stops the committer and releases the file (so it can be reopened).
    pub async fn close(mut self) {
        self.tx = None;
        if let Some(h) = self.committer.take() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    async fn write(&self, op: Op) -> Result<bool, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(Write { op, done })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn read<T>(
        &self,
        table: Table,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(table.def()).map_err(db_err)?;
        f(&t)
    }
}

fn commit_loop(db: &Database, rx: &mpsc::Receiver<Write>, commits: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + RedbStore::WINDOW;
        let mut batch = vec![first];
        while batch.len() < RedbStore::MAX_BATCH {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        match apply(db, &batch) {
            Ok(results) => {
                commits.fetch_add(1, Ordering::Relaxed);
                for (w, r) in batch.into_iter().zip(results) {
                    let _ = w.done.send(Ok(r));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "store commit failed");
                let msg = e.to_string();
                for w in batch {
                    let _ = w.done.send(Err(StoreError::Db(Box::new(redb::Error::Io(
                        std::io::Error::other(msg.clone()),
                    )))));
                }
            }
        }
    }
}

fn apply(db: &Database, batch: &[Write]) -> Result<Vec<bool>, StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    let mut out = Vec::with_capacity(batch.len());
    {
        let mut edges = txn.open_table(EDGES).map_err(db_err)?;
        let mut sessions = txn.open_table(SESSIONS).map_err(db_err)?;
        for w in batch {
            let (table, key) = match &w.op {
                Op::Put(t, k, _) | Op::Delete(t, k) => (*t, k.as_str()),
            };
            let t = match table {
                Table::Edges => &mut edges,
                Table::Sessions => &mut sessions,
            };
            let existed = match &w.op {
                Op::Put(_, _, v) => t.insert(key, v.as_slice()).map_err(db_err)?.is_some(),
                Op::Delete(..) => t.remove(key).map_err(db_err)?.is_some(),
            };
            out.push(existed);
        }
    }
    txn.commit().map_err(db_err)?;
    Ok(out)
}

impl Store for RedbStore {
    fn put(
        &self,
        table: Table,
        key: String,
        value: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.write(Op::Put(table, key, value)).await.map(|_| ()) })
    }

    fn get<'a>(
        &'a self,
        table: Table,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            self.read(table, |t| {
                Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
            })
        })
    }

    fn list(&self, table: Table) -> BoxFuture<'_, Result<Records, StoreError>> {
        Box::pin(async move {
            self.read(table, |t| {
                let mut out = Vec::new();
                for item in t.iter().map_err(db_err)? {
                    let (k, v) = item.map_err(db_err)?;
                    out.push((k.value().to_owned(), v.value().to_vec()));
                }
                Ok(out)
            })
        })
    }

    fn delete(&self, table: Table, key: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move { self.write(Op::Delete(table, key)).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("edgeplay-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_transactions_and_survive_reopen() {
        let dir = tmp("batch");
        let store = Arc::new(RedbStore::open(&dir).unwrap());
        let before = store.commits();
        let n = 200;
        let mut tasks = Vec::new();
        for i in 0..n {
            let s = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                s.put(Table::Sessions, format!("s{i:03}"), vec![i as u8])
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let txns = store.commits() - before;
        assert!(txns < n, "{txns} transactions for {n} writes: no batching");
        store
            .put(Table::Edges, "e1".into(), b"edge".to_vec())
            .await
            .unwrap();
        assert!(store.delete(Table::Sessions, "s000".into()).await.unwrap());
        assert!(!store.delete(Table::Sessions, "nope".into()).await.unwrap());
        let store = Arc::try_unwrap(store).unwrap();
        store.close().await;

        let store = RedbStore::open(&dir).unwrap();
        let sessions = store.list(Table::Sessions).await.unwrap();
        assert_eq!(sessions.len(), n as usize - 1);
        assert_eq!(sessions[0], ("s001".to_owned(), vec![1]));
        assert_eq!(
            store.get(Table::Edges, "e1").await.unwrap(),
            Some(b"edge".to_vec())
        );
        assert_eq!(store.get(Table::Edges, "e2").await.unwrap(), None);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
