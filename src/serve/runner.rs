//! The service's training side: worker threads (as many as `--max-running`) that claim the
//! oldest queued job from the store, run it as the library's [`crate::job::ResolvedJob`]
//! (exactly what `mdn train` runs), and record its progress and outcome. The HTTP side never
//! waits on them: it reads what they wrote to the store and listens to their events.
//!
//! A claim comes with a lease. The worker renews it with every epoch's progress (which also
//! tells it whether a client cancelled the job, on whichever machine) and from a heartbeat
//! thread between epochs, and every write it makes is fenced on the lease: a worker whose
//! lease ran out (paused, cut off from the database) and whose job another process
//! re-queued writes nothing more and stops. Each attempt checkpoints into its own folder
//! after every epoch (at most every `--checkpoint-seconds`); the next attempt resumes from
//! the newest, giving the same model bit for bit as an uninterrupted run on the same device.
//! On shutdown, running jobs stop after their current epoch and go back to the queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::store::{self, Claim, Files, Outcome, Posted, Progress, Renewal, Store};
use crate::error::Error;
use crate::job::{JobEvent, TrainJob};
use crate::train::TrainEvent;

/// An event of one job, as broadcast to the event streams (also stored).
#[derive(Debug, Clone)]
pub struct Broadcast {
    pub job: String,
    pub seq: u64,
    pub data: Arc<str>,
}

/// How jobs are leased.
#[derive(Debug, Clone, Copy)]
pub struct Leasing {
    /// A lease lasts this long past its last renewal.
    pub seconds: f64,
    /// A job whose worker vanished this many times fails.
    pub max_attempts: u32,
}

/// What the HTTP side and the workers share.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub files: Files,
    pub leasing: Leasing,
    pub events: tokio::sync::broadcast::Sender<Broadcast>,
    /// Events reach this process through the store's notifications (PostgreSQL), not
    /// straight from the writer.
    remote_events: AtomicBool,
    /// Cancel flags of the jobs running here.
    cancels: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Bumped when a job is queued; workers wait on it.
    work: (Mutex<u64>, Condvar),
    pub stopping: AtomicBool,
    /// Set (true) when the service stops: open event streams end on it, so that a client
    /// following one does not hold the stopping server up.
    closing: tokio::sync::watch::Sender<bool>,
    /// Stop the workers once the queue is empty and none of them has a job.
    pub exit_when_idle: AtomicBool,
    /// Workers claiming or running a job.
    busy: AtomicUsize,
    /// Training rows done (for /metrics).
    pub rows_trained: AtomicU64,
    /// `host:pid`, the first part of every worker's name.
    process: String,
}

impl Shared {
    pub fn new(store: Arc<dyn Store>, files: Files, leasing: Leasing) -> Shared {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        Shared {
            store,
            files,
            leasing,
            events: tokio::sync::broadcast::channel(4096).0,
            remote_events: AtomicBool::new(false),
            cancels: Mutex::new(HashMap::new()),
            work: (Mutex::new(0), Condvar::new()),
            stopping: AtomicBool::new(false),
            closing: tokio::sync::watch::channel(false).0,
            exit_when_idle: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            rows_trained: AtomicU64::new(0),
            process: format!("{host}:{}", std::process::id()),
        }
    }

    /// Hears what other processes do through the store, when it can tell (PostgreSQL).
    pub fn listen(self: &Arc<Self>) -> crate::Result<()> {
        let weak = Arc::downgrade(self);
        let remote = self.store.listen(Arc::new(move |n| {
            let Some(s) = weak.upgrade() else { return };
            match n {
                store::Notice::Event(p) => s.broadcast(p),
                store::Notice::Queued => s.notify(),
            }
        }))?;
        self.remote_events.store(remote, Ordering::Relaxed);
        Ok(())
    }

