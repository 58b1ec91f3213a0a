//! The shared backend: records are keys in etcd, so several brokers serve one registry.
//!
//! Layout under the prefix (default `edgeplay`): `/edges/{id}`, `/sessions/{id}` (the same JSON
//! as redb keeps) and `/brokers/{id}` (a [`BrokerEntry`], attached to the broker's lease). A
//! record's revision is etcd's `mod_revision`; [`Store::put_if`] is one etcd transaction compared
//! on it. Each broker holds one lease (TTL [`LEASE_TTL_S`] s), kept alive every
//! [`KEEPALIVE`]; when a broker dies its lease expires and its `/brokers` key goes with it.
//! Edge liveness is not written here per heartbeat: only a change of an edge's state is.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    Batch, BoxFuture, BrokerEntry, Change, Records, Store, StoreError, Swap, Table, Versioned,
};

/// Time to live of a broker's lease.
pub const LEASE_TTL_S: i64 = 2;
/// How often the lease is renewed (a quarter of its TTL, so two lost renewals do not kill it).
pub const KEEPALIVE: Duration = Duration::from_millis(500);

fn etcd_err(e: etcd_client::Error) -> StoreError {
    StoreError::Etcd(e.to_string())
}

/// Where the etcd cluster is: `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://HOST:PORT` of each member.
    pub endpoints: Vec<String>,
    /// Key prefix, without slashes (several deployments can share one etcd).
    pub prefix: String,
}

impl std::str::FromStr for EtcdUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::Url(s.to_owned());
        let rest = s.strip_prefix("etcd://").ok_or_else(bad)?;
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(|h| {
                let ok = h
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if ok {
                    Ok(format!("http://{h}"))
                } else {
                    Err(bad())
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(EtcdUrl {
            endpoints,
            prefix: if prefix.is_empty() {
                "edgeplay".into()
            } else {
                prefix.into()
            },
        })
    }
}

/// Records in etcd, shared by every broker that uses the same URL.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    lease: Mutex<Option<(i64, JoinHandle<()>)>>,
    me: Mutex<Option<BrokerEntry>>,
    watch: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    watcher: JoinHandle<()>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.watcher.abort();
        if let Some((_, h)) = self
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            h.abort();
        }
    }
}

impl EtcdStore {
    /// Connects and starts watching edge records (changes made by any broker).
    pub async fn connect(url: &EtcdUrl) -> Result<Self, StoreError> {
        let client = tokio::time::timeout(
            Duration::from_secs(5),
            Client::connect(&url.endpoints, None),
        )
        .await
        .map_err(|_| StoreError::Etcd(format!("no answer from {:?} in 5 s", url.endpoints)))?
        .map_err(etcd_err)?;
        // Ask once, so a wrong endpoint fails here and not at the first request.
        client.clone().status().await.map_err(etcd_err)?;
        let prefix = url.prefix.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let edges = format!("{prefix}/edges/");
        let mut wc = client.clone();
        let mut stream = wc
            .watch(edges.clone(), Some(WatchOptions::new().with_prefix()))
            .await
            .map_err(etcd_err)?;
        let watcher = tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let Some(key) = kv.key().strip_prefix(edges.as_bytes()) else {
                                continue;
                            };
                            let key = String::from_utf8_lossy(key).into_owned();
                            let value = match ev.event_type() {
                                EventType::Put => Some(kv.value().to_vec()),
                                EventType::Delete => None,
                            };
                            if tx.send(Change { key, value }).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("etcd closed the edge watch");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd edge watch failed");
                        return;
                    }
                }
            }
        });
        Ok(EtcdStore {
            client,
            prefix,
            lease: Mutex::new(None),
            me: Mutex::new(None),
            watch: Mutex::new(Some(rx)),
            watcher,
        })
    }

    fn key(&self, table: Table, key: &str) -> String {
        format!("{}/{}{key}", self.prefix, dir(table))
    }

    /// The records of `table` in key order, the first `limit` of them when given.
    async fn range(&self, table: Table, limit: Option<usize>) -> Result<Records, StoreError> {
        let base = format!("{}/{}", self.prefix, dir(table));
        let mut opts = GetOptions::new().with_prefix();
        if let Some(n) = limit {
            opts = opts.with_limit(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut resp = self
            .client
            .kv_client()
            .get(base.clone(), Some(opts))
            .await
            .map_err(etcd_err)?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .filter_map(|kv| {
                let (k, v) = kv.into_key_value();
                let k = k.strip_prefix(base.as_bytes())?;
                Some((String::from_utf8_lossy(k).into_owned(), v))
            })
            .collect())
    }

    /// Gives the lease back at once (a clean stop), so other brokers need not wait out its TTL.
    pub async fn close(&self) {
        let lease = self
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((id, h)) = lease {
            h.abort();
            if let Err(e) = self.client.lease_client().revoke(id).await {
                tracing::warn!(error = %e, "could not revoke the broker lease; it expires in 2 s");
            }
        }
    }
}

