//! The service's store, one suite written once and run against both implementations: a
//! SQLite file in a temporary directory and a real PostgreSQL server (a throwaway cluster,
//! [`common::postgres`]; skipped with a note where PostgreSQL is not installed, a failure
//! under `MDN_REQUIRE_POSTGRES=1`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mdn::serve::store::{
    self, Cancel, DatasetRow, Deleted, NewJob, Notice, Outcome, PostgresStore, Progress, Queued,
    Renewal, SqliteStore, Store,
};
use serde_json::{Value, json};

/// A fresh, empty store and a way to open it again (as another process would).
struct Fresh {
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
    url: Option<String>,
}

impl Fresh {
    fn sqlite() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        Fresh {
            store,
            dir,
            url: None,
        }
    }

    fn postgres() -> Option<Fresh> {
        let url = common::postgres::server()?.database();
        Some(Fresh {
            store: Arc::new(PostgresStore::open(&url).unwrap()),
            dir: tempfile::tempdir().unwrap(),
            url: Some(url),
        })
    }

    /// Another handle on the same store: another process's view with PostgreSQL (its own
    /// connections); the same handle with SQLite (one process per store).
    fn another(&self) -> Arc<dyn Store> {
        match &self.url {
            Some(url) => Arc::new(PostgresStore::open(url).unwrap()),
            None => self.store.clone(),
        }
    }
}

/// Each test, once per store.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::Fresh::sqlite()) })*
        }
        mod postgres {
            $(#[test] fn $name() {
                if let Some(f) = super::Fresh::postgres() { super::$name(f) }
            })*
        }
    };
}

suite!(
    data_sets_round_trip_and_a_retried_upload_adds_nothing,
    a_job_is_claimed_once_and_its_events_are_numbered_in_commit_order,
    a_lost_lease_fences_every_later_write,
    a_job_whose_worker_vanishes_max_attempts_times_fails_with_the_reason,
    cancel_stops_a_queued_job_at_once_and_tells_a_running_one_at_its_next_renewal,
    a_data_set_in_use_is_not_deleted,
    a_retried_submission_with_the_same_key_queues_nothing,
    racing_workers_take_each_of_200_jobs_exactly_once,
    a_graceful_release_is_not_counted_as_a_vanished_worker,
);

fn dataset(id: &str, name: &str) -> DatasetRow {
    DatasetRow {
        id: id.into(),
        name: name.into(),
        format: "csv".into(),
        rows: 354,
        columns: vec!["x".into(), "t".into()],
        bytes: 4321,
        created: store::now(),
    }
}

/// Queues job `id` on data set `ds`; returns its first event.
fn queue(s: &dyn Store, id: &str, ds: &str, key: Option<&str>) -> Queued {
    let request = json!({"dataset": ds, "options": {"epochs": 3}});
    s.insert_job(
        &NewJob {
            id,
            dataset: ds,
            request: &request,
            spec: "{}",
        },
        key,
    )
    .unwrap()
}

fn event_types(s: &dyn Store, job: &str) -> Vec<(u64, String)> {
    s.events(job, 0)
        .unwrap()
        .into_iter()
        .map(|(seq, data)| {
            let v: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(v["seq"], seq, "{data}");
            let kind = match v["type"].as_str().unwrap() {
                "status" => format!("status:{}", v["status"].as_str().unwrap()),
                k => k.to_string(),
            };
            (seq, kind)
        })
        .collect()
}

fn progress(epoch: usize) -> Progress {
    Progress {
        epoch,
        max_epochs: 3,
        train_nll: 1.5,
        val_nll: Some(1.25),
        best_epoch: epoch,
        best_val_nll: Some(1.25),
        rows_per_sec: 1000.0,
        eta_seconds: 2.0,
    }
}

fn data_sets_round_trip_and_a_retried_upload_adds_nothing(f: Fresh) {
    let s = &*f.store;
    assert_eq!(s.dataset("ds_1").unwrap(), None);
    let a = dataset("ds_1", "first.csv");
    assert_eq!(s.insert_dataset(&a, Some("key-1")).unwrap(), None);
    let mut b = dataset("ds_2", "second.csv");
    b.created = a.created + 1.0;
    assert_eq!(s.insert_dataset(&b, None).unwrap(), None);
    assert_eq!(s.dataset("ds_1").unwrap().as_ref(), Some(&a));
    // The same key again: the first upload's data set, nothing added.
    let retry = dataset("ds_3", "first.csv");
    assert_eq!(
        s.insert_dataset(&retry, Some("key-1")).unwrap(),
        Some(a.clone())
    );
    assert_eq!(s.datasets().unwrap(), vec![a, b]);
}

