//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cbor_gen;
pub mod edit;
pub mod oracle;
pub mod pki;
pub mod rfc8949;