    /// Whether other processes share the store (PostgreSQL): then leases, not start-up,
    /// decide which running jobs are orphans.
    pub fn shares_store(&self) -> bool {
        self.remote_events.load(Ordering::Relaxed)
    }

    fn broadcast(&self, p: Posted) {
        let _ = self.events.send(Broadcast {
            job: p.job,
            seq: p.seq,
            data: p.data.into(),
        });
    }

    /// Tells this process's listeners about an event the store took (with PostgreSQL the
    /// notification does, for every process).
    pub fn published(&self, p: Posted) {
        if !self.remote_events.load(Ordering::Relaxed) {
            self.broadcast(p);
        }
    }

    /// Wakes a worker: a job was queued.
    pub fn notify(&self) {
        let (lock, cv) = &self.work;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        cv.notify_all();
    }

    fn wait_for_work(&self, seen: u64) {
        let (lock, cv) = &self.work;
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        if *guard == seen && !self.stopping.load(Ordering::Relaxed) {
            let _ = cv.wait_timeout(guard, Duration::from_millis(500));
        }
    }

    fn work_count(&self) -> u64 {
        *self.work.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks running job `id` to stop after its current epoch (true if it is running here).
    pub fn cancel_running(&self, id: &str) -> bool {
        let map = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(id) {
            Some(flag) => {
                flag.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Completes once the service is stopping ([`Shared::stop`]; at once if it already is).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }

    /// Stops every worker: running jobs stop after their epoch and are queued again.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.closing.send_replace(true);
        for flag in self
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            flag.store(true, Ordering::Relaxed);
        }
        self.work.1.notify_all();
    }

    /// Re-queues (or fails) the jobs whose lease ran out, with their events; `all`: every
    /// running job (a single-process store just opened).
    pub fn requeue_expired(&self, all: bool) {
        match self.store.requeue_expired(self.leasing.max_attempts, all) {
            Ok(posted) => {
                for p in posted {
                    // The event in words ("queued again: its worker stopped ..."), not its JSON.
                    let ev: Value = serde_json::from_str(&p.data).unwrap_or(Value::Null);
                    let what = match ev["status"].as_str() {
                        Some("queued") => "queued again",
                        Some(other) => other,
                        None => "changed",
                    };
                    let why = ev["reason"]
                        .as_str()
                        .or(ev["error"].as_str())
                        .unwrap_or("its worker vanished");
                    log::warn!("job {}: {what}: {why}", p.job);
                    self.published(p);
                    self.notify();
                }
            }
            Err(e) => log::error!("re-queuing jobs whose lease expired failed: {e}"),
        }
    }
}

/// One worker: runs queued jobs until the service stops (or, with `exit_when_idle`, until
/// there is nothing left to run).
pub fn worker(shared: Arc<Shared>, index: usize) {
    let name = format!("{}:{index}", shared.process);
    let mut failing = false;
    while !shared.stopping.load(Ordering::Relaxed) {
        let seen = shared.work_count();
        shared.busy.fetch_add(1, Ordering::SeqCst);
        if shared.stopping.load(Ordering::Relaxed) {
            shared.busy.fetch_sub(1, Ordering::SeqCst);
            break;
        }
        let claimed = shared.store.claim_next(&name, shared.leasing.seconds);
        match claimed {
            Ok(Some(c)) => {
                failing = false;
                run_job(&shared, &c, &name);
                shared.busy.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(None) => {
                failing = false;
                let others = shared.busy.fetch_sub(1, Ordering::SeqCst) - 1;
                if others == 0 && shared.exit_when_idle.load(Ordering::Relaxed) {
                    log::debug!("the queue is empty: stopping (--exit-when-idle)");
                    shared.stop();
                    break;
                }
                shared.wait_for_work(seen);
            }
            Err(e) => {
                shared.busy.fetch_sub(1, Ordering::SeqCst);
                // Once per outage, not once a second.
                if !failing {
                    log::error!("taking the next job failed ({e}); trying again every second");
                }
                failing = true;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn epoch_event(r: &crate::train::EpochReport) -> Value {
    json!({
        "type": "epoch",
        "epoch": r.epoch,
        "max_epochs": r.max_epochs,
        "train_nll": r.train_nll,
        "val_nll": r.val_nll,
        "best_val_nll": r.best_val_nll,
        "best_epoch": r.best_epoch,
        "rows_per_sec": r.rows_per_sec,
        "seconds": r.seconds,
        "eta_seconds": r.eta_seconds,
    })
}

/// One attempt at a job: what its writes need, and what they found.
struct Attempt<'a> {
    shared: &'a Shared,
    claim: &'a Claim,
    /// Stop after the epoch (a client's cancel, the service stopping, the lease lost).
    cancel: Arc<AtomicBool>,
    /// Another process re-queued the job: write nothing more.
    lost: Arc<AtomicBool>,
    /// Writes to the store are failing (said once, and again when they work again).
    failing: AtomicBool,
}

impl Attempt<'_> {
    fn renewal(&self, r: crate::Result<Renewal>) {
        match self.store_ok(r) {
            Some(Renewal::Held {
                cancel_requested: true,
            }) => self.cancel.store(true, Ordering::Relaxed),
            Some(Renewal::Lost) => self.lose(),
            Some(Renewal::Held { .. }) | None => {}
        }
    }

    /// The value of a store call; a failure is logged once per outage (a full disk, the
    /// database away), not once per epoch.
    fn store_ok<T>(&self, r: crate::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::warn!(
                        "job {}: the store records its progress again",
                        self.claim.id
                    );
                }
                Some(v)
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::error!(
                        "job {}: the store does not take its progress ({e}); training goes on, and so do the tries",
                        self.claim.id
                    );
                }
                None
            }
        }
    }

