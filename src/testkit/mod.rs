//! What tests, the simulator, the fuzz bodies, the benchmarks and the
//! conformance runner share to stand a deployment up (feature `testkit`):
//! its provisioning ([`Plan`], [`Deployment`]), the faults a server can be
//! made to commit ([`Faults`]), and the lab ([`Lab`]), a lossless network
//! of parties stepped by hand and traced.
//!
//! Layer rule: a driver of `core`, like the simulator; nothing in `core`
//! depends on it, and nothing here is part of a real deployment's
//! configuration.
//!
//! The lab is a harness: a test that misuses it (asks for a device that
//! does not exist, a trace step out of range) fails loudly on the spot,
//! which is what it is for; hence the lints allowed below, in this module
//! only.
#![allow(clippy::indexing_slicing, clippy::panic)]

mod lab;
mod provision;

pub use crate::core::Faults;
pub use lab::{
    ClaimStep, Crash, Lab, LabAgent, LabDevice, LabOptions, LabRecorder, LabServer, Node, Step, T0,
    TracingFirewall, principal,
};
pub use provision::{
    Deployment, DeviceKit, DomainKit, ITERATIONS, Plan, SERVICE_SERIAL, agent_addr, domain_of,
    hub_addr, public_ip, recorder_addr, server_addr,
};
