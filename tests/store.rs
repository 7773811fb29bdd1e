//! The service's store, one suite written once and run against both implementations: a
//! SQLite file in a temporary directory and a real PostgreSQL server (a throwaway cluster,
//! [`common::postgres`]; skipped with a note where PostgreSQL is not installed, a failure
//! under `MDN_REQUIRE_POSTGRES=1`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mdn::serve::store::{
    self, Added, Cancel, DatasetRow, Deleted, JobDeleted, ModelDeleted, NewJob, Notice, Outcome,
    PostgresStore, Progress, Queued, Renewal, Selector, SqliteStore, Store,
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
    a_workspace_sees_nothing_of_another_and_idempotency_keys_are_its_own,
    quotas_refuse_the_job_or_the_bytes_past_them_and_count_models,
    racing_submissions_never_pass_a_workspace_job_quota,
    keys_are_kept_as_hashes_listed_per_workspace_and_revoked_at_once,
    a_job_registers_its_model_and_aliases_move_between_versions,
    racing_registrations_number_versions_without_gaps_or_repeats,
    the_same_bytes_uploaded_again_were_stored_again,
    models_and_jobs_could_not_be_deleted,
    a_deleted_versions_number_is_never_given_again,
    a_job_could_not_validate_on_a_data_set_of_its_own,
);

fn dataset_in(ws: &str, id: &str, name: &str) -> DatasetRow {
    DatasetRow {
        workspace: ws.into(),
        ..dataset(id, name)
    }
}

/// Queues job `id` of workspace `ws` on data set `ds`.
fn queue_in(s: &dyn Store, ws: &str, id: &str, ds: &str, key: Option<&str>) -> Queued {
    let request = json!({"dataset": ds});
    s.insert_job(
        &NewJob {
            id,
            workspace: ws,
            created_by: Some("alice (key_1)"),
            dataset: ds,
            val_dataset: None,
            request: &request,
            spec: "{}",
            register: None,
        },
        key,
    )
    .unwrap()
}

fn workspace(name: &str, max_jobs: Option<u64>, max_bytes: Option<u64>) -> store::Workspace {
    store::Workspace {
        name: name.into(),
        max_jobs,
        max_bytes,
        created: store::now(),
    }
}

fn dataset(id: &str, name: &str) -> DatasetRow {
    DatasetRow {
        id: id.into(),
        workspace: store::DEFAULT_WORKSPACE.into(),
        created_by: None,
        name: name.into(),
        format: "csv".into(),
        rows: 354,
        columns: vec!["x".into(), "t".into()],
        bytes: 4321,
        sha256: None,
        created: store::now(),
    }
}

/// Queues job `id` on data set `ds`; returns its first event.
fn queue(s: &dyn Store, id: &str, ds: &str, key: Option<&str>) -> Queued {
    let request = json!({"dataset": ds, "options": {"epochs": 3}});
    s.insert_job(
        &NewJob {
            id,
            workspace: store::DEFAULT_WORKSPACE,
            created_by: None,
            dataset: ds,
            val_dataset: None,
            request: &request,
            spec: "{}",
            register: None,
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
    assert_eq!(s.dataset(None, "ds_1").unwrap(), None);
    let a = dataset("ds_1", "first.csv");
    assert_eq!(s.insert_dataset(&a, Some("key-1")).unwrap(), Added::New);
    let mut b = dataset("ds_2", "second.csv");
    b.created = a.created + 1.0;
    assert_eq!(s.insert_dataset(&b, None).unwrap(), Added::New);
    assert_eq!(s.dataset(None, "ds_1").unwrap().as_ref(), Some(&a));
    // The same key again: the first upload's data set, nothing added.
    let retry = dataset("ds_3", "first.csv");
    assert_eq!(
        s.insert_dataset(&retry, Some("key-1")).unwrap(),
        Added::Replayed(a.clone())
    );
    assert_eq!(s.datasets(None).unwrap(), vec![a, b]);
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
    let j = s.job(None, "job_1").unwrap().unwrap();
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
    let j = s.job(None, "job_1").unwrap().unwrap();
    assert_eq!((j.epoch, j.device.as_deref()), (Some(3), Some("cpu")));
    let end = s
        .end(
            "job_1",
            &c.lease,
            &Outcome {
                status: store::SUCCEEDED,
                error: None,
                model: Some("m_1"),
                model_bytes: 0,
            },
            &json!({"type": "status", "status": "succeeded", "model": "m_1"}),
        )
        .unwrap()
        .unwrap();
    assert_eq!(end.seq, 5);
    let j = s.job(None, "job_1").unwrap().unwrap();
    assert_eq!(
        (j.status.as_str(), j.model.as_deref(), j.worker.as_deref()),
        ("succeeded", Some("m_1"), None)
    );
    assert!(j.finished.is_some());
    assert!(s.model_workspace("m_1").unwrap().is_some());
    assert!(s.model_workspace("m_2").unwrap().is_none());
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
        s.jobs(None, Some("running"))
            .unwrap()
            .iter()
            .map(|j| j.id.as_str())
            .collect::<Vec<_>>(),
        ["job_2"]
    );
    assert_eq!(s.jobs(None, None).unwrap().len(), 2);
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
        model_bytes: 0,
    };
    assert_eq!(
        s.end("job_1", &old.lease, &stale, &json!({"type": "status"}))
            .unwrap(),
        None
    );
    let j = s.job(None, "job_1").unwrap().unwrap();
    assert_eq!(
        (
            j.status.as_str(),
            j.epoch,
            j.device.as_deref(),
            j.worker.as_deref()
        ),
        ("running", None, None, Some("host:2:0"))
    );
    assert!(s.model_workspace("m_1").unwrap().is_none());
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
    let j = s.job(None, "job_1").unwrap().unwrap();
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
            model_bytes: 0,
        };
        let ev = json!({"type": "status", "status": "queued", "reason": "stopping"});
        assert!(s.end("job_1", &c.lease, &back, &ev).unwrap().is_some());
    }
    let c = s.claim_next("host:1:0", 0.05).unwrap().unwrap();
    assert_eq!(c.attempt, 4);
    std::thread::sleep(Duration::from_millis(150));
    s.requeue_expired(2, false).unwrap();
    // One vanishing of 2 allowed: queued again, not failed.
    assert_eq!(s.job(None, "job_1").unwrap().unwrap().status, "queued");
}