    fn lose(&self) {
        if !self.lost.swap(true, Ordering::Relaxed) {
            log::warn!(
                "job {}: this worker lost its lease (it was out of touch longer than --lease-seconds and the job was queued again); stopping without writing anything more",
                self.claim.id
            );
        }
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Stores an event, fenced on the lease.
    fn event(&self, data: Value) {
        if self.lost.load(Ordering::Relaxed) {
            return;
        }
        let r = self
            .shared
            .store
            .append_event(&self.claim.id, Some(&self.claim.lease), &data);
        match self.store_ok(r) {
            Some(Some(p)) => self.shared.published(p),
            Some(None) => self.lose(),
            None => {}
        }
    }
}

/// Renews the lease every third of its length until told to stop (dropping `stop`'s sender).
fn heartbeat(attempt: &Attempt, stop: std::sync::mpsc::Receiver<()>) {
    let every = Duration::from_secs_f64((attempt.shared.leasing.seconds / 3.0).max(0.05));
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        if attempt.lost.load(Ordering::Relaxed) {
            return;
        }
        attempt.renewal(attempt.shared.store.renew(
            &attempt.claim.id,
            &attempt.claim.lease,
            attempt.shared.leasing.seconds,
        ));
    }
}

fn run_job(shared: &Shared, claim: &Claim, worker: &str) {
    let id = claim.id.as_str();
    let attempt = Attempt {
        shared,
        claim,
        cancel: Arc::new(AtomicBool::new(false)),
        lost: Arc::new(AtomicBool::new(false)),
        failing: AtomicBool::new(false),
    };
    shared
        .cancels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string(), attempt.cancel.clone());
    let job_row = shared.store.job(None, id).ok().flatten();
    // A cancel that arrived before the claim.
    if job_row.as_ref().is_some_and(|j| j.cancel_requested)
        || shared.stopping.load(Ordering::Relaxed)
    {
        attempt.cancel.store(true, Ordering::Relaxed);
    }
    attempt.event(json!({"type": "status", "status": store::RUNNING, "worker": worker}));
    log::info!(
        "job {id}: running (attempt {}, worker {worker})",
        claim.attempt
    );
    let (stop_heartbeat, stopped) = std::sync::mpsc::channel::<()>();
    let (result, ckpt_dir) = std::thread::scope(|scope| {
        scope.spawn(|| heartbeat(&attempt, stopped));
        let out = train(&attempt, job_row.as_ref());
        drop(stop_heartbeat);
        out
    });
    shared
        .cancels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id);
    if attempt.lost.load(Ordering::Relaxed) {
        // The attempt that replaced this one owns the job now. This one's folder stays (the
        // new attempt may be resuming from it) until the job finishes.
        return;
    }
    let stopping = shared.stopping.load(Ordering::Relaxed);
    let user_cancelled = shared
        .store
        .job(None, id)
        .ok()
        .flatten()
        .is_some_and(|j| j.cancel_requested);
    let model_id = model_id(id);
    let (status, error, model) = match result {
        // The service is stopping: the job goes back to the queue and resumes from its
        // checkpoint when a worker takes it again.
        Ok(o) if o.interrupted && stopping && !user_cancelled => (store::QUEUED, None, None),
        Err(Error::Interrupted(_)) if stopping && !user_cancelled => (store::QUEUED, None, None),
        Ok(o) if o.interrupted => (store::CANCELLED, None, Some(model_id.as_str())),
        Ok(_) => (store::SUCCEEDED, None, Some(model_id.as_str())),
        Err(Error::Interrupted(_)) => (store::CANCELLED, None, None),
        Err(e) => (store::FAILED, Some(e), None),
    };
    // Whose the failure is: the job's data or options (what exits 2 on the command line),
    // or the service's.
    let cause = error.as_ref().map(|e| {
        if e.exit_code() == 2 {
            "input"
        } else {
            "service"
        }
    });
    let error = error.map(|e| {
        if e.is_disk_full() {
            // Without the store's paths: the client cannot see them.
            "the service's store is full (no space left on its disk), so the job could not write its model; free space there and submit it again".to_string()
        } else {
            super::api::option_names(&rename(shared, job_row.as_ref(), e.to_string()))
        }
    });
    let mut ev = json!({"type": "status", "status": status});
    if let Some(e) = &error {
        ev["error"] = Value::from(e.as_str());
    }
    if let Some(c) = cause {
        ev["cause"] = Value::from(c);
    }
    if let Some(m) = model {
        ev["model"] = Value::from(m);
    }
    if status == store::QUEUED {
        ev["reason"] = Value::from(
            "the service is stopping; the job resumes from its checkpoint when a worker takes it again",
        );
    }
    let model_bytes = std::fs::metadata(ckpt_dir.join("model.json")).map_or(0, |m| m.len());
    let outcome = Outcome {
        status,
        error: error.as_deref(),
        model,
        model_bytes,
    };
    // The model this attempt wrote in its own folder goes into place just before the outcome
    // is recorded (so that whoever hears of the outcome finds the model), and only while
    // this worker still holds the lease: a worker that lost it never replaces the model of
    // the attempt that replaced it.
    if let Some(m) = model {
        if let Ok(Renewal::Lost) = shared.store.renew(id, &claim.lease, shared.leasing.seconds) {
            attempt.lose();
            return;
        }
        let final_path = shared.files.model_path(m);
        if let Err(e) = std::fs::rename(ckpt_dir.join("model.json"), &final_path) {
            log::error!("job {id}: its model could not be moved into the store: {e}");
        }
        match persist(shared, claim, "its model", || {
            shared.files.publish(&final_path)
        }) {
            Some(Some(())) => {}
            Some(None) => {
                attempt.lose();
                return;
            }
            None => return,
        }
    }
    // Until the store records the outcome (a full disk, the database away), or the lease is
    // lost to a process that re-queued the job, or this process stops: a job is never left
    // `running` without a worker for longer than its lease.
    match persist(shared, claim, &format!("its outcome ({status})"), || {
        shared.store.end(id, &claim.lease, &outcome, &ev)
    }) {
        Some(Some(Some(p))) => shared.published(p),
        Some(Some(None)) | Some(None) => {
            attempt.lose();
            return;
        }
        None => return,
    }
    if status != store::QUEUED {
        shared.files.remove_dir(&shared.files.job_dir(id));
    }
    log::info!(
        "job {id}: {status}{}",
        error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
}

