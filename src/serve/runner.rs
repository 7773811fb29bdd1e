//! The service's training side: worker threads (as many as `--max-running`) that take the
//! oldest queued job from the store, run it as the library's [`crate::job::ResolvedJob`]
//! (exactly what `mdn train` runs), and record its progress and outcome. The HTTP side never
//! waits on them: it reads what they wrote to the store and listens to their events.
//!
//! A job checkpoints after every epoch into its folder in the store. A job found `running`
//! when the service starts (the process was killed) is queued again and resumes from its
//! checkpoint, giving the same model bit for bit as an uninterrupted run on the same device.
//! On shutdown, running jobs stop after their current epoch and go back to the queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::store::{self, Progress, Store};
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

/// What the HTTP side and the workers share.
pub struct Shared {
    pub store: Store,
    pub events: tokio::sync::broadcast::Sender<Broadcast>,
    /// Cancel flags of the running jobs.
    cancels: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Set when a job is queued; workers wait on it.
    work: (Mutex<u64>, Condvar),
    pub stopping: AtomicBool,
    /// Training rows done (for /metrics).
    pub rows_trained: AtomicU64,
}

impl Shared {
    pub fn new(store: Store) -> Shared {
        Shared {
            store,
            events: tokio::sync::broadcast::channel(4096).0,
            cancels: Mutex::new(HashMap::new()),
            work: (Mutex::new(0), Condvar::new()),
            stopping: AtomicBool::new(false),
            rows_trained: AtomicU64::new(0),
        }
    }

    /// Stores an event of `job` and tells the listeners.
    pub fn event(&self, job: &str, data: Value) {
        match self.store.append_event(job, &data) {
            Ok(seq) => {
                let mut data = data;
                data["seq"] = Value::from(seq);
                let _ = self.events.send(Broadcast {
                    job: job.to_string(),
                    seq,
                    data: data.to_string().into(),
                });
            }
            Err(e) => log::error!("job {job}: event not stored: {e}"),
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

    /// Stops every worker: running jobs stop after their epoch and are queued again.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
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
}

/// One worker: runs queued jobs until the service stops.
pub fn worker(shared: Arc<Shared>) {
    while !shared.stopping.load(Ordering::Relaxed) {
        let seen = shared.work_count();
        match shared.store.claim_next() {
            Ok(Some((id, spec))) => run_job(&shared, &id, &spec),
            Ok(None) => shared.wait_for_work(seen),
            Err(e) => {
                log::error!("taking the next job failed: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The checkpoint file of job `id`.
pub fn checkpoint_path(store: &Store, id: &str) -> std::path::PathBuf {
    store.job_dir(id).join("checkpoint.json")
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

fn run_job(shared: &Shared, id: &str, spec: &str) {
    let cancel = Arc::new(AtomicBool::new(false));
    shared
        .cancels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string(), cancel.clone());
    // A cancel that arrived between the claim and here.
    if shared.store.cancel_requested(id).unwrap_or(false) || shared.stopping.load(Ordering::Relaxed)
    {
        cancel.store(true, Ordering::Relaxed);
    }
    shared.event(id, json!({"type": "status", "status": store::RUNNING}));
    log::info!("job {id}: running");
    let ckpt = checkpoint_path(&shared.store, id);
    // Messages name the data set as the client did, not by the store's file.
    let dataset = shared
        .store
        .job(id)
        .ok()
        .flatten()
        .and_then(|j| shared.store.dataset(&j.dataset).ok().flatten());
    let rename = |text: String| match &dataset {
        Some(d) => text.replace(
            &shared
                .store
                .dataset_path(&d.id, &d.format)
                .display()
                .to_string(),
            &d.name,
        ),
        None => text,
    };
    let result = (|| {
        let mut job = TrainJob::from_json(spec)?;
        if ckpt.exists() {
            job.resume = Some(ckpt.clone());
        }
        let resolved = job.resolve()?;
        let mut observer = |e: &JobEvent| match e {
            JobEvent::Started(plan) => {
                let _ = shared.store.set_device(id, &plan.backend);
                let mut plan = serde_json::to_value(plan).unwrap_or(Value::Null);
                if let Some(d) = &dataset {
                    plan["data"] = Value::from(d.name.clone());
                }
                shared.event(id, json!({"type": "started", "plan": plan}));
            }
            JobEvent::Resuming { epoch, .. } => {
                shared.event(id, json!({"type": "resuming", "epoch": epoch}));
            }
            JobEvent::Train(TrainEvent::Epoch(r)) => {
                let _ = shared.store.set_progress(
                    id,
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
                );
                shared.rows_trained.fetch_add(
                    (r.rows_per_sec * r.seconds).round() as u64,
                    Ordering::Relaxed,
                );
                shared.event(id, epoch_event(r));
            }
            JobEvent::Train(TrainEvent::Recovered { epoch, batch, lr }) => {
                shared.event(
                    id,
                    json!({"type": "recovered", "epoch": epoch, "batch": batch, "lr": lr}),
                );
            }
            JobEvent::Train(TrainEvent::Rows { .. }) => {}
            JobEvent::Warning(w) => shared.event(
                id,
                json!({"type": "warning", "message": rename(w.to_string())}),
            ),
            JobEvent::Note(n) => shared.event(
                id,
                json!({"type": "note", "message": rename(n.to_string())}),
            ),
            JobEvent::Converting { .. } => shared.event(
                id,
                json!({"type": "note", "message": "converting the CSV to .npy to stream it"}),
            ),
        };
        resolved.run(&mut observer, &cancel)
    })();
    shared
        .cancels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id);
    let stopping = shared.stopping.load(Ordering::Relaxed);
    let user_cancelled = shared.store.cancel_requested(id).unwrap_or(false);
    let model_id = model_id(id);
    let (status, error, model) = match result {
        // The service is stopping: the job goes back to the queue and resumes from its
        // checkpoint when the service starts again.
        Ok(o) if o.interrupted && stopping && !user_cancelled => (store::QUEUED, None, None),
        Err(Error::Interrupted(_)) if stopping && !user_cancelled => (store::QUEUED, None, None),
        Ok(o) if o.interrupted => (store::CANCELLED, None, Some(model_id.as_str())),
        Ok(_) => (store::SUCCEEDED, None, Some(model_id.as_str())),
        Err(Error::Interrupted(_)) => (store::CANCELLED, None, None),
        Err(e) => (store::FAILED, Some(rename(e.to_string())), None),
    };
    let recorded = if status == store::QUEUED {
        shared.store.set_status(id, status)
    } else {
        shared.store.finish(id, status, error.as_deref(), model)
    };
    if let Err(e) = recorded {
        log::error!("job {id}: its outcome ({status}) was not recorded: {e}");
    }
    if status != store::QUEUED {
        let _ = std::fs::remove_dir_all(shared.store.job_dir(id));
    }
    log::info!(
        "job {id}: {status}{}",
        error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    let mut ev = json!({"type": "status", "status": status});
    if let Some(e) = &error {
        ev["error"] = Value::from(e.as_str());
    }
    if let Some(m) = model {
        ev["model"] = Value::from(m);
    }
    if status == store::QUEUED {
        ev["reason"] = Value::from(
            "the service is stopping; the job resumes from its checkpoint when it starts again",
        );
    }
    shared.event(id, ev);
}

/// The id of the model job `id` writes.
pub fn model_id(job: &str) -> String {
    format!("m_{}", job.trim_start_matches("job_"))
}