fn cancel_stops_a_queued_job_at_once_and_tells_a_running_one_at_its_next_renewal(f: Fresh) {
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    queue(s, "job_1", "ds_1", None);
    queue(s, "job_2", "ds_1", None);
    let c = s.claim_next("host:1:0", 30.0).unwrap().unwrap();
    assert_eq!(c.id, "job_1");
    let Cancel::Cancelled(ev) = f.another().cancel(None, "job_2", None).unwrap() else {
        panic!("a queued job is cancelled at once")
    };
    assert!(ev.data.contains("cancelled"), "{}", ev.data);
    let j2 = s.job(None, "job_2").unwrap().unwrap();
    assert_eq!((j2.status.as_str(), j2.attempts), ("cancelled", 0));
    assert!(s.claim_next("host:1:1", 30.0).unwrap().is_none());

    assert!(matches!(
        f.another().cancel(None, "job_1", None).unwrap(),
        Cancel::Requested(_)
    ));
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
        s.cancel(None, "job_2", None).unwrap(),
        Cancel::Finished("cancelled".into())
    );
    assert_eq!(s.cancel(None, "job_9", None).unwrap(), Cancel::Missing);
}

fn a_data_set_in_use_is_not_deleted(f: Fresh) {
    let s = &*f.store;
    s.insert_dataset(&dataset("ds_1", "d.csv"), None).unwrap();
    queue(s, "job_1", "ds_1", None);
    assert_eq!(
        s.delete_dataset(None, "ds_1").unwrap(),
        Deleted::InUse("job_1".into())
    );
    let c = s.claim_next("host:1:0", 30.0).unwrap().unwrap();
    assert_eq!(
        s.delete_dataset(None, "ds_1").unwrap(),
        Deleted::InUse("job_1".into())
    );
    let done = Outcome {
        status: store::FAILED,
        error: Some("bad"),
        model: None,
        model_bytes: 0,
    };
    s.end("job_1", &c.lease, &done, &json!({"type": "status"}))
        .unwrap()
        .unwrap();
    assert_eq!(
        s.job(None, "job_1").unwrap().unwrap().error.as_deref(),
        Some("bad")
    );
    assert_eq!(
        s.delete_dataset(None, "ds_1").unwrap(),
        Deleted::Removed {
            format: "csv".into()
        }
    );
    assert_eq!(s.delete_dataset(None, "ds_1").unwrap(), Deleted::Missing);
    assert!(s.datasets(None).unwrap().is_empty());
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
        other => panic!("a second job for the same key: {other:?}"),
    }
    assert!(matches!(
        queue(s, "job_3", "ds_1", Some("other")),
        Queued::New(_)
    ));
    let ids: Vec<String> = s
        .jobs(None, None)
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, ["job_1", "job_3"]);
    assert!(s.job(None, "job_2").unwrap().is_none());
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
                            model_bytes: 0,
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
    for j in s.jobs(None, None).unwrap() {
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
    // Free again once the first is gone. A process another test spawns at this moment holds
    // a copy of the lock's descriptor between its fork and its exec (flock locks belong to
    // the open file, which the copy shares), so the lock may take a moment to be free: a
    // flake seen once on CI under load.
    let mut tries = 0;
    loop {
        match SqliteStore::open(dir.path()) {
            Ok(_) => break,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("still locked 2 s after the first store was dropped: {e}"),
        }
    }
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
    let j = s.job(None, "job_1").unwrap().unwrap();
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

#[test]
fn a_postgres_store_url_naming_no_database_exited_1_as_if_it_might_come_back() {
    // Regression (a new operator): a database that does not exist (or a wrong password)
    // is the URL's mistake, exit 2 like every configuration mistake, not 1.
    let Some(server) = common::postgres::server() else {
        return;
    };
    let url = server.database();
    let (base, _) = url.rsplit_once('/').unwrap();
    let e = PostgresStore::open(&format!("{base}/no_such_database"))
        .err()
        .expect("refused");
    let text = e.to_string();
    assert_eq!(e.exit_code(), 2, "{text}");
    assert!(
        text.contains("does not exist")
            && text.contains("check the user, password and database in --store"),
        "{text}"
    );
}

fn a_workspace_sees_nothing_of_another_and_idempotency_keys_are_its_own(f: Fresh) {
    let s = &*f.store;
    for ws in ["a", "b"] {
        s.put_workspace(&workspace(ws, None, None)).unwrap();
    }
    // The same idempotency key in two workspaces: two data sets, two jobs.
    assert_eq!(
        s.insert_dataset(&dataset_in("a", "ds_a", "a.csv"), Some("k"))
            .unwrap(),
        Added::New
    );
    assert_eq!(
        s.insert_dataset(&dataset_in("b", "ds_b", "b.csv"), Some("k"))
            .unwrap(),
        Added::New
    );
    assert!(matches!(
        queue_in(s, "a", "job_a", "ds_a", Some("k")),
        Queued::New(_)
    ));
    let Queued::New(first) = queue_in(s, "b", "job_b", "ds_b", Some("k")) else {
        panic!("b's job is its own")
    };
    // Who queued it is in its first event, and on its row.
    let ev: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(ev["by"], "alice (key_1)");
    assert_eq!(
        s.job(None, "job_b").unwrap().unwrap().created_by.as_deref(),
        Some("alice (key_1)")
    );

    let ids = |v: Vec<String>| v;
    assert_eq!(
        ids(s
            .datasets(Some("a"))
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect()),
        ["ds_a"]
    );
    assert_eq!(s.datasets(None).unwrap().len(), 2);
    assert!(s.dataset(Some("a"), "ds_b").unwrap().is_none());
    assert!(s.dataset(Some("b"), "ds_b").unwrap().is_some());
    assert!(s.job(Some("a"), "job_b").unwrap().is_none());
    assert_eq!(
        ids(s
            .jobs(Some("b"), None)
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect()),
        ["job_b"]
    );
    assert!(s.jobs(Some("c"), None).unwrap().is_empty());
    // Changes from another workspace find nothing, exactly as for an id that does not exist.
    assert_eq!(s.cancel(Some("a"), "job_b", None).unwrap(), Cancel::Missing);
    assert_eq!(
        s.delete_dataset(Some("b"), "ds_a").unwrap(),
        Deleted::Missing
    );
    assert_eq!(s.job(None, "job_b").unwrap().unwrap().status, "queued");
    // b cancels its own job; the event says who.
    let Cancel::Cancelled(ev) = s.cancel(Some("b"), "job_b", Some("bob (key_2)")).unwrap() else {
        panic!("b cancels its own job")
    };
    assert!(ev.data.contains("bob (key_2)"), "{}", ev.data);
    assert_eq!(
        s.delete_dataset(Some("b"), "ds_b").unwrap(),
        Deleted::Removed {
            format: "csv".into()
        }
    );

    // A model belongs to its job's workspace.
    let c = s.claim_next("host:1:1", 30.0).unwrap().unwrap();
    assert_eq!(c.id, "job_a");
    s.end(
        "job_a",
        &c.lease,
        &Outcome {
            status: "succeeded",
            error: None,
            model: Some("m_a"),
            model_bytes: 1000,
        },
        &json!({"type": "status", "status": "succeeded"}),
    )
    .unwrap()
    .unwrap();
    assert_eq!(s.model_workspace("m_a").unwrap().as_deref(), Some("a"));
    assert_eq!(s.model_workspace("m_b").unwrap(), None);
}

fn quotas_refuse_the_job_or_the_bytes_past_them_and_count_models(f: Fresh) {
    let s = &*f.store;
    s.put_workspace(&workspace("q", Some(2), Some(10_000)))
        .unwrap();
    // 4321 bytes each: two fit in 10,000, the third does not.
    for id in ["ds_1", "ds_2"] {
        assert_eq!(
            s.insert_dataset(&dataset_in("q", id, "d.csv"), None)
                .unwrap(),
            Added::New
        );
    }
    match s
        .insert_dataset(&dataset_in("q", "ds_3", "d.csv"), None)
        .unwrap()
    {
        Added::OverQuota(q) => assert_eq!(
            (q.quota, q.workspace.as_str(), q.used, q.adds, q.limit),
            ("max_bytes", "q", 8642, 4321, 10_000)
        ),
        other => panic!("past max_bytes: {other:?}"),
    }
    assert!(s.dataset(None, "ds_3").unwrap().is_none());
    // Another workspace is not limited by q's quota.
    assert_eq!(
        s.insert_dataset(&dataset_in("default", "ds_4", "d.csv"), None)
            .unwrap(),
        Added::New
    );

    // Two jobs queued or running at once.
    assert!(matches!(
        queue_in(s, "q", "job_1", "ds_1", None),
        Queued::New(_)
    ));
    assert!(matches!(
        queue_in(s, "q", "job_2", "ds_1", None),
        Queued::New(_)
    ));
    match queue_in(s, "q", "job_3", "ds_1", None) {
        Queued::OverQuota(q) => assert_eq!((q.quota, q.used, q.limit), ("max_jobs", 2, 2)),
        other => panic!("past max_jobs: {other:?}"),
    }
    // A running job counts; a finished one does not.
    let c = s.claim_next("host:1:1", 30.0).unwrap().unwrap();
    assert!(matches!(
        queue_in(s, "q", "job_3", "ds_1", None),
        Queued::OverQuota(_)
    ));
    s.end(
        &c.id,
        &c.lease,
        &Outcome {
            status: "succeeded",
            error: None,
            model: Some("m_1"),
            model_bytes: 1000,
        },
        &json!({"type": "status", "status": "succeeded"}),
    )
    .unwrap()
    .unwrap();
    assert!(matches!(
        queue_in(s, "q", "job_3", "ds_1", None),
        Queued::New(_)
    ));
    // The model's bytes count: 8642 + 1000 of 10,000.
    let u = s.workspaces(Some("q")).unwrap().remove(0);
    assert_eq!((u.jobs, u.bytes, u.keys), (2, 9642, 0));
    assert_eq!(
        (u.workspace.max_jobs, u.workspace.max_bytes),
        (Some(2), Some(10_000))
    );
    let mut small = dataset_in("q", "ds_5", "d.csv");
    small.bytes = 300;
    assert_eq!(s.insert_dataset(&small, None).unwrap(), Added::New);
    small.id = "ds_6".into();
    assert!(matches!(
        s.insert_dataset(&small, None).unwrap(),
        Added::OverQuota(_)
    ));
    // Lifting the quotas lets everything in.
    s.put_workspace(&workspace("q", None, None)).unwrap();
    assert_eq!(s.insert_dataset(&small, None).unwrap(), Added::New);
    assert!(matches!(
        queue_in(s, "q", "job_4", "ds_1", None),
        Queued::New(_)
    ));
    let names: Vec<String> = s
        .workspaces(None)
        .unwrap()
        .into_iter()
        .map(|u| u.workspace.name)
        .collect();
    assert_eq!(names, ["default", "q"]);
}

fn racing_submissions_never_pass_a_workspace_job_quota(f: Fresh) {
    f.store
        .put_workspace(&workspace("race", Some(5), None))
        .unwrap();
    f.store
        .insert_dataset(&dataset_in("race", "ds_1", "d.csv"), None)
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let s = f.another();
            std::thread::spawn(move || {
                (0..5)
                    .filter(|i| {
                        matches!(
                            queue_in(&*s, "race", &format!("job_{t}_{i}"), "ds_1", None),
                            Queued::New(_)
                        )
                    })
                    .count()
            })
        })
        .collect();
    let queued: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(queued, 5);
    assert_eq!(f.store.jobs(Some("race"), None).unwrap().len(), 5);
}

