//! Durable records of edges and sessions, so a restarted broker has both back.
//!
//! [`Store`] is the one interface, with two backends: [`RedbStore`], the embedded default (a
//! redb 2 file in the data dir, for one broker), and [`etcd::EtcdStore`] (`--store etcd://…`),
//! which several brokers share. Every record carries the revision of its last change; a
//! conditional write ([`Store::put_if`]) compared on it is the fencing token of a session's owner.
//!
//! In [`RedbStore`] writes use group commit: callers send their change to one committer thread,
//! which gathers changes while they keep coming (gaps under [`RedbStore::GAP`], for at most
//! [`RedbStore::WINDOW`] after the first), applies the whole batch in one write transaction, and
//! answers every caller only after that transaction committed. One fsync then covers many
//! writes, and no caller is told "stored" before it is. Writes that arrive during a commit queue
//! up and form the next batch; a lone write waits only one gap.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub mod etcd;

/// A boxed future, so that [`Store`] can be used as `dyn Store`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Every (key, value) of a table.
pub type Records = Vec<(String, Vec<u8>)>;

/// Which kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Edge registrations, keyed by edge id (hex).
    Edges,
    /// Live session records, keyed by session id (hex).
    Sessions,
    /// Summaries of ended sessions, keyed by session id (hex).
    Summaries,
    /// The order summaries were written in, for retention: keyed by [`ended_key`], valued the
    /// session id.
    Ended,
}

/// The key of a summary in [`Table::Ended`]: the end time (unix ms, 13 digits, so that key
/// order is time order until the year 2286) and the session id.
#[must_use]
pub fn ended_key(end_unix_ms: u64, session: &str) -> String {
    format!("{end_unix_ms:013}-{session}")
}

/// The end time of an [`ended_key`].
#[must_use]
pub fn ended_key_time(key: &str) -> Option<u64> {
    key.split_once('-')?.0.parse().ok()
}

/// Several changes applied together or not at all: each put and delete, only if `guard`'s
/// record still has the revision the caller read (`None`: only if absent). How a session ends:
/// its live record goes and its summary comes in one step, fenced like its placement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The record whose revision must not have changed: (table, key, expected revision).
    pub guard: Option<(Table, String, Option<u64>)>,
    /// Records to write.
    pub puts: Vec<(Table, String, Vec<u8>)>,
    /// Records to remove.
    pub deletes: Vec<(Table, String)>,
}

impl Batch {
    /// How many operations the batch holds (etcd bounds a transaction's operations).
    #[must_use]
    pub fn ops(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }
}

const EDGES: TableDefinition<&str, &[u8]> = TableDefinition::new("edges");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const SUMMARIES: TableDefinition<&str, &[u8]> = TableDefinition::new("summaries");
const ENDED: TableDefinition<&str, &[u8]> = TableDefinition::new("ended");
/// `revision`: the store's last revision, as etcd's is, so both backends fence the same way.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A value and the store revision of its last change (etcd's `mod_revision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The record's bytes.
    pub value: Vec<u8>,
    /// Revision of the last change; what [`Store::put_if`] compares.
    pub revision: u64,
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// Written; the record's new revision.
    Done(u64),
    /// Refused: the record changed since the caller read it (its revision now, `None` if gone).
    Stale(Option<u64>),
}

/// A broker that holds a live lease in the store: the brokers edges may connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEntry {
    /// The broker's id (its public key, hex).
    pub id: String,
    /// Its HTTP base URL, e.g. `http://10.0.0.1:8090`.
    pub url: String,
}

/// A change to an edge record made by some broker (for the others' in-memory registries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The edge id (hex).
    pub key: String,
    /// The new record, `None` when deleted.
    pub value: Option<Vec<u8>>,
}

