//! The `mdn` binary: everything is in [`cli`], over the `mdn` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