fn keys_are_kept_as_hashes_listed_per_workspace_and_revoked_at_once(f: Fresh) {
    use mdn::serve::auth::{self, Refusal};
    let s = &*f.store;
    // No keys and no token: anyone is a server admin (what loopback-only serving allows).
    assert!(!s.any_keys().unwrap());
    let open = auth::authenticate(s, None, None).unwrap().unwrap();
    assert!(open.is_server_admin() && open.by.is_none());

    let a = auth::new_key(Some("team-a"), "ci", store::Scope::Write);
    let b = auth::new_key(Some("team-b"), "alice", store::Scope::Read);
    let root = auth::new_key(None, "ops", store::Scope::Admin);
    for k in [&a, &b, &root] {
        s.insert_key(&k.row).unwrap();
    }
    assert!(s.any_keys().unwrap());
    // The store has the hash, never the key.
    let row = s.key(&a.row.id).unwrap().unwrap();
    assert_eq!(row, a.row);
    assert!(!a.key.contains(&row.hash));
    let listed: Vec<String> = s
        .keys(Some("team-a"))
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&a.row.id));
    assert_eq!(s.keys(None).unwrap().len(), 3);
    // A key made its workspace.
    assert_eq!(s.workspaces(Some("team-b")).unwrap()[0].keys, 1);

    // Now every request needs a key.
    assert!(matches!(
        auth::authenticate(s, None, None).unwrap(),
        Err(Refusal::Unauthenticated(_))
    ));
    let bearer = |k: &str| format!("Bearer {k}").into_bytes();
    let who = auth::authenticate(s, None, Some(&bearer(&a.key)))
        .unwrap()
        .unwrap();
    assert_eq!(
        (who.scope, who.ws(), who.by.as_deref()),
        (
            store::Scope::Write,
            Some("team-a"),
            Some(format!("ci ({})", a.row.id).as_str())
        )
    );
    assert!(s.key(&a.row.id).unwrap().unwrap().last_used.is_some());
    let admin = auth::authenticate(s, None, Some(&bearer(&root.key)))
        .unwrap()
        .unwrap();
    assert!(admin.is_server_admin());
    // A key with one character changed, another key's id with this secret: refused.
    let mut wrong = a.key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let swapped = format!("mdn_{}_{}", b.row.id, a.key.rsplit('_').next().unwrap());
    for bad in [
        wrong.as_str(),
        swapped.as_str(),
        "mdn_key_0000000000000000_00",
        "secret",
    ] {
        assert_eq!(
            auth::authenticate(s, None, Some(&bearer(bad)))
                .unwrap()
                .unwrap_err(),
            Refusal::Unauthenticated("the bearer key is not one of this server's"),
            "{bad}"
        );
    }

    // Revoking from another workspace finds nothing; from its own, it is refused at once
    // (through another process's handle on the store, too).
    assert!(!s.revoke_key(Some("team-b"), &a.row.id).unwrap());
    assert!(f.another().revoke_key(Some("team-a"), &a.row.id).unwrap());
    assert!(!s.revoke_key(None, &a.row.id).unwrap());
    assert_eq!(
        auth::authenticate(s, None, Some(&bearer(&a.key)))
            .unwrap()
            .unwrap_err(),
        Refusal::Unauthenticated("this key was revoked")
    );
    // Revoked keys still count: a store that had keys never opens up again.
    for k in [&b, &root] {
        s.revoke_key(None, &k.row.id).unwrap();
    }
    assert!(s.any_keys().unwrap());
    assert!(auth::authenticate(s, None, None).unwrap().is_err());
}

