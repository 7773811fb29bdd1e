//! Progress on stderr: bars on a terminal, plain lines otherwise, nothing with `--quiet`;
//! log lines (`RUST_LOG`) and messages printed around the bars so that neither tears the
//! other; Ctrl-C.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use mdn::job::{JobEvent, Plan};
use mdn::layout::Covariance;
use mdn::train::{EpochReport, TrainEvent};

use super::output::rate;

/// Every bar is drawn through this, so that log lines and messages can be printed above
/// the bars ([`message`]) without tearing them.
static BARS: LazyLock<MultiProgress> = LazyLock::new(MultiProgress::new);

/// A line on stderr, printed above any progress bar. A stderr that is closed (`2>&1 | head`)
/// loses the line; the work goes on.
pub fn message(line: &str) {
    BARS.suspend(|| {
        let _ = writeln!(std::io::stderr(), "{line}");
    });
}

/// Log records go to stderr around the progress bars.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BARS.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `RUST_LOG` (e.g. `info`: what a training job decided; `wgpu=warn`: wgpu's own
/// warnings); by default `default` (mdn's warnings and errors; `mdn serve` adds what the
/// service does). mdn's own warnings read as the command's other warnings do
/// (`warning: ...`); other lines keep their time and source.
pub fn init_logging(default: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .target(env_logger::Target::Pipe(Box::new(LogWriter)))
        .format(|buf, record| {
            if record.level() == log::Level::Warn && record.target().starts_with("mdn") {
                writeln!(buf, "warning: {}", record.args())
            } else {
                writeln!(
                    buf,
                    "[{} {} {}] {}",
                    buf.timestamp(),
                    record.level(),
                    record.target(),
                    record.args()
                )
            }
        })
        .init();
}

/// What a first Ctrl-C says will happen (after "interrupted: ").
static ON_INTERRUPT: std::sync::Mutex<&str> = std::sync::Mutex::new(
    "stopping after this epoch and writing the model, if an epoch of the final model has \
     finished: the best epoch's parameters, or with --epochs the last's (Ctrl-C again to quit now)",
);

/// Set when the user presses Ctrl-C, or the process gets SIGTERM (what `kill`, `timeout`,
/// Slurm's preemption and `docker stop` send): training stops after the current window or
/// epoch and saves the model so far. A second one removes temporary files and exits at once
/// (exit code 130). One flag per process (the handlers are installed once). SIGHUP is left
/// alone: `nohup` ignores it, and a dropped SSH session must not cancel a job that
/// `mdn submit --wait` follows.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let _ = ctrlc::set_handler(move || interrupted(&f));
        #[cfg(unix)]
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])
        {
            let f = flag.clone();
            std::thread::spawn(move || {
                for _ in signals.forever() {
                    interrupted(&f);
                }
            });
        }
        flag
    })
    .clone()
}

/// What a Ctrl-C or SIGTERM does: the first sets `flag` and says what will happen; the
/// second quits at once.
fn interrupted(flag: &AtomicBool) {
    if flag.swap(true, Ordering::SeqCst) {
        mdn::atomic::remove_temporary_files();
        message("interrupted again: quitting now, without writing a model");
        std::process::exit(super::EXIT_INTERRUPTED as i32);
    }
    let what = *ON_INTERRUPT.lock().unwrap_or_else(|e| e.into_inner());
    message(&format!("\ninterrupted: {what}"));
}

/// [`interrupt_flag`], a first Ctrl-C saying `what` will happen instead of `mdn train`'s words.
pub fn interrupt_flag_saying(what: &'static str) -> Arc<AtomicBool> {
    *ON_INTERRUPT.lock().unwrap_or_else(|e| e.into_inner()) = what;
    interrupt_flag()
}

/// A bar on a terminal unless quiet.
fn bar(quiet: bool, bar: impl FnOnce() -> ProgressBar) -> Option<ProgressBar> {
    (!quiet && std::io::stderr().is_terminal()).then(|| BARS.add(bar()))
}

/// A row counter on stderr for long writes: a spinner on a terminal, nothing otherwise.
pub fn row_counter(quiet: bool, what: &str) -> Option<ProgressBar> {
    bar(quiet, || {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg} {human_pos} rows ({per_sec}, {elapsed})")
                .expect("valid template"),
        );
        b.set_message(what.to_string());
        b
    })
}

