//! Where a server sends what is not for its own domain (F8, KW-ROUTE-001).

use std::collections::BTreeMap;

use super::Addr;
use crate::wire::{Domain, Principal, Transport};

/// The next hop toward a domain: a server's address, the transport to
/// reach it over, and its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its address.
    pub addr: Addr,
    /// The transport requests go over.
    pub transport: Transport,
    /// Its account.
    pub account: Principal,
}

/// A server's routing table: per domain, and a default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerDirectory {
    /// Next hop per destination domain.
    pub routes: BTreeMap<Domain, Route>,
    /// Next hop for every other domain.
    pub default: Option<Route>,
}

impl ServerDirectory {
    /// The next hop toward `domain`.
    pub fn next_hop(&self, domain: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|(d, _)| d.as_str() == domain)
            .map(|(_, r)| r)
            .or(self.default.as_ref())
    }
}