/// Runs job `id` (queued with `register`) to success with model `model`; its final event.
fn succeed(s: &dyn Store, id: &str, model: &str, register: Option<&str>) -> Value {
    let request = json!({});
    assert!(matches!(
        s.insert_job(
            &NewJob {
                id,
                workspace: "team",
                created_by: Some("ci (key_1)"),
                dataset: "ds_1",
                val_dataset: None,
                request: &request,
                spec: "{}",
                register,
            },
            None,
        )
        .unwrap(),
        Queued::New(_)
    ));
    let c = s.claim_next("host:1:1", 30.0).unwrap().unwrap();
    assert_eq!(c.id, id);
    let ev = s
        .end(
            id,
            &c.lease,
            &Outcome {
                status: "succeeded",
                error: None,
                model: Some(model),
                model_bytes: 10,
            },
            &json!({"type": "status", "status": "succeeded", "model": model}),
        )
        .unwrap()
        .unwrap();
    serde_json::from_str(&ev.data).unwrap()
}

fn a_job_registers_its_model_and_aliases_move_between_versions(f: Fresh) {
    let s = &*f.store;
    s.put_workspace(&workspace("team", None, None)).unwrap();
    s.insert_dataset(&dataset_in("team", "ds_1", "d.csv"), None)
        .unwrap();
    // A job that asks registers its model when it succeeds, in the same transaction as its
    // final status, whose event says so.
    let ev = succeed(s, "job_1", "m_1", Some("bishop"));
    assert_eq!(ev["registered"], json!({"name": "bishop", "version": 1}));
    let ev = succeed(s, "job_2", "m_2", None);
    assert!(ev.get("registered").is_none());
    assert!(
        s.register("team", "bishop", "m_9", &[], None)
            .unwrap()
            .is_none()
    );
    assert!(
        s.register("other", "bishop", "m_2", &[], None)
            .unwrap()
            .is_none()
    );
    let v2 = s
        .register(
            "team",
            "bishop",
            "m_2",
            &["candidate".into()],
            Some("ops (key_2)"),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (v2.version, v2.job.as_deref(), v2.tags.clone()),
        (2, Some("job_2"), vec!["candidate".to_string()])
    );

    let model_of = |which| s.resolve("team", "bishop", which).unwrap().map(|v| v.model);
    assert_eq!(model_of(Selector::Latest).as_deref(), Some("m_2"));
    assert_eq!(model_of(Selector::Version(1)).as_deref(), Some("m_1"));
    assert_eq!(model_of(Selector::Version(3)), None);
    assert_eq!(model_of(Selector::Alias("production")), None);
    assert!(
        s.set_alias("team", "bishop", "production", 1, Some("ops (key_2)"))
            .unwrap()
    );
    assert!(s.set_alias("team", "bishop", "staging", 2, None).unwrap());
    assert!(
        !s.set_alias("team", "bishop", "production", 9, None)
            .unwrap()
    );
    assert_eq!(
        model_of(Selector::Alias("production")).as_deref(),
        Some("m_1")
    );
    // The alias moves; the version it left keeps its other facts.
    assert!(
        s.set_alias("team", "bishop", "production", 2, None)
            .unwrap()
    );
    assert_eq!(
        model_of(Selector::Alias("production")).as_deref(),
        Some("m_2")
    );
    let versions = s.versions("team", "bishop").unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions[0].aliases.is_empty());
    assert_eq!(versions[1].aliases, ["production", "staging"]);
    assert_eq!(versions[0].created_by.as_deref(), Some("ci (key_1)"));
    assert!(
        s.set_tags("team", "bishop", 1, &["baseline".into()])
            .unwrap()
    );
    assert!(!s.set_tags("team", "bishop", 7, &[]).unwrap());
    assert_eq!(s.versions("team", "bishop").unwrap()[0].tags, ["baseline"]);
    assert!(s.delete_alias("team", "bishop", "staging").unwrap());
    assert!(!s.delete_alias("team", "bishop", "staging").unwrap());
    let listed = s.registry(Some("team")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].latest, listed[0].versions), (2, 2));
    assert_eq!(listed[0].aliases.get("production"), Some(&2));
    assert_eq!(listed[0].aliases.len(), 1);
    // Names are per workspace: another sees none of them.
    assert!(s.registry(Some("default")).unwrap().is_empty());
    assert!(
        s.resolve("default", "bishop", Selector::Latest)
            .unwrap()
            .is_none()
    );
    assert!(
        !s.set_alias("default", "bishop", "production", 1, None)
            .unwrap()
    );
}

