//! The `keyway` binary: see `keyway --help`.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(keyway::cli::run(std::env::args_os()))
}