/// The cross-validation bar of `mdn select`.
pub fn fits_bar(quiet: bool, total: usize) -> Option<ProgressBar> {
    bar(quiet, || {
        let b = ProgressBar::new(total as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} cross-validation [{bar:30}] {pos}/{len} fits ({eta} left) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    })
}

/// The bar of `mdn train --group-by`: groups trained of all.
pub fn groups_bar(quiet: bool, total: usize) -> Option<ProgressBar> {
    bar(quiet, || {
        let b = ProgressBar::new(total as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} groups [{bar:30}] {pos}/{len} ({eta} left) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        b
    })
}

/// The network's inputs for the training banner: a categorical column's run of more than 8
/// indicators (`fuel=diesel, fuel=petrol, ...`) as `fuel=<N categories>` (a date column read
/// as categories made a 30 KB line).
fn inputs_shown(features: &[String]) -> String {
    let column = |f: &String| f.split_once('=').map(|(c, _)| c.to_string());
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < features.len() {
        let run = match column(&features[i]) {
            Some(c) => features[i..]
                .iter()
                .take_while(|f| column(f).as_deref() == Some(c.as_str()))
                .count(),
            None => 1,
        };
        if run > 8 {
            let c = column(&features[i]).unwrap_or_default();
            out.push(format!("{c}=<{run} categories>"));
        } else {
            out.extend(features[i..i + run].iter().cloned());
        }
        i += run;
    }
    out.join(", ")
}

/// ", full covariance" in the training banner, nothing for the default.
fn covariance_note(c: Covariance) -> &'static str {
    match c {
        Covariance::Diagonal => "",
        Covariance::Full => ", full covariance",
    }
}