fn racing_registrations_number_versions_without_gaps_or_repeats(f: Fresh) {
    f.store
        .put_workspace(&workspace("team", None, None))
        .unwrap();
    f.store
        .insert_dataset(&dataset_in("team", "ds_1", "d.csv"), None)
        .unwrap();
    succeed(&*f.store, "job_1", "m_1", None);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let s = f.another();
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| {
                        s.register("team", "raced", "m_1", &[], None)
                            .unwrap()
                            .unwrap()
                            .version
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut all: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (1..=20).collect::<Vec<u32>>());
}

fn the_same_bytes_uploaded_again_were_stored_again(f: Fresh) {
    let s = &*f.store;
    s.put_workspace(&workspace("team", None, Some(20_000)))
        .unwrap();
    let first = DatasetRow {
        sha256: Some("ab12".into()),
        ..dataset_in("team", "ds_1", "first.csv")
    };
    assert_eq!(s.insert_dataset(&first, None).unwrap(), Added::New);
    let found = |ws: &str, sha: &str, format: &str, columns: &[&str]| {
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        s.dataset_by_content(ws, sha, format, Some(&columns))
            .unwrap()
            .map(|d| d.id)
    };
    assert_eq!(
        found("team", "ab12", "csv", &["x", "t"]).as_deref(),
        Some("ds_1")
    );
    // Only the same bytes, format and column names, in the same workspace.
    assert_eq!(found("team", "ab13", "csv", &["x", "t"]), None);
    assert_eq!(found("team", "ab12", "npy", &["x", "t"]), None);
    assert_eq!(found("team", "ab12", "csv", &["a", "b"]), None);
    assert_eq!(found("default", "ab12", "csv", &["x", "t"]), None);
    // Any columns (None): an upload past its quota, not stored, looks for its bytes alone.
    assert_eq!(
        s.dataset_by_content("team", "ab12", "csv", None)
            .unwrap()
            .map(|d| d.id)
            .as_deref(),
        Some("ds_1")
    );
    // Inserted again (another upload got there between the look and the insert): the
    // first, nothing added, even under another name and with the quota nearly spent.
    let again = DatasetRow {
        sha256: Some("ab12".into()),
        bytes: 16_000,
        ..dataset_in("team", "ds_2", "again.csv")
    };
    assert_eq!(
        s.insert_dataset(&again, None).unwrap(),
        Added::Existing(first.clone())
    );
    assert_eq!(s.datasets(Some("team")).unwrap(), vec![first.clone()]);
    // Other column names (an .npy's, given with it) are another data set.
    let renamed = DatasetRow {
        sha256: Some("ab12".into()),
        columns: vec!["a".into(), "b".into()],
        ..dataset_in("team", "ds_3", "renamed.csv")
    };
    assert_eq!(s.insert_dataset(&renamed, None).unwrap(), Added::New);
    // Data sets stored before the service kept digests match nothing.
    let old = dataset_in("team", "ds_4", "old.csv");
    assert_eq!(s.insert_dataset(&old, None).unwrap(), Added::New);
    assert_eq!(
        s.insert_dataset(
            &DatasetRow {
                id: "ds_5".into(),
                ..old
            },
            None
        )
        .unwrap(),
        Added::New
    );
    // Deleted, it is found no more.
    assert!(matches!(
        s.delete_dataset(None, "ds_1").unwrap(),
        Deleted::Removed { .. }
    ));
    assert_eq!(found("team", "ab12", "csv", &["x", "t"]), None);
    // A job on it (submitted by a client that found it as the same bytes) is not queued.
    assert!(matches!(
        queue_in(s, "team", "job_late", "ds_1", None),
        Queued::NoDataset(ds) if ds == "ds_1"
    ));
    assert!(s.job(None, "job_late").unwrap().is_none());
}