fn a_job_is_claimed_once_and_its_events_are_numbered_in_commit_order(f: Fresh) {
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    let Queued::New(first) = queue(s, "job_1", "ds_1", None) else {
        panic!("queued")
    };
    assert_eq!((first.job.as_str(), first.seq), ("job_1", 1));
    queue(s, "job_2", "ds_1", None);
    let c = s.claim_next("host:1:0", 30.0).unwrap().unwrap();
    assert_eq!(
        (c.id.as_str(), c.attempt, c.spec.as_str()),
        ("job_1", 1, "{}")
    );
    let j = s.job("job_1").unwrap().unwrap();
    assert_eq!(
        (j.status.as_str(), j.attempts, j.worker.as_deref()),
        ("running", 1, Some("host:1:0"))
    );
    let c2 = s.claim_next("host:1:1", 30.0).unwrap().unwrap();
    assert_eq!(c2.id, "job_2");
    assert!(s.claim_next("host:1:2", 30.0).unwrap().is_none());
    assert_ne!(c.lease, c2.lease);

    assert_eq!(
        s.renew("job_1", &c.lease, 30.0).unwrap(),
        Renewal::Held {
            cancel_requested: false
        }
    );
    assert!(s.set_device("job_1", &c.lease, "cpu").unwrap());
    for e in 1..=3 {
        assert_eq!(
            s.set_progress("job_1", &c.lease, 30.0, &progress(e))
                .unwrap(),
            Renewal::Held {
                cancel_requested: false
            }
        );
        s.append_event(
            "job_1",
            Some(&c.lease),
            &json!({"type": "epoch", "epoch": e}),
        )
        .unwrap()
        .unwrap();
    }
    let j = s.job("job_1").unwrap().unwrap();
    assert_eq!((j.epoch, j.device.as_deref()), (Some(3), Some("cpu")));
    let end = s
        .end(
            "job_1",
            &c.lease,
            &Outcome {
                status: store::SUCCEEDED,
                error: None,
                model: Some("m_1"),
            },
            &json!({"type": "status", "status": "succeeded", "model": "m_1"}),
        )
        .unwrap()
        .unwrap();
    assert_eq!(end.seq, 5);
    let j = s.job("job_1").unwrap().unwrap();
    assert_eq!(
        (j.status.as_str(), j.model.as_deref(), j.worker.as_deref()),
        ("succeeded", Some("m_1"), None)
    );
    assert!(j.finished.is_some());
    assert!(s.model_exists("m_1").unwrap());
    assert!(!s.model_exists("m_2").unwrap());
    assert_eq!(s.model_dataset("m_1").unwrap().unwrap().name, "d.csv");
    let kinds: Vec<String> = event_types(s, "job_1").into_iter().map(|e| e.1).collect();
    assert_eq!(
        kinds,
        [
            "status:queued",
            "epoch",
            "epoch",
            "epoch",
            "status:succeeded"
        ]
    );
    assert_eq!(s.events("job_1", 3).unwrap().len(), 2);
    let counts: HashMap<String, u64> = s.job_counts().unwrap().into_iter().collect();
    assert_eq!(counts.get("succeeded"), Some(&1));
    assert_eq!(counts.get("running"), Some(&1));
    assert_eq!(
        s.jobs(Some("running"))
            .unwrap()
            .iter()
            .map(|j| j.id.as_str())
            .collect::<Vec<_>>(),
        ["job_2"]
    );
    assert_eq!(s.jobs(None).unwrap().len(), 2);
}