impl Table {
    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Table::Edges => EDGES,
            Table::Sessions => SESSIONS,
            Table::Summaries => SUMMARIES,
            Table::Ended => ENDED,
        }
    }

    /// Every table.
    pub const ALL: [Table; 4] = [
        Table::Edges,
        Table::Sessions,
        Table::Summaries,
        Table::Ended,
    ];
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
    /// The `--store` argument is not understood.
    #[error(
        "bad store URL `{0}`: use `redb` (the data dir) or `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`"
    )]
    Url(String),
    /// etcd refused or could not be reached.
    #[error("etcd: {0}; check that etcd runs at the --store endpoints")]
    Etcd(String),
    /// A stored record is not what this broker wrote (a revision prefix is missing).
    #[error("corrupt record `{0}` in the store: remove it or restore the data dir")]
    Corrupt(String),
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
    /// The value under `key` with the revision of its last change.
    fn get_versioned<'a>(
        &'a self,
        table: Table,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>>;
    /// Stores `value` only if `key`'s revision is still `expected` (`None`: only if absent), in
    /// one transaction; resolves once durable. This is how a session changes owner: a broker
    /// that read an older revision is refused instead of overwriting a newer owner.
    fn put_if(
        &self,
        table: Table,
        key: String,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> BoxFuture<'_, Result<Swap, StoreError>>;
    /// Applies `batch` in one transaction if its guard holds; resolves once durable.
    fn apply(&self, batch: Batch) -> BoxFuture<'_, Result<Swap, StoreError>>;
    /// The first `limit` records of a table in key order (the oldest of [`Table::Ended`]).
    fn first(&self, table: Table, limit: usize) -> BoxFuture<'_, Result<Records, StoreError>>;
    /// How many records a table holds.
    fn count(&self, table: Table) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Records this broker as live (etcd: a key under its lease, TTL 2 s, kept alive until the
    /// store is dropped; redb: in memory, the only broker).
    fn announce(&self, me: BrokerEntry) -> BoxFuture<'_, Result<(), StoreError>>;
    /// What this broker announced, if it did.
    fn me(&self) -> Option<BrokerEntry>;
    /// The live brokers, in id order.
    fn brokers(&self) -> BoxFuture<'_, Result<Vec<BrokerEntry>, StoreError>>;
    /// Edge records changed by other brokers from now on, once per store (`None` for a store
    /// no other broker writes to, or when already taken).
    fn edge_changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        None
    }
}

enum Op {
    Put(Table, String, Vec<u8>),
    PutIf(Table, String, Vec<u8>, Option<u64>),
    Delete(Table, String),
    Batch(Batch),
}

enum Outcome {
    Existed(bool),
    Swap(Swap),
}

struct Write {
    op: Op,
    done: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The embedded backend: `broker.redb` in the data dir.
#[derive(Debug)]
pub struct RedbStore {
    db: Arc<Database>,
    tx: Option<mpsc::Sender<Write>>,
    committer: Option<std::thread::JoinHandle<()>>,
    commits: Arc<AtomicU64>,
    me: std::sync::Mutex<Option<BrokerEntry>>,
}

impl RedbStore {
    /// The longest a change waits for others to share its transaction.
    pub const WINDOW: Duration = Duration::from_millis(5);
    /// A batch closes when no change came for this long: under load changes arrive closer than
    /// this, and a quiet queue should not make its one writer wait the whole window (measured:
    /// a fixed 5 ms window capped the HTTP path at ~4,700 session writes/s with p99 29 ms).
    pub const GAP: Duration = Duration::from_micros(200);
    /// The most changes in one transaction.
    pub const MAX_BATCH: usize = 4096;

    /// Page cache of [`Self::open`], in MiB: redb's own default (1 GiB) lets a broker's
    /// resident memory creep up towards the whole file's size as pages are touched.
    pub const DEFAULT_CACHE_MIB: usize = 64;

    /// Opens (or creates) the store in `data_dir` with the default page cache.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(data_dir, Self::DEFAULT_CACHE_MIB)
    }