/// Bytes workspace `ws` stores.
fn bytes_of(s: &dyn Store, ws: &str) -> u64 {
    s.workspaces(Some(ws)).unwrap()[0].bytes
}

fn models_and_jobs_could_not_be_deleted(f: Fresh) {
    let s = &*f.store;
    s.put_workspace(&workspace("team", None, None)).unwrap();
    s.insert_dataset(&dataset_in("team", "ds_1", "d.csv"), None)
        .unwrap();
    let before = bytes_of(s, "team");
    // A queued job and a running one are not deleted.
    assert!(matches!(
        queue_in(s, "team", "job_q", "ds_1", None),
        Queued::New(_)
    ));
    assert_eq!(
        s.delete_job(None, "job_q").unwrap(),
        JobDeleted::Unfinished("queued".into())
    );
    let c = s.claim_next("host:1:1", 30.0).unwrap().unwrap();
    assert_eq!(
        s.delete_job(Some("team"), "job_q").unwrap(),
        JobDeleted::Unfinished("running".into())
    );
    s.end(
        "job_q",
        &c.lease,
        &Outcome {
            status: "failed",
            error: Some("boom"),
            model: None,
            model_bytes: 0,
        },
        &json!({"type": "status", "status": "failed"}),
    )
    .unwrap()
    .unwrap();
    // Another workspace's job is not there to delete; a failed one without a model goes.
    assert_eq!(
        s.delete_job(Some("default"), "job_q").unwrap(),
        JobDeleted::Missing
    );
    assert_eq!(
        s.delete_job(Some("team"), "job_q").unwrap(),
        JobDeleted::Removed {
            model: None,
            kept: None
        }
    );
    assert!(s.job(None, "job_q").unwrap().is_none());
    assert!(s.events("job_q", 0).unwrap().is_empty());
    assert_eq!(s.delete_job(None, "job_q").unwrap(), JobDeleted::Missing);

    // A job with its model: both go, and the model's bytes leave the quota's count.
    succeed(s, "job_1", "m_1", None);
    assert_eq!(bytes_of(s, "team"), before + 10);
    assert_eq!(
        s.delete_job(None, "job_1").unwrap(),
        JobDeleted::Removed {
            model: Some("m_1".into()),
            kept: None
        }
    );
    assert_eq!(s.model_workspace("m_1").unwrap(), None);
    assert_eq!(bytes_of(s, "team"), before);

    // A registered model stays with its job's deletion, and is not deleted by itself until
    // its versions are.
    succeed(s, "job_2", "m_2", Some("bishop"));
    s.register("team", "other", "m_2", &[], None)
        .unwrap()
        .unwrap();
    assert_eq!(
        s.delete_model(Some("default"), "m_2").unwrap(),
        ModelDeleted::Missing
    );
    assert_eq!(
        s.delete_model(Some("team"), "m_2").unwrap(),
        ModelDeleted::Registered(vec![("bishop".into(), 1), ("other".into(), 1)])
    );
    assert_eq!(
        s.delete_job(None, "job_2").unwrap(),
        JobDeleted::Removed {
            model: None,
            kept: Some("m_2".into())
        }
    );
    assert_eq!(s.model_workspace("m_2").unwrap().as_deref(), Some("team"));
    // Listed with the versions that hold it, though its job is gone.
    let listed = s.models(Some("team")).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.id.as_str(), m.job.as_str(), m.versions.clone()))
            .collect::<Vec<_>>(),
        [(
            "m_2",
            "job_2",
            vec!["bishop:1".to_string(), "other:1".to_string()]
        )]
    );
    assert!(s.models(Some("default")).unwrap().is_empty());
    assert!(
        s.set_alias("team", "bishop", "production", 1, None)
            .unwrap()
    );
    assert_eq!(
        s.delete_version("team", "bishop", 1).unwrap(),
        Some(vec!["production".to_string()])
    );
    assert_eq!(s.delete_version("team", "bishop", 1).unwrap(), None);
    assert!(
        s.resolve("team", "bishop", Selector::Alias("production"))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.delete_model(None, "m_2").unwrap(),
        ModelDeleted::Registered(vec![("other".into(), 1)])
    );
    assert_eq!(s.delete_version("team", "other", 1).unwrap(), Some(vec![]));
    assert_eq!(s.delete_model(None, "m_2").unwrap(), ModelDeleted::Removed);
    assert_eq!(s.model_workspace("m_2").unwrap(), None);
    assert_eq!(s.delete_model(None, "m_2").unwrap(), ModelDeleted::Missing);
    assert_eq!(bytes_of(s, "team"), before);
    // A name whose versions are all gone is listed with none.
    let listed = s.registry(Some("team")).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.name.as_str(), m.versions))
            .collect::<Vec<_>>(),
        [("bishop", 0), ("other", 0)]
    );
}