/// Training progress: a bar on a terminal (epochs, NLLs, rows/s, and within a streamed epoch
/// the share done and an ETA), plain lines otherwise, nothing with --quiet; the job's
/// decisions and warnings as lines.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    /// Notes and warnings are shown unless --quiet.
    talk: bool,
    last: Option<String>,
    epoch_started: std::time::Instant,
    last_line: std::time::Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let bar = bar(quiet, || {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} epoch {pos}/{len} [{bar:30}] {msg} ({elapsed})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            // The spinner and the clock move during a long epoch (a bar that stands still
            // looks like a hang).
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        });
        let now = std::time::Instant::now();
        Progress {
            lines: !quiet && bar.is_none(),
            bar,
            talk: !quiet,
            last: None,
            epoch_started: now,
            last_line: now,
        }
    }

    fn say(&self, line: &str) {
        if self.talk {
            message(line);
        }
    }

    /// What a training job reports.
    pub fn job(&mut self, e: &JobEvent) {
        match e {
            JobEvent::Converting { from, to } => self.say(&format!(
                "converting {} to a temporary .npy ({}) to stream it",
                from.display(),
                to.display()
            )),
            JobEvent::Resuming { epoch, from } => self.say(&format!(
                "resuming after epoch {epoch} from {}",
                from.display()
            )),
            JobEvent::Started(plan) => self.started(plan),
            JobEvent::Train(t) => self.train(t),
            JobEvent::Warning(w) => self.say(&format!("warning: {w}")),
            JobEvent::Note(n) => self.say(n),
            // A note says so when it changes.
            JobEvent::Member { .. } => {}
        }
    }

    fn started(&mut self, p: &Plan) {
        // The bar's length from the start (a streamed run's first pass comes before any
        // epoch).
        if let Some(bar) = &self.bar {
            bar.set_length(p.max_epochs as u64);
        }
        if let Some(note) = &p.device_note {
            self.say(&format!("note: {note}"));
        }
        let shape = format!(
            "[{}] -> [{}], hidden {:?}, K={}{}{}",
            inputs_shown(&p.features),
            p.targets.join(", "),
            p.hidden,
            p.components,
            if p.family.is_gaussian() {
                ""
            } else {
                " Student's t components"
            },
            covariance_note(p.covariance)
        );
        match (p.chunk_rows, p.window_chunks) {
            (Some(chunk), Some(window)) => self.say(&format!(
                "streaming {} ({} rows{}) with the {} backend: {shape}; chunks of {chunk} rows, {window} per shuffle window",
                p.data,
                p.rows,
                match (p.train_rows, p.val_rows) {
                    (Some(t), Some(v)) => format!(": {t} train, {v} validation"),
                    _ => String::new(),
                },
                p.backend
            )),
            _ => match &p.val_data {
                Some(val) => self.say(&format!(
                    "training on {} ({} rows; validation rows from {val}: {}) with the {} backend: {shape}",
                    p.data,
                    p.train_rows.unwrap_or(0),
                    p.val_rows.unwrap_or(0),
                    p.backend
                )),
                None => self.say(&format!(
                    "training on {} ({} rows: {} train, {} validation) with the {} backend: {shape}",
                    p.data,
                    p.rows,
                    p.train_rows.unwrap_or(0),
                    p.val_rows.unwrap_or(0),
                    p.backend
                )),
            },
        }
        let mut chosen = p.adapted.clone();
        if let Some(epochs) = p.cross_validated_epochs {
            chosen.push(format!("{epochs} epochs (cross-validated)"));
        }
        if !chosen.is_empty() {
            let rows = p.train_rows.map_or_else(
                || format!("about {} rows", p.rows),
                |n| format!("{n} training rows"),
            );
            self.say(&format!("defaults for {rows}: {}", chosen.join(", ")));
        }
        self.epoch_started = std::time::Instant::now();
    }

    pub fn train(&mut self, e: &TrainEvent) {
        match e {
            TrainEvent::Epoch(r) => self.epoch(r),
            TrainEvent::Rows { epoch, done, total } => self.rows(*epoch, *done, *total),
            TrainEvent::Recovered { epoch, batch, lr } => {
                let at = batch.map(|b| format!(" at batch {b}")).unwrap_or_default();
                self.say(&format!(
                    "warning: epoch {epoch} produced NaN or infinite values{at}; rolled back and retrying at --lr {lr}"
                ));
            }
        }
    }

    fn rows(&mut self, epoch: usize, done: usize, total: usize) {
        let seconds = self.epoch_started.elapsed().as_secs_f64().max(1e-9);
        let per_sec = done as f64 / seconds;
        let eta = if per_sec > 0.0 {
            (total - done.min(total)) as f64 / per_sec
        } else {
            0.0
        };
        let what = if epoch == 0 {
            "reading the data".to_string()
        } else {
            format!("epoch {epoch}")
        };
        let text = format!(
            "{what}: {:.0}% of {total} rows, {}, ETA {:.0}s",
            100.0 * done as f64 / total.max(1) as f64,
            rate(per_sec),
            eta
        );
        if let Some(bar) = &self.bar {
            bar.set_message(text);
        } else if self.lines && self.last_line.elapsed().as_secs() >= 10 {
            message(&text);
            self.last_line = std::time::Instant::now();
        }
    }

    fn epoch(&mut self, r: &EpochReport) {
        let val = r
            .val_nll
            .map(|v| format!("  val {v:.4}"))
            .unwrap_or_default();
        let best = r
            .best_val_nll
            .map(|b| format!("  best {b:.4} (epoch {})", r.best_epoch))
            .unwrap_or_default();
        let text = format!(
            "train {:.4}{val}{best}  {}",
            r.train_nll,
            rate(r.rows_per_sec)
        );
        if let Some(bar) = &self.bar {
            bar.set_length(r.max_epochs as u64);
            bar.set_position(r.epoch as u64);
            // The time the remaining epochs would take (early stopping may end sooner).
            let eta = match std::time::Duration::try_from_secs_f64(r.eta_seconds) {
                Ok(d) if r.eta_seconds > 0.0 => format!("  ETA {}", indicatif::HumanDuration(d)),
                _ => String::new(),
            };
            bar.set_message(format!("{text}{eta}"));
            self.last = Some(format!("epoch {}/{}  {text}", r.epoch, r.max_epochs));
        } else if self.lines {
            message(&format!("epoch {}/{}  {text}", r.epoch, r.max_epochs));
        }
        self.epoch_started = std::time::Instant::now();
        self.last_line = self.epoch_started;
    }

    /// Clears the bar and leaves the last epoch's line behind.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            BARS.remove(&bar);
            if let Some(last) = self.last.take() {
                message(&last);
            }
        }
    }
}