    /// Opens (or creates) the store in `data_dir`, caching at most `cache_mib` MiB of its pages
    /// in memory (the operating system's file cache holds the rest).
    pub fn open_with_cache(data_dir: &Path, cache_mib: usize) -> Result<Self, StoreError> {
        let path = data_dir.join("broker.redb");
        let open_err = |e: redb::Error| StoreError::Open {
            path: path.clone(),
            source: Box::new(e),
        };
        std::fs::create_dir_all(data_dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let db = redb::Builder::new()
            .set_cache_size(cache_mib << 20)
            .create(&path)
            .map_err(|e| open_err(e.into()))?;
        // Create every table up front, so readers never meet a missing table.
        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        txn.open_table(EDGES).map_err(|e| open_err(e.into()))?;
        for t in Table::ALL {
            txn.open_table(t.def()).map_err(|e| open_err(e.into()))?;
        }
        txn.open_table(META).map_err(|e| open_err(e.into()))?;
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
            me: std::sync::Mutex::new(None),
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

    async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
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

/// A commit slower than this is logged: every write waiting on it waits that long.
const SLOW_COMMIT: Duration = Duration::from_millis(50);

fn commit_loop(db: &Database, rx: &mpsc::Receiver<Write>, commits: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + RedbStore::WINDOW;
        let mut batch = vec![first];
        while batch.len() < RedbStore::MAX_BATCH {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .min(RedbStore::GAP);
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let applied = apply(db, &batch);
        let took = started.elapsed();
        if took > SLOW_COMMIT {
            tracing::warn!(
                ?took,
                writes = batch.len(),
                "slow store commit: the disk's sync is slow or the machine is overloaded"
            );
        }
        match applied {
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

/// Value bytes in redb: the revision of the change (8 bytes, little-endian), then the record.
fn split_rev(key: &str, raw: &[u8]) -> Result<Versioned, StoreError> {
    let (rev, value) = raw
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt(key.to_owned()))?;
    Ok(Versioned {
        value: value.to_vec(),
        revision: u64::from_le_bytes(*rev),
    })
}

fn with_rev(rev: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&rev.to_le_bytes());
    v.extend_from_slice(value);
    v
}

fn index(table: Table) -> usize {
    Table::ALL.iter().position(|t| *t == table).unwrap_or(0)
}

/// The revision `key` has now in `t`, `None` when absent.
fn current_rev(
    t: &redb::Table<'_, &'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    match t.get(key).map_err(db_err)? {
        Some(raw) => Ok(Some(split_rev(key, raw.value())?.revision)),
        None => Ok(None),
    }
}

fn apply(db: &Database, batch: &[Write]) -> Result<Vec<Outcome>, StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    let mut out = Vec::with_capacity(batch.len());
    {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let mut rev = meta
            .get("revision")
            .map_err(db_err)?
            .map_or(0, |v| v.value());
        let mut tables = Table::ALL
            .iter()
            .map(|t| txn.open_table(t.def()).map_err(db_err))
            .collect::<Result<Vec<_>, _>>()?;
        for w in batch {
            let outcome = match &w.op {
                Op::Put(table, key, v) => {
                    rev += 1;
                    let t = &mut tables[index(*table)];
                    Outcome::Existed(
                        t.insert(key.as_str(), with_rev(rev, v).as_slice())
                            .map_err(db_err)?
                            .is_some(),
                    )
                }
                Op::PutIf(table, key, v, expected) => {
                    let t = &mut tables[index(*table)];
                    let current = current_rev(t, key)?;
                    if current == *expected {
                        rev += 1;
                        t.insert(key.as_str(), with_rev(rev, v).as_slice())
                            .map_err(db_err)?;
                        Outcome::Swap(Swap::Done(rev))
                    } else {
                        Outcome::Swap(Swap::Stale(current))
                    }
                }
                Op::Delete(table, key) => {
                    rev += 1;
                    let t = &mut tables[index(*table)];
                    Outcome::Existed(t.remove(key.as_str()).map_err(db_err)?.is_some())
                }
                Op::Batch(b) => {
                    let stale = match &b.guard {
                        Some((table, key, expected)) => {
                            let current = current_rev(&tables[index(*table)], key)?;
                            (current != *expected).then_some(current)
                        }
                        None => None,
                    };
                    if let Some(current) = stale {
                        Outcome::Swap(Swap::Stale(current))
                    } else {
                        rev += 1;
                        for (table, key, v) in &b.puts {
                            tables[index(*table)]
                                .insert(key.as_str(), with_rev(rev, v).as_slice())
                                .map_err(db_err)?;
                        }
                        for (table, key) in &b.deletes {
                            tables[index(*table)].remove(key.as_str()).map_err(db_err)?;
                        }
                        Outcome::Swap(Swap::Done(rev))
                    }
                }
            };
            out.push(outcome);
        }
        drop(tables);
        meta.insert("revision", rev).map_err(db_err)?;
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
            self.read(table, |t| match t.get(key).map_err(db_err)? {
                Some(raw) => Ok(Some(split_rev(key, raw.value())?.value)),
                None => Ok(None),
            })
        })
    }

    fn list(&self, table: Table) -> BoxFuture<'_, Result<Records, StoreError>> {
        Box::pin(async move {
            self.read(table, |t| {
                let mut out = Vec::new();
                for item in t.iter().map_err(db_err)? {
                    let (k, v) = item.map_err(db_err)?;
                    let key = k.value().to_owned();
                    let value = split_rev(&key, v.value())?.value;
                    out.push((key, value));
                }
                Ok(out)
            })
        })
    }

