//! The `worker` binary: a worker node serving the built-in jobs (CONTRACT.md, "Commands").

fn main() -> std::process::ExitCode {
    worker::main()
}