/// etcd's default `--max-txn-ops`: the most puts and deletes one [`Batch`] may hold.
pub const MAX_TXN_OPS: usize = 128;

fn dir(table: Table) -> &'static str {
    match table {
        Table::Edges => "edges/",
        Table::Sessions => "sessions/",
        Table::Summaries => "summaries/",
        Table::Ended => "ended/",
    }
}

fn rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// Grants a lease and puts `me` under it; returns the lease id.
async fn grant_and_put(client: &Client, key: &str, me: &[u8]) -> Result<i64, StoreError> {
    let lease = client
        .lease_client()
        .grant(LEASE_TTL_S, None)
        .await
        .map_err(etcd_err)?
        .id();
    client
        .kv_client()
        .put(key, me, Some(PutOptions::new().with_lease(lease)))
        .await
        .map_err(etcd_err)?;
    Ok(lease)
}

/// Renews the lease every [`KEEPALIVE`]; if it was lost (etcd unreachable longer than the TTL),
/// takes a new one and puts the broker key back, so the broker reappears once etcd answers.
async fn keep_alive(client: Client, key: String, me: Vec<u8>, mut lease: i64) {
    loop {
        let kept: Result<std::convert::Infallible, StoreError> = async {
            let (mut keeper, mut stream) = client
                .lease_client()
                .keep_alive(lease)
                .await
                .map_err(etcd_err)?;
            loop {
                keeper.keep_alive().await.map_err(etcd_err)?;
                match stream.message().await.map_err(etcd_err)? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Err(StoreError::Etcd("lease expired".into())),
                }
                tokio::time::sleep(KEEPALIVE).await;
            }
        }
        .await;
        let Err(e) = kept;
        tracing::warn!(error = %e, "broker lease lost; taking a new one");
        loop {
            tokio::time::sleep(KEEPALIVE).await;
            match grant_and_put(&client, &key, &me).await {
                Ok(l) => {
                    lease = l;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the broker lease"),
            }
        }
    }
}

