//! A worker binary that serves the built-in jobs and this crate's jobs: all a job crate needs.

use examples as _; // link the crate so its jobs register

fn main() -> std::process::ExitCode {
    worker::main()
}
