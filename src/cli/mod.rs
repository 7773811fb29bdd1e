//! The `mdn` command line: a thin layer over the library. [`args`] parses, one module per
//! group of commands runs them ([`train`]: train and select; [`model`]: eval, predict,
//! sample, plot, info; [`tools`]: devices, check, bench, convert, generate; [`serve`]: the training service; [`client`]: submit, jobs, status, cancel, fetch), [`output`]
//! prints results and [`progress`] shows progress, logs and handles Ctrl-C. This is the only
//! place that turns errors into messages and exit codes: 2 for input the user can fix, 1 for
//! anything else, 130 for a run stopped by Ctrl-C (its best model is still written).

mod args;
mod client;
mod model;
mod output;
mod progress;
mod serve;
mod serve_admin;
mod tools;
mod train;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use args::{Cli, Command};
use mdn::{Error, Result};

/// What a command that finished asks the process to exit with.
pub enum Exit {
    Success,
    /// Stopped by Ctrl-C after writing what it had.
    Interrupted,
}

/// Exit code of a run stopped by Ctrl-C (as a shell reports SIGINT: 128 + 2).
pub const EXIT_INTERRUPTED: u8 = 130;

pub fn main() -> ExitCode {
    quiet_device_select();
    // Negative numbers are values (`--lr -0.001` is then refused with --lr's own message),
    // never taken for options.
    let command = Cli::command().mut_subcommands(|s| s.allow_negative_numbers(true));
    let matches = command.clone().get_matches();
    if let (Some(("train", m)), Some(train)) =
        (matches.subcommand(), command.find_subcommand("train"))
        && let Err(e) = args::check_resume(train, m)
    {
        progress::message(&format!("error: {e}"));
        return ExitCode::from(e.exit_code() as u8);
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // A service's log says what it did (uploads, jobs, deletions, by whom) by default.
    progress::init_logging(if matches!(&cli.command, Command::Serve(_)) {
        "mdn=warn,mdn::serve=info"
    } else {
        "mdn=warn"
    });
    let result: Result<Exit> = match cli.command {
        Command::Train(a) => train::train(a),
        Command::Select(a) => train::select(a),
        Command::Eval(a) => model::eval(a).map(|_| Exit::Success),
        Command::Predict(a) => model::predict(a).map(|_| Exit::Success),
        Command::Sample(a) => model::sample(a).map(|_| Exit::Success),
        Command::Plot(a) => model::plot(a).map(|_| Exit::Success),
        Command::Info(a) => model::info(a).map(|_| Exit::Success),
        Command::Export(a) => model::export(a).map(|_| Exit::Success),
        Command::Devices(a) => tools::devices(a).map(|_| Exit::Success),
        Command::Check(a) => tools::check(a).map(|_| Exit::Success),
        Command::Bench(a) => tools::bench(a).map(|_| Exit::Success),
        Command::Convert(a) => tools::convert(a).map(|_| Exit::Success),
        Command::Generate(a) => tools::generate(a).map(|_| Exit::Success),
        Command::Serve(a) => match a.admin {
            Some(admin) => serve_admin::run(admin).map(|_| Exit::Success),
            None => serve::serve(a).map(|_| Exit::Success),
        },
        Command::Submit(a) => client::submit(a),
        Command::Jobs(a) => client::jobs(a).map(|_| Exit::Success),
        Command::Status(a) => client::status(a).map(|_| Exit::Success),
        Command::Cancel(a) => client::cancel(a).map(|_| Exit::Success),
        Command::Fetch(a) => client::fetch(a).map(|_| Exit::Success),
        Command::Models(a) => client::models(a).map(|_| Exit::Success),
        Command::Delete(a) => client::delete(a).map(|_| Exit::Success),
        Command::Datasets(a) => client::datasets(a).map(|_| Exit::Success),
    };
    match result {
        Ok(Exit::Success) => ExitCode::SUCCESS,
        Ok(Exit::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            progress::message(&format!("error: {e}"));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Mesa's Vulkan device-select layer prints "error: XDG_RUNTIME_DIR is invalid or not set in
/// the environment." on every Vulkan instance when there is no desktop session, which reads
/// as mdn's own error. It only reorders adapters, which mdn picks itself, so it is turned off
/// (`NODEVICE_SELECT=1`) unless the user set that variable. Done first in `main`, while the
/// process has one thread, so that changing the environment is sound.
fn quiet_device_select() {
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: no other thread exists yet to read the environment concurrently.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}
