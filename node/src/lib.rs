//! Keyway's I/O, beside the sans-IO protocol crate `keyway` (as quinn is
//! beside quinn-proto): everything that touches files, terminals, and
//! later sockets, clocks and the operating system's generator.
//!
//! - [`cli`]: the `keyway` command line (the binary is `src/main.rs`);
//! - [`vectors_dir`]: the golden vectors written to and checked in a
//!   directory.
//!
//! The tokio drivers, the store and the firewall backends arrive here with
//! their issues. The protocol crate never imports this one.

pub mod cli;
pub mod vectors_dir;
