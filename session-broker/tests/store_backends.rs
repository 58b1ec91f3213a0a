//! The `Store` trait's behaviour, the same on both backends: redb in a temp dir and a real etcd.

use std::sync::Arc;

use edgeplay_broker::store::etcd::{EtcdStore, EtcdUrl};
use edgeplay_broker::store::{Batch, BrokerEntry, RedbStore, Store, Swap, Table};
use edgeplay_testkit::etcd::Etcd;

/// Put, get, list, delete, revisions, and a conditional write refused on a stale revision.
async fn behaves(store: &dyn Store) {
    store
        .put(Table::Sessions, "s1".into(), b"one".to_vec())
        .await
        .unwrap();
    store
        .put(Table::Sessions, "s2".into(), b"two".to_vec())
        .await
        .unwrap();
    store
        .put(Table::Edges, "e1".into(), b"edge".to_vec())
        .await
        .unwrap();
    assert_eq!(
        store.get(Table::Sessions, "s1").await.unwrap(),
        Some(b"one".to_vec())
    );
    assert_eq!(store.get(Table::Sessions, "e1").await.unwrap(), None);
    let all = store.list(Table::Sessions).await.unwrap();
    assert_eq!(
        all,
        vec![
            ("s1".to_owned(), b"one".to_vec()),
            ("s2".to_owned(), b"two".to_vec())
        ]
    );
    assert_eq!(store.list(Table::Edges).await.unwrap().len(), 1);

    // Fencing: the owner changes only from the revision the caller read.
    let v1 = store
        .get_versioned(Table::Sessions, "s1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1.value, b"one");
    let Swap::Done(r2) = store
        .put_if(
            Table::Sessions,
            "s1".into(),
            b"owner A".to_vec(),
            Some(v1.revision),
        )
        .await
        .unwrap()
    else {
        panic!("a write from the current revision was refused");
    };
    assert!(r2 > v1.revision);
    // A second broker that read v1 too is refused, and told the current revision.
    let stale = store
        .put_if(
            Table::Sessions,
            "s1".into(),
            b"owner B".to_vec(),
            Some(v1.revision),
        )
        .await
        .unwrap();
    assert_eq!(stale, Swap::Stale(Some(r2)));
    assert_eq!(
        store.get(Table::Sessions, "s1").await.unwrap(),
        Some(b"owner A".to_vec())
    );
    // `None` means "only if absent".
    assert_eq!(
        store
            .put_if(Table::Sessions, "s1".into(), b"x".to_vec(), None)
            .await
            .unwrap(),
        Swap::Stale(Some(r2))
    );
    assert!(matches!(
        store
            .put_if(Table::Sessions, "s3".into(), b"new".to_vec(), None)
            .await
            .unwrap(),
        Swap::Done(_)
    ));
    // A plain put moves the revision too, so an owner change read before it is refused.
    store
        .put(Table::Sessions, "s1".into(), b"rewritten".to_vec())
        .await
        .unwrap();
    assert!(matches!(
        store
            .put_if(Table::Sessions, "s1".into(), b"late".to_vec(), Some(r2))
            .await
            .unwrap(),
        Swap::Stale(Some(r)) if r > r2
    ));

    assert!(store.delete(Table::Sessions, "s2".into()).await.unwrap());
    assert!(!store.delete(Table::Sessions, "s2".into()).await.unwrap());
    assert_eq!(
        store
            .put_if(Table::Sessions, "s2".into(), b"gone".to_vec(), Some(r2))
            .await
            .unwrap(),
        Swap::Stale(None)
    );

    let me = BrokerEntry {
        id: "b1".into(),
        url: "http://127.0.0.1:1".into(),
    };
    store.announce(me.clone()).await.unwrap();
    assert_eq!(store.brokers().await.unwrap(), vec![me]);
    batches(store).await;
}

/// A fenced batch (how a session ends): all or nothing on the guard's revision; and the
/// oldest-first reads and counts the summaries' retention uses.
async fn batches(store: &dyn Store) {
    store
        .put(Table::Sessions, "live".into(), b"rec".to_vec())
        .await
        .unwrap();
    let rev = revision(store, "live").await;
    let end = |expected| Batch {
        guard: Some((Table::Sessions, "live".into(), expected)),
        puts: vec![
            (Table::Summaries, "live".into(), b"sum".to_vec()),
            (Table::Ended, "0000000000002-live".into(), b"live".to_vec()),
        ],
        deletes: vec![(Table::Sessions, "live".into())],
    };
    assert_eq!(
        store.apply(end(Some(rev + 1_000))).await.unwrap(),
        Swap::Stale(Some(rev)),
        "a stale guard applies nothing"
    );
    assert_eq!(store.count(Table::Summaries).await.unwrap(), 0);
    assert!(matches!(
        store.apply(end(Some(rev))).await.unwrap(),
        Swap::Done(_)
    ));
    assert_eq!(store.get(Table::Sessions, "live").await.unwrap(), None);
    assert_eq!(
        store.get(Table::Summaries, "live").await.unwrap(),
        Some(b"sum".to_vec())
    );
    assert_eq!(
        store.apply(end(Some(rev))).await.unwrap(),
        Swap::Stale(None),
        "ended already"
    );
    store
        .put(Table::Ended, "0000000000001-old".into(), b"old".to_vec())
        .await
        .unwrap();
    assert_eq!(store.count(Table::Ended).await.unwrap(), 2);
    let oldest = store.first(Table::Ended, 1).await.unwrap();
    assert_eq!(
        oldest,
        vec![("0000000000001-old".to_owned(), b"old".to_vec())]
    );
    let unguarded = Batch {
        deletes: vec![(Table::Ended, "0000000000001-old".into())],
        ..Batch::default()
    };
    assert!(matches!(
        store.apply(unguarded).await.unwrap(),
        Swap::Done(_)
    ));
    assert_eq!(store.count(Table::Ended).await.unwrap(), 1);
}

/// The revision of session record `key`, which must exist.
async fn revision(store: &dyn Store, key: &str) -> u64 {
    store
        .get_versioned(Table::Sessions, key)
        .await
        .unwrap()
        .unwrap()
        .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_backend() {
    let dir = std::env::temp_dir().join(format!("edgeplay-backend-redb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = RedbStore::open(&dir).unwrap();
    behaves(&store).await;
    store.close().await;
    // Revisions survive a reopen: a later write gets a higher one.
    let store = RedbStore::open(&dir).unwrap();
    let before = revision(&store, "s1").await;
    store
        .put(Table::Sessions, "s9".into(), vec![])
        .await
        .unwrap();
    let after = revision(&store, "s9").await;
    assert!(after > before, "{after} ≤ {before} after reopen");
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend() {
    let etcd = Etcd::start().unwrap();
    let url: EtcdUrl = etcd.store_url("backend").parse().unwrap();
    let store = EtcdStore::connect(&url).await.unwrap();
    behaves(&store).await;

    // Another broker on the same etcd sees the records, and edge changes reach it by watch.
    let other = Arc::new(EtcdStore::connect(&url).await.unwrap());
    let mut changes = other.edge_changes().unwrap();
    assert!(
        other.edge_changes().is_none(),
        "the watch is handed out once"
    );
    assert_eq!(
        other.get(Table::Sessions, "s3").await.unwrap(),
        Some(b"new".to_vec())
    );
    store
        .put(Table::Edges, "e2".into(), b"edge two".to_vec())
        .await
        .unwrap();
    store.delete(Table::Edges, "e1".into()).await.unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.key, "e2");
    assert_eq!(first.value.as_deref(), Some(&b"edge two"[..]));
    let second = tokio::time::timeout(std::time::Duration::from_secs(5), changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.key.as_str(), second.value), ("e1", None));

    // A dropped broker's lease expires (TTL 2 s) and its key goes with it; a closed one's at once.
    other
        .announce(BrokerEntry {
            id: "b2".into(),
            url: "http://127.0.0.1:2".into(),
        })
        .await
        .unwrap();
    assert_eq!(store.brokers().await.unwrap().len(), 2);
    drop(other);
    let dropped = std::time::Instant::now();
    loop {
        let ids: Vec<String> = store
            .brokers()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        if ids == ["b1"] {
            break;
        }
        assert!(
            dropped.elapsed() < std::time::Duration::from_secs(10),
            "b2's lease did not expire: {ids:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let waited = dropped.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(1000),
        "b2 vanished after {waited:?}, before its lease could expire"
    );
    store.close().await;
    assert!(store.brokers().await.unwrap().is_empty());
}