fn a_lost_lease_fences_every_later_write(f: Fresh) {
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    queue(s, "job_1", "ds_1", None);
    let old = s.claim_next("host:1:0", 0.2).unwrap().unwrap();
    // A lease still running is not taken away.
    assert!(s.requeue_expired(3, false).unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(400));
    let requeued = f.another().requeue_expired(3, false).unwrap();
    assert_eq!(requeued.len(), 1);
    let ev: Value = serde_json::from_str(&requeued[0].data).unwrap();
    assert_eq!(ev["status"], "queued", "{ev}");
    assert!(
        ev["reason"].as_str().unwrap().contains("worker stopped"),
        "{ev}"
    );
    let new = s.claim_next("host:2:0", 30.0).unwrap().unwrap();
    assert_eq!((new.id.as_str(), new.attempt), ("job_1", 2));

    // Everything the old worker tries now changes nothing.
    assert_eq!(s.renew("job_1", &old.lease, 30.0).unwrap(), Renewal::Lost);
    assert_eq!(
        s.set_progress("job_1", &old.lease, 30.0, &progress(9))
            .unwrap(),
        Renewal::Lost
    );
    assert!(!s.set_device("job_1", &old.lease, "gpu").unwrap());
    assert_eq!(
        s.append_event("job_1", Some(&old.lease), &json!({"type": "epoch"}))
            .unwrap(),
        None
    );
    let stale = Outcome {
        status: store::SUCCEEDED,
        error: None,
        model: Some("m_1"),
    };
    assert_eq!(
        s.end("job_1", &old.lease, &stale, &json!({"type": "status"}))
            .unwrap(),
        None
    );
    let j = s.job("job_1").unwrap().unwrap();
    assert_eq!(
        (
            j.status.as_str(),
            j.epoch,
            j.device.as_deref(),
            j.worker.as_deref()
        ),
        ("running", None, None, Some("host:2:0"))
    );
    assert!(!s.model_exists("m_1").unwrap());
    // The new one's writes go through.
    assert_eq!(
        s.set_progress("job_1", &new.lease, 30.0, &progress(1))
            .unwrap(),
        Renewal::Held {
            cancel_requested: false
        }
    );
    let kinds: Vec<String> = event_types(s, "job_1").into_iter().map(|e| e.1).collect();
    assert_eq!(kinds, ["status:queued", "status:queued"]);
}

fn a_job_whose_worker_vanishes_max_attempts_times_fails_with_the_reason(f: Fresh) {
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    queue(s, "job_1", "ds_1", None);
    for attempt in 1..=2 {
        let c = s.claim_next("host:1:0", 0.05).unwrap().unwrap();
        assert_eq!(c.attempt, attempt);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(s.requeue_expired(2, false).unwrap().len(), 1);
    }
    let j = s.job("job_1").unwrap().unwrap();
    assert_eq!(j.status, "failed", "{j:?}");
    assert!(j.finished.is_some());
    let error = j.error.unwrap();
    assert!(
        error.contains("stopped without a word 2 times") && error.contains("--max-attempts 2"),
        "{error}"
    );
    assert!(s.claim_next("host:1:0", 30.0).unwrap().is_none());
    let last = s.events("job_1", 0).unwrap().pop().unwrap().1;
    assert!(
        last.contains("\"failed\"") && last.contains("--max-attempts"),
        "{last}"
    );
}

fn a_graceful_release_is_not_counted_as_a_vanished_worker(f: Fresh) {
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    queue(s, "job_1", "ds_1", None);
    for _ in 0..3 {
        let c = s.claim_next("host:1:0", 30.0).unwrap().unwrap();
        let back = Outcome {
            status: store::QUEUED,
            error: None,
            model: None,
        };
        let ev = json!({"type": "status", "status": "queued", "reason": "stopping"});
        assert!(s.end("job_1", &c.lease, &back, &ev).unwrap().is_some());
    }
    let c = s.claim_next("host:1:0", 0.05).unwrap().unwrap();
    assert_eq!(c.attempt, 4);
    std::thread::sleep(Duration::from_millis(150));
    s.requeue_expired(2, false).unwrap();
    // One vanishing of 2 allowed: queued again, not failed.
    assert_eq!(s.job("job_1").unwrap().unwrap().status, "queued");
}