/// Tries `f` every second until it succeeds (Some(Some(value))), the lease is lost to a
/// process that re-queued the job (Some(None)), or this process stops (None: the lease runs
/// out and the job goes back to the queue). Said once, and again when it worked.
fn persist<T>(
    shared: &Shared,
    claim: &Claim,
    what: &str,
    mut f: impl FnMut() -> crate::Result<T>,
) -> Option<Option<T>> {
    let id = &claim.id;
    let mut said = false;
    loop {
        match f() {
            Ok(v) => {
                if said {
                    log::warn!("job {id}: {what} is recorded now");
                }
                return Some(Some(v));
            }
            Err(e) => {
                if !said {
                    log::error!(
                        "job {id}: {what} is not recorded yet ({e}); trying again every second"
                    );
                    said = true;
                }
                if shared.stopping.load(Ordering::Relaxed) {
                    log::error!(
                        "job {id}: stopping before {what} was recorded; the job goes back to the queue when its lease expires"
                    );
                    return None;
                }
                std::thread::sleep(Duration::from_secs(1));
                if let Ok(Renewal::Lost) =
                    shared.store.renew(id, &claim.lease, shared.leasing.seconds)
                {
                    return Some(None);
                }
            }
        }
    }
}

/// Messages name the data sets as the client did, not by the store's files.
fn rename(shared: &Shared, job: Option<&store::JobRow>, mut text: String) -> String {
    let ids = job
        .into_iter()
        .flat_map(|j| std::iter::once(&j.dataset).chain(&j.val_dataset));
    for id in ids {
        if let Some(d) = shared.store.dataset(None, id).ok().flatten() {
            let path = shared.files.dataset_path(&d.id, &d.format);
            text = text.replace(&path.display().to_string(), &d.name);
        }
    }
    text
}