    fn delete(&self, table: Table, key: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            match self.write(Op::Delete(table, key)).await? {
                Outcome::Existed(e) => Ok(e),
                Outcome::Swap(_) => Err(StoreError::Closed),
            }
        })
    }

    fn get_versioned<'a>(
        &'a self,
        table: Table,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        Box::pin(async move {
            self.read(table, |t| match t.get(key).map_err(db_err)? {
                Some(raw) => Ok(Some(split_rev(key, raw.value())?)),
                None => Ok(None),
            })
        })
    }

    fn put_if(
        &self,
        table: Table,
        key: String,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> BoxFuture<'_, Result<Swap, StoreError>> {
        Box::pin(async move {
            match self.write(Op::PutIf(table, key, value, expected)).await? {
                Outcome::Swap(s) => Ok(s),
                Outcome::Existed(_) => Err(StoreError::Closed),
            }
        })
    }

    fn apply(&self, batch: Batch) -> BoxFuture<'_, Result<Swap, StoreError>> {
        Box::pin(async move {
            match self.write(Op::Batch(batch)).await? {
                Outcome::Swap(s) => Ok(s),
                Outcome::Existed(_) => Err(StoreError::Closed),
            }
        })
    }

    fn first(&self, table: Table, limit: usize) -> BoxFuture<'_, Result<Records, StoreError>> {
        Box::pin(async move {
            self.read(table, |t| {
                let mut out = Vec::new();
                for item in t.iter().map_err(db_err)?.take(limit) {
                    let (k, v) = item.map_err(db_err)?;
                    let key = k.value().to_owned();
                    let value = split_rev(&key, v.value())?.value;
                    out.push((key, value));
                }
                Ok(out)
            })
        })
    }

    fn count(&self, table: Table) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { self.read(table, |t| t.len().map_err(db_err)) })
    }

    fn announce(&self, me: BrokerEntry) -> BoxFuture<'_, Result<(), StoreError>> {
        *self
            .me
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(me);
        Box::pin(async { Ok(()) })
    }

    fn me(&self) -> Option<BrokerEntry> {
        self.me
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn brokers(&self) -> BoxFuture<'_, Result<Vec<BrokerEntry>, StoreError>> {
        let me = self
            .me
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Box::pin(async move { Ok(me.into_iter().collect()) })
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