fn a_deleted_versions_number_is_never_given_again(f: Fresh) {
    let s = &*f.store;
    s.put_workspace(&workspace("team", None, None)).unwrap();
    s.insert_dataset(&dataset_in("team", "ds_1", "d.csv"), None)
        .unwrap();
    succeed(s, "job_1", "m_1", Some("bishop"));
    succeed(s, "job_2", "m_2", Some("bishop"));
    // The newest version deleted: the next registration is 3, not 2 again (bishop:2 never
    // means two models).
    assert_eq!(s.delete_version("team", "bishop", 2).unwrap(), Some(vec![]));
    let model_of = |which| s.resolve("team", "bishop", which).unwrap().map(|v| v.model);
    assert_eq!(model_of(Selector::Latest).as_deref(), Some("m_1"));
    assert_eq!(model_of(Selector::Version(2)), None);
    let v = s
        .register("team", "bishop", "m_2", &[], None)
        .unwrap()
        .unwrap();
    assert_eq!(v.version, 3);
    // Every version deleted: still counted on.
    s.delete_version("team", "bishop", 1).unwrap().unwrap();
    s.delete_version("team", "bishop", 3).unwrap().unwrap();
    assert_eq!(model_of(Selector::Latest), None);
    let v = s
        .register("team", "bishop", "m_1", &[], None)
        .unwrap()
        .unwrap();
    assert_eq!(v.version, 4);
    let listed = s.registry(Some("team")).unwrap();
    assert_eq!((listed[0].latest, listed[0].versions), (4, 1));
}

