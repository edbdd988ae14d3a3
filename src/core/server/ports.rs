//! The firewall's public addresses (KW-SM-012, KW-FW-006): each internal
//! media address is mapped to one public address, kept across sessions
//! (an endpoint-independent mapping) and across restarts (it is in the
//! store), so that a party is seen at the same address by every peer.
//! The lowest free port is handed out; when none is free, a mapping no
//! session uses is given up. (A port is freed only then, when every port
//! is mapped, so lowest-first hands ports out in turn, as round robin
//! would, without a cursor to keep.) Every operation is logarithmic in the number
//! of mappings.

use std::collections::{BTreeMap, BTreeSet};

use super::FirewallPlan;
use crate::core::Addr;
use crate::core::store::StoreWrite;

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct PortMap {
    /// The public address, when the domain has a firewall.
    public_ip: Option<std::net::IpAddr>,
    public_of: BTreeMap<Addr, Addr>,
    /// Ports of the range not mapped.
    free: BTreeSet<u16>,
    /// Live sessions using each mapped internal address.
    users: BTreeMap<Addr, u32>,
    /// Mapped internal addresses no session uses: given up first.
    idle: BTreeSet<Addr>,
}

impl PortMap {
    pub fn new(plan: Option<&FirewallPlan>) -> Self {
        let free = plan
            .map(|p| {
                (0..p.ports.max(1))
                    .map(|i| p.first_port.saturating_add(i))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            public_ip: plan.map(|p| p.public_ip),
            free,
            ..Self::default()
        }
    }

    /// The public address of `internal`, if mapped.
    pub fn get(&self, internal: &Addr) -> Option<Addr> {
        self.public_of.get(internal).copied()
    }

    /// Restores a mapping from the store.
    pub fn restore(&mut self, internal: Addr, public: Addr) {
        self.free.remove(&public.port());
        self.public_of.insert(internal, public);
        if !self.users.contains_key(&internal) {
            self.idle.insert(internal);
        }
    }

    /// The public address of `internal`, mapping it if it is not yet;
    /// the writes that make a change durable go to `writes`.
    pub fn map(&mut self, internal: Addr, writes: &mut Vec<StoreWrite>) -> Option<Addr> {
        if let Some(public) = self.get(&internal) {
            return Some(public);
        }
        let ip = self.public_ip?;
        if self.free.is_empty() {
            // Every port is mapped: give up a mapping no session uses.
            let idle = self.idle.pop_first()?;
            if let Some(public) = self.public_of.remove(&idle) {
                self.free.insert(public.port());
                writes.push(StoreWrite::DeleteMapping(idle));
            }
        }
        let port = self.free.pop_first()?;
        let public = Addr::new(ip, port);
        self.public_of.insert(internal, public);
        self.idle.insert(internal);
        writes.push(StoreWrite::PutMapping { internal, public });
        Some(public)
    }

    /// A session uses `internal`'s mapping.
    pub fn acquire(&mut self, internal: Addr) {
        *self.users.entry(internal).or_insert(0) += 1;
        self.idle.remove(&internal);
    }

    /// A session no longer uses it.
    pub fn release(&mut self, internal: Addr) {
        if let Some(n) = self.users.get_mut(&internal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.users.remove(&internal);
                if self.public_of.contains_key(&internal) {
                    self.idle.insert(internal);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{FirewallLink, FirewallPlan};
    use crate::wire::Transport;

    fn plan(ports: u16) -> FirewallPlan {
        FirewallPlan {
            agent: FirewallLink {
                addr: "192.0.2.1:7000".parse().unwrap(),
                transport: Transport::Udp,
            },
            public_ip: "198.51.100.1".parse().unwrap(),
            first_port: 20_000,
            ports,
        }
    }

    fn addr(last: u8) -> Addr {
        Addr::new([10, 0, 0, last].into(), 40_000)
    }

    /// KW-SM-012: one public address per internal address, kept; a port is
    /// never given to two; an unused mapping gives way when all are taken.
    #[test]
    fn kw_sm_012_mappings_are_stable_unique_and_reclaimed() {
        let mut map = PortMap::new(Some(&plan(2)));
        let mut writes = Vec::new();
        let a = map.map(addr(1), &mut writes).unwrap();
        map.acquire(addr(1));
        assert_eq!(map.map(addr(1), &mut writes), Some(a));
        let b = map.map(addr(2), &mut writes).unwrap();
        map.acquire(addr(2));
        assert_ne!(a, b);
        // Full, and both in use: nothing for a third.
        assert_eq!(map.map(addr(3), &mut writes), None);
        map.release(addr(1));
        let c = map.map(addr(3), &mut writes).unwrap();
        assert_eq!(c, a);
        assert_eq!(map.get(&addr(1)), None);
        assert!(writes.contains(&StoreWrite::DeleteMapping(addr(1))));
    }

    /// KW-SM-012: a mapping used by two sessions is in use until both have
    /// let it go; one restored from the store is free to give up until a
    /// session uses it again.
    #[test]
    fn kw_sm_012_a_mapping_in_use_is_kept_and_a_restored_one_can_give_way() {
        let mut map = PortMap::new(Some(&plan(1)));
        let mut writes = Vec::new();
        let a = map.map(addr(1), &mut writes).unwrap();
        map.acquire(addr(1));
        map.acquire(addr(1));
        map.release(addr(1));
        assert_eq!(map.map(addr(2), &mut writes), None, "still in use");
        map.release(addr(1));
        assert_eq!(map.map(addr(2), &mut writes), Some(a));

        let mut restored = PortMap::new(Some(&plan(1)));
        restored.restore(addr(1), a);
        assert_eq!(restored.get(&addr(1)), Some(a));
        assert_eq!(restored.map(addr(2), &mut writes), Some(a));
    }
}