fn cancel_stops_a_queued_job_at_once_and_tells_a_running_one_at_its_next_renewal(f: Fresh) {
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    queue(s, "job_1", "ds_1", None);
    queue(s, "job_2", "ds_1", None);
    let c = s.claim_next("host:1:0", 30.0).unwrap().unwrap();
    assert_eq!(c.id, "job_1");
    let Cancel::Cancelled(ev) = f.another().cancel("job_2").unwrap() else {
        panic!("a queued job is cancelled at once")
    };
    assert!(ev.data.contains("cancelled"), "{}", ev.data);
    let j2 = s.job("job_2").unwrap().unwrap();
    assert_eq!((j2.status.as_str(), j2.attempts), ("cancelled", 0));
    assert!(s.claim_next("host:1:1", 30.0).unwrap().is_none());

    assert_eq!(f.another().cancel("job_1").unwrap(), Cancel::Requested);
    assert_eq!(
        s.renew("job_1", &c.lease, 30.0).unwrap(),
        Renewal::Held {
            cancel_requested: true
        }
    );
    assert_eq!(
        s.set_progress("job_1", &c.lease, 30.0, &progress(1))
            .unwrap(),
        Renewal::Held {
            cancel_requested: true
        }
    );
    assert_eq!(
        s.cancel("job_2").unwrap(),
        Cancel::Finished("cancelled".into())
    );
    assert_eq!(s.cancel("job_9").unwrap(), Cancel::Missing);
}

fn a_data_set_in_use_is_not_deleted(f: Fresh) {
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    queue(s, "job_1", "ds_1", None);
    assert_eq!(
        s.delete_dataset("ds_1").unwrap(),
        Deleted::InUse("job_1".into())
    );
    let c = s.claim_next("host:1:0", 30.0).unwrap().unwrap();
    assert_eq!(
        s.delete_dataset("ds_1").unwrap(),
        Deleted::InUse("job_1".into())
    );
    let done = Outcome {
        status: store::FAILED,
        error: Some("bad"),
        model: None,
    };
    s.end("job_1", &c.lease, &done, &json!({"type": "status"}))
        .unwrap()
        .unwrap();
    assert_eq!(
        s.job("job_1").unwrap().unwrap().error.as_deref(),
        Some("bad")
    );
    assert_eq!(
        s.delete_dataset("ds_1").unwrap(),
        Deleted::Removed {
            format: "csv".into()
        }
    );
    assert_eq!(s.delete_dataset("ds_1").unwrap(), Deleted::Missing);
    assert!(s.datasets().unwrap().is_empty());
}

fn a_retried_submission_with_the_same_key_queues_nothing(f: Fresh) {
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    assert!(matches!(
        queue(s, "job_1", "ds_1", Some("k")),
        Queued::New(_)
    ));
    match queue(&*f.another(), "job_2", "ds_1", Some("k")) {
        Queued::Replayed(first) => assert_eq!(first.id, "job_1"),
        Queued::New(_) => panic!("a second job for the same key"),
    }
    assert!(matches!(
        queue(s, "job_3", "ds_1", Some("other")),
        Queued::New(_)
    ));
    let ids: Vec<String> = s.jobs(None).unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(ids, ["job_1", "job_3"]);
    assert!(s.job("job_2").unwrap().is_none());
    assert!(s.events("job_2", 0).unwrap().is_empty());
}