impl Store for EtcdStore {
    fn put(
        &self,
        table: Table,
        key: String,
        value: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.client
                .kv_client()
                .put(self.key(table, &key), value, None)
                .await
                .map_err(etcd_err)?;
            Ok(())
        })
    }

    fn get<'a>(
        &'a self,
        table: Table,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .get_versioned(table, key)
                .await?
                .map(|versioned| versioned.value))
        })
    }

    fn list(&self, table: Table) -> BoxFuture<'_, Result<Records, StoreError>> {
        Box::pin(self.range(table, None))
    }

    fn delete(&self, table: Table, key: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let resp = self
                .client
                .kv_client()
                .delete(self.key(table, &key), None)
                .await
                .map_err(etcd_err)?;
            Ok(resp.deleted() > 0)
        })
    }

    fn get_versioned<'a>(
        &'a self,
        table: Table,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        Box::pin(async move {
            let mut resp = self
                .client
                .kv_client()
                .get(self.key(table, key), None)
                .await
                .map_err(etcd_err)?;
            Ok(resp.take_kvs().into_iter().next().map(|kv| Versioned {
                revision: rev(kv.mod_revision()),
                value: kv.into_key_value().1,
            }))
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
            let k = self.key(table, &key);
            // An absent key has mod_revision 0 in etcd's compare.
            let expected = i64::try_from(expected.unwrap_or(0)).unwrap_or(i64::MAX);
            let txn = Txn::new()
                .when([Compare::mod_revision(k.clone(), CompareOp::Equal, expected)])
                .and_then([TxnOp::put(k.clone(), value, None)])
                .or_else([TxnOp::get(k, None)]);
            let resp = self.client.kv_client().txn(txn).await.map_err(etcd_err)?;
            if resp.succeeded() {
                let r = resp.header().map_or(0, |h| rev(h.revision()));
                return Ok(Swap::Done(r));
            }
            let current = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| rev(kv.mod_revision()))),
                _ => None,
            });
            Ok(Swap::Stale(current.flatten()))
        })
    }

    fn apply(&self, batch: Batch) -> BoxFuture<'_, Result<Swap, StoreError>> {
        Box::pin(async move {
            if batch.ops() > MAX_TXN_OPS {
                return Err(StoreError::Etcd(format!(
                    "a batch of {} operations is over etcd's default limit of {MAX_TXN_OPS}",
                    batch.ops()
                )));
            }
            let mut ops: Vec<TxnOp> = batch
                .puts
                .into_iter()
                .map(|(t, k, v)| TxnOp::put(self.key(t, &k), v, None))
                .collect();
            ops.extend(
                batch
                    .deletes
                    .into_iter()
                    .map(|(t, k)| TxnOp::delete(self.key(t, &k), None)),
            );
            let (txn, guard_key) = match batch.guard {
                Some((t, k, expected)) => {
                    let k = self.key(t, &k);
                    // An absent key has mod_revision 0 in etcd's compare.
                    let expected = i64::try_from(expected.unwrap_or(0)).unwrap_or(i64::MAX);
                    let txn = Txn::new()
                        .when([Compare::mod_revision(k.clone(), CompareOp::Equal, expected)])
                        .and_then(ops)
                        .or_else([TxnOp::get(k.clone(), None)]);
                    (txn, Some(k))
                }
                None => (Txn::new().and_then(ops), None),
            };
            let resp = self.client.kv_client().txn(txn).await.map_err(etcd_err)?;
            if resp.succeeded() || guard_key.is_none() {
                return Ok(Swap::Done(resp.header().map_or(0, |h| rev(h.revision()))));
            }
            let current = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| rev(kv.mod_revision()))),
                _ => None,
            });
            Ok(Swap::Stale(current.flatten()))
        })
    }

    fn first(&self, table: Table, limit: usize) -> BoxFuture<'_, Result<Records, StoreError>> {
        Box::pin(self.range(table, Some(limit)))
    }

    fn count(&self, table: Table) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let base = format!("{}/{}", self.prefix, dir(table));
            let resp = self
                .client
                .kv_client()
                .get(
                    base,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .map_err(etcd_err)?;
            Ok(u64::try_from(resp.count()).unwrap_or(0))
        })
    }

    fn announce(&self, me: BrokerEntry) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let key = format!("{}/brokers/{}", self.prefix, me.id);
            let bytes = serde_json::to_vec(&me).map_err(|e| StoreError::Etcd(e.to_string()))?;
            let lease = grant_and_put(&self.client, &key, &bytes).await?;
            let h = tokio::spawn(keep_alive(self.client.clone(), key, bytes, lease));
            let old = self
                .lease
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .replace((lease, h));
            if let Some((_, h)) = old {
                h.abort();
            }
            *self.me.lock().unwrap_or_else(PoisonError::into_inner) = Some(me);
            Ok(())
        })
    }

    fn me(&self) -> Option<BrokerEntry> {
        self.me
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn brokers(&self) -> BoxFuture<'_, Result<Vec<BrokerEntry>, StoreError>> {
        Box::pin(async move {
            let base = format!("{}/brokers/", self.prefix);
            let resp = self
                .client
                .kv_client()
                .get(base, Some(GetOptions::new().with_prefix()))
                .await
                .map_err(etcd_err)?;
            Ok(resp
                .kvs()
                .iter()
                .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
                .collect())
        })
    }

    fn edge_changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        self.watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_are_refused() {
        let u: EtcdUrl = "etcd://127.0.0.1:2379".parse().unwrap();
        assert_eq!(u.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(u.prefix, "edgeplay");
        let u: EtcdUrl = "etcd://a:1,b:2/test/x/".parse().unwrap();
        assert_eq!(u.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(u.prefix, "test/x");
        for bad in [
            "etcd://",
            "http://a:1",
            "etcd://a",
            "etcd://a:99999",
            "etcd://:1",
        ] {
            assert!(bad.parse::<EtcdUrl>().is_err(), "{bad}");
        }
    }
}