#[test]
fn a_sqlite_store_from_before_deletions_numbers_the_next_version_after_its_last() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SqliteStore::open(dir.path()).unwrap();
        s.put_workspace(&workspace("team", None, None)).unwrap();
        s.insert_dataset(&dataset_in("team", "ds_1", "d.csv"), None)
            .unwrap();
        succeed(&s, "job_1", "m_1", Some("bishop"));
        succeed(&s, "job_2", "m_2", Some("bishop"));
    }
    {
        // Back to the schema before version 5: no digests, no counter on names (nor the
        // jobs' validation data sets of version 6).
        let c = rusqlite::Connection::open(dir.path().join("mdn.sqlite")).unwrap();
        c.execute_batch(
            "DROP INDEX datasets_content; DROP INDEX models_job; DROP INDEX versions_model;
             ALTER TABLE datasets DROP COLUMN sha256; ALTER TABLE registry DROP COLUMN last_version;
             ALTER TABLE jobs DROP COLUMN val_dataset;
             PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let s = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(s.dataset(None, "ds_1").unwrap().unwrap().sha256, None);
    // The jobs from before have no validation data set of their own.
    assert_eq!(s.job(None, "job_1").unwrap().unwrap().val_dataset, None);
    let v = s
        .register("team", "bishop", "m_1", &[], None)
        .unwrap()
        .unwrap();
    assert_eq!(v.version, 3);
}

fn a_job_could_not_validate_on_a_data_set_of_its_own(f: Fresh) {
    let s = &*f.store;
    s.put_workspace(&workspace("team", None, None)).unwrap();
    for id in ["ds_1", "ds_val"] {
        s.insert_dataset(&dataset_in("team", id, "d.csv"), None)
            .unwrap();
    }
    let request = json!({"dataset": "ds_1", "val_dataset": "ds_val"});
    let queue = |id: &str, val: &str| {
        s.insert_job(
            &NewJob {
                id,
                workspace: "team",
                created_by: None,
                dataset: "ds_1",
                val_dataset: Some(val),
                request: &request,
                spec: "{}",
                register: None,
            },
            None,
        )
        .unwrap()
    };
    // A validation data set that is not there: nothing queued, and the answer names it.
    assert!(matches!(queue("job_0", "ds_none"), Queued::NoDataset(d) if d == "ds_none"));
    assert!(s.job(None, "job_0").unwrap().is_none());
    assert!(matches!(queue("job_1", "ds_val"), Queued::New(_)));
    let row = s.job(None, "job_1").unwrap().unwrap();
    assert_eq!(row.val_dataset.as_deref(), Some("ds_val"));
    assert_eq!(row.dataset, "ds_1");
    // The queued job holds its validation data set as it holds its data set.
    assert_eq!(
        s.delete_dataset(None, "ds_val").unwrap(),
        Deleted::InUse("job_1".into())
    );
    assert!(matches!(
        s.cancel(None, "job_1", None).unwrap(),
        Cancel::Cancelled(_)
    ));
    assert!(matches!(
        s.delete_dataset(None, "ds_val").unwrap(),
        Deleted::Removed { .. }
    ));
    // A job without one has none.
    assert!(matches!(
        queue_in(s, "team", "job_2", "ds_1", None),
        Queued::New(_)
    ));
    assert_eq!(s.job(None, "job_2").unwrap().unwrap().val_dataset, None);
}