fn racing_workers_take_each_of_200_jobs_exactly_once(f: Fresh) {
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    for i in 0..200 {
        queue(s, &format!("job_{i:03}"), "ds_1", None);
    }
    let taken: Vec<Vec<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let mine = f.another();
                scope.spawn(move || {
                    let mut got = Vec::new();
                    while let Some(c) = mine.claim_next(&format!("host:{w}:0"), 30.0).unwrap() {
                        let done = Outcome {
                            status: store::SUCCEEDED,
                            error: None,
                            model: None,
                        };
                        mine.end(&c.id, &c.lease, &done, &json!({"type": "status"}))
                            .unwrap()
                            .expect("the lease holds");
                        got.push(c.id);
                    }
                    got
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<String> = taken.iter().flatten().cloned().collect();
    all.sort();
    let want: Vec<String> = (0..200).map(|i| format!("job_{i:03}")).collect();
    assert_eq!(all, want, "each job exactly once");
    // Each worker took them oldest first.
    for t in &taken {
        assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
    }
    for j in s.jobs(None).unwrap() {
        assert_eq!((j.status.as_str(), j.attempts), ("succeeded", 1), "{j:?}");
    }
}

// ---- one store's own behaviour ----

#[test]
fn a_second_process_on_a_sqlite_store_is_refused_and_the_lock_goes_with_the_first() {
    let f = Fresh::sqlite();
    let e = SqliteStore::open(f.dir.path()).err().expect("refused");
    let text = e.to_string();
    assert!(
        text.contains("is in use by process") && text.contains(&std::process::id().to_string()),
        "{text}"
    );
    assert_eq!(e.exit_code(), 2);
    let dir = f.dir;
    drop(f.store);
    SqliteStore::open(dir.path()).expect("free again once the first is gone");
}

#[test]
fn a_sqlite_store_from_before_leases_is_migrated_and_its_running_job_requeued() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join("mdn.sqlite")).unwrap();
        c.execute_batch(
            "CREATE TABLE datasets (id TEXT PRIMARY KEY, name TEXT NOT NULL, format TEXT NOT NULL, rows INTEGER NOT NULL, columns TEXT NOT NULL, bytes INTEGER NOT NULL, created REAL NOT NULL);
             CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, status TEXT NOT NULL, dataset TEXT NOT NULL, request TEXT NOT NULL, spec TEXT NOT NULL, epoch INTEGER, max_epochs INTEGER, train_nll REAL, val_nll REAL, best_epoch INTEGER, best_val_nll REAL, rows_per_sec REAL, eta_seconds REAL, device TEXT, error TEXT, model TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, started REAL, finished REAL);
             CREATE TABLE events (job TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job, seq));
             CREATE TABLE models (id TEXT PRIMARY KEY, job TEXT NOT NULL, created REAL NOT NULL);
             INSERT INTO jobs (id, status, dataset, request, spec, attempts, created) VALUES ('job_1', 'running', 'ds_1', '{}', '{}', 1, 0);
             INSERT INTO events VALUES ('job_1', 1, '{\"type\":\"status\",\"status\":\"queued\",\"seq\":1}');",
        )
        .unwrap();
    }
    let s = SqliteStore::open(dir.path()).unwrap();
    let j = s.job("job_1").unwrap().unwrap();
    assert_eq!((j.status.as_str(), j.worker), ("running", None));
    // What a restarted single-process store does with it.
    let back = s.requeue_expired(3, true).unwrap();
    assert_eq!(back[0].seq, 2);
    let c = s.claim_next("host:1:0", 30.0).unwrap().unwrap();
    assert_eq!((c.id.as_str(), c.attempt), ("job_1", 2));
}

#[test]
fn postgres_notifications_reach_another_process_in_commit_order() {
    let Some(f) = Fresh::postgres() else { return };
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = f.another();
    let h = heard.clone();
    assert!(
        listener
            .listen(Arc::new(move |n| h.lock().unwrap().push(n)))
            .unwrap()
    );
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    queue(s, "job_1", "ds_1", None);
    let c = s.claim_next("host:1:0", 30.0).unwrap().unwrap();
    for e in 1..=20 {
        s.append_event(
            "job_1",
            Some(&c.lease),
            &json!({"type": "epoch", "epoch": e}),
        )
        .unwrap()
        .unwrap();
    }
    let t0 = std::time::Instant::now();
    loop {
        let n = heard
            .lock()
            .unwrap()
            .iter()
            .filter(|n| matches!(n, Notice::Event(_)))
            .count();
        if n == 21 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "heard {n} of 21 events"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let heard = heard.lock().unwrap();
    let seqs: Vec<u64> = heard
        .iter()
        .filter_map(|n| match n {
            Notice::Event(p) => Some(p.seq),
            Notice::Queued => None,
        })
        .collect();
    assert_eq!(seqs, (1..=21).collect::<Vec<u64>>());
    assert!(heard.iter().any(|n| matches!(n, Notice::Queued)));
    let stored = s.events("job_1", 0).unwrap();
    for (n, (seq, data)) in heard
        .iter()
        .filter_map(|n| match n {
            Notice::Event(p) => Some(p),
            _ => None,
        })
        .zip(stored)
    {
        assert_eq!((n.seq, &n.data), (seq, &data));
    }
}

#[test]
fn an_unreachable_postgres_store_is_a_clear_error() {
    // Nothing listens on port 1.
    let e = PostgresStore::open("postgres://mdn:secret@127.0.0.1:1/mdn")
        .err()
        .expect("refused");
    let text = e.to_string();
    assert!(
        text.contains("PostgreSQL store at 127.0.0.1:1/mdn cannot be reached"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
    let e = PostgresStore::open("postgres://[nonsense")
        .err()
        .expect("refused");
    assert_eq!(e.exit_code(), 2, "{e}");
}
