//! The `keyway` binary: see `keyway --help`.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(keyway_node::cli::run(std::env::args_os()))
}
