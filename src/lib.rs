//! Keyway: a secure session-control protocol, its reference implementation
//! and its conformance suite. See `spec/` for the normative specification and
//! `ARCHITECTURE.md` for the layers.

pub mod cbor;
pub mod wire;

pub mod cli;