/// Runs the attempt's training job; returns its outcome and the attempt's checkpoint folder.
fn train(
    attempt: &Attempt,
    job_row: Option<&store::JobRow>,
) -> (crate::Result<crate::job::Outcome>, std::path::PathBuf) {
    let shared = attempt.shared;
    let claim = attempt.claim;
    let id = claim.id.as_str();
    let ckpt = shared.files.checkpoint_path(id, claim.attempt);
    let ckpt_dir = ckpt.parent().expect("a folder").to_path_buf();
    let dataset = job_row.and_then(|j| shared.store.dataset(None, &j.dataset).ok().flatten());
    let val_dataset = job_row
        .and_then(|j| j.val_dataset.as_ref())
        .and_then(|id| shared.store.dataset(None, id).ok().flatten());
    let result = (|| {
        let mut job = TrainJob::from_json(&claim.spec)?;
        std::fs::create_dir_all(&ckpt_dir).map_err(|e| Error::io(&ckpt_dir, e))?;
        // The data set where this process sees it (the files may be mounted elsewhere than
        // where the job was submitted, or cached from an object store).
        if let Some(d) = &dataset {
            let path = shared.files.dataset_path(&d.id, &d.format);
            super::api::fetch_dataset(&shared.files, &path)?;
            job.data = Some(path);
        }
        if let Some(d) = &val_dataset {
            let path = shared.files.dataset_path(&d.id, &d.format);
            super::api::fetch_dataset(&shared.files, &path)?;
            job.val = Some(path);
        }
        job.resume = match shared.files.latest_checkpoint(id, claim.attempt)? {
            Some(p) => Some(p),
            None => {
                // A store from before attempts had folders.
                let old = shared.files.job_dir(id).join("checkpoint.json");
                old.exists().then_some(old)
            }
        };
        job.checkpoint = Some(ckpt.clone());
        // The model goes to the attempt's folder first (see `run_job`).
        job.out = Some(ckpt_dir.join("model.json"));
        let resolved = job.resolve()?;
        // Each checkpoint the run writes goes to the object store after its epoch.
        let published = std::cell::Cell::new(None);
        let publish_checkpoint = || {
            let written = std::fs::metadata(&ckpt).and_then(|m| m.modified()).ok();
            if written.is_some()
                && written != published.get()
                && attempt.store_ok(shared.files.publish(&ckpt)).is_some()
            {
                published.set(written);
            }
        };
        // An ensemble's member whose epochs these are.
        let mut member: Option<usize> = None;
        let mut observer = |e: &JobEvent| match e {
            JobEvent::Member { index, .. } => member = Some(*index),
            JobEvent::Started(plan) => {
                if let Ok(false) = shared.store.set_device(id, &claim.lease, &plan.backend) {
                    attempt.lose();
                }
                let mut plan = serde_json::to_value(plan).unwrap_or(Value::Null);
                if let Some(d) = &dataset {
                    plan["data"] = Value::from(d.name.clone());
                }
                if let Some(d) = &val_dataset {
                    plan["val_data"] = Value::from(d.name.clone());
                }
                attempt.event(json!({"type": "started", "plan": plan}));
            }
            JobEvent::Resuming { epoch, .. } => {
                attempt.event(json!({"type": "resuming", "epoch": epoch}));
            }
            JobEvent::Train(TrainEvent::Epoch(r)) => {
                if attempt.lost.load(Ordering::Relaxed) {
                    return;
                }
                attempt.renewal(shared.store.set_progress(
                    id,
                    &claim.lease,
                    shared.leasing.seconds,
                    &Progress {
                        epoch: r.epoch,
                        max_epochs: r.max_epochs,
                        train_nll: r.train_nll,
                        val_nll: r.val_nll,
                        best_epoch: r.best_epoch,
                        best_val_nll: r.best_val_nll,
                        rows_per_sec: r.rows_per_sec,
                        eta_seconds: r.eta_seconds,
                    },
                ));
                publish_checkpoint();
                shared.rows_trained.fetch_add(
                    (r.rows_per_sec * r.seconds).round() as u64,
                    Ordering::Relaxed,
                );
                let mut event = epoch_event(r);
                if let Some(i) = member {
                    event["member"] = json!(i + 1);
                }
                attempt.event(event);
            }
            JobEvent::Train(TrainEvent::Recovered { epoch, batch, lr }) => {
                attempt
                    .event(json!({"type": "recovered", "epoch": epoch, "batch": batch, "lr": lr}));
            }
            JobEvent::Train(TrainEvent::Rows { .. }) => {}
            // In the API's words: options by their names in the job, not as flags.
            JobEvent::Warning(w) => attempt.event(json!({
                "type": "warning",
                "message": super::api::option_names(&rename(shared, job_row, w.to_string()))
            })),
            JobEvent::Note(n) => attempt.event(json!({
                "type": "note",
                "message": super::api::option_names(&rename(shared, job_row, n.to_string()))
            })),
            JobEvent::Converting { .. } => attempt.event(
                json!({"type": "note", "message": "converting the CSV to .npy to stream it"}),
            ),
        };
        let out = resolved.run(&mut observer, &attempt.cancel);
        // The one written when the run stopped.
        if !attempt.lost.load(Ordering::Relaxed) {
            publish_checkpoint();
        }
        out
    })();
    (result, ckpt_dir)
}

/// The id of the model job `id` writes.
pub fn model_id(job: &str) -> String {
    format!("m_{}", job.trim_start_matches("job_"))
}
