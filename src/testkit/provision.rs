//! A test deployment provisioned in one place: certificate authorities,
//! the servers', recorders' and firewall agents' identities and
//! certificates, the devices' accounts and secrets, routes between the
//! domains, and every party's configuration — what the simulator, the
//! lab, the fuzz bodies and the benchmarks each used to write out for
//! themselves. Every draw comes from the plan's label, so the same plan
//! gives the same deployment.
//!
//! The address plan: domain `d` (from 0) has its server at
//! 192.0.2.(d+1):5060, its recorder at :6000, its firewall agent at
//! :7000, its firewall's public addresses on 198.51.100.(d+1), and its
//! devices at 10.(d+1).x.y; the hub is at 192.0.2.254:5060.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use crate::core::{
    Addr, DeviceConfig, DevicePolicy, FRESHNESS_WINDOW_SECS, FirewallAgentConfig, FirewallLink,
    FirewallPlan, MAX_CLOSED, Millis, RecordPolicy, RecorderConfig, RecorderLink, RetransmitPolicy,
    Route, ServerConfig, ServerDirectory, ServerPolicy,
};
use crate::crypto::register::Verifier;
use crate::crypto::{
    CertProfile, CertificateAuthority, Entropy, Identity, KeyPolicy, Secret32, SeededEntropy,
    SigningKeyPair, TrustAnchor, TrustStore,
};
use crate::wire::{Certificate, Contact, Domain, Principal, RecordingMode, Role, Transport};

/// Serials of the service certificates (servers', recorders', firewall
/// agents'): far from those servers issue to devices (from 1), since a
/// revocation names a certificate by issuer and serial (KW-CERT-006).
pub const SERVICE_SERIAL: u64 = 1 << 40;
/// PBKDF2 iterations of the provisioned secrets' verifiers (the minimum
/// allowed).
pub const ITERATIONS: u64 = 4096;

/// What to provision.
#[derive(Clone)]
pub struct Plan {
    /// Seeds every draw (keys, secrets, salts).
    pub label: String,
    /// The time the service certificates are issued around (wall
    /// milliseconds).
    pub t0: Millis,
    /// The domains with devices.
    pub domains: Vec<String>,
    /// Devices per domain.
    pub devices: usize,
    /// A transit hub, trusted by no device, joins the domains (their
    /// default route); without it each domain routes to every other
    /// directly.
    pub hub: bool,
    /// A recorder per domain, recording every session (KW-REC-001), or
    /// what `record_policies` says.
    pub record: bool,
    /// Per domain index, which sessions its server records, in place of
    /// every one (when `record`).
    pub record_policies: BTreeMap<usize, RecordPolicy>,
    /// The servers' policy.
    pub server_policy: ServerPolicy,
    /// Per domain index, a policy in place of `server_policy`.
    pub server_policies: BTreeMap<usize, ServerPolicy>,
    /// The devices' policy.
    pub device_policy: DevicePolicy,
    /// Per device index (counted across domains), a policy in place of
    /// `device_policy`.
    pub device_policy_of: Option<fn(usize) -> DevicePolicy>,
    /// The registration term devices ask for.
    pub device_expires: u64,
    /// When non-zero, each device asks for `device_expires` plus a drawn
    /// number of seconds below this.
    pub device_expires_spread: u64,
    /// Every party's rekey policy.
    pub keys: KeyPolicy,
    /// Every party's retransmission.
    pub retransmit: RetransmitPolicy,
    /// Devices send media from another host than their contact.
    pub media_elsewhere: bool,
    /// Devices hold key pairs provisioned ahead (so a test can sign as
    /// them); otherwise they make them at their first registration.
    pub provisioned_identities: bool,
    /// Most recordings a recorder keeps.
    pub recorder_capacity: usize,
    /// Public ports per firewall.
    pub ports: u16,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            label: "keyway testkit".into(),
            t0: 1_800_000_000_000,
            domains: vec!["a.example".into(), "b.example".into()],
            devices: 2,
            hub: true,
            record: false,
            record_policies: BTreeMap::new(),
            server_policy: ServerPolicy::default(),
            server_policies: BTreeMap::new(),
            device_policy: DevicePolicy::default(),
            device_policy_of: None,
            device_expires: 3600,
            device_expires_spread: 0,
            keys: KeyPolicy::default(),
            retransmit: RetransmitPolicy::default(),
            media_elsewhere: false,
            provisioned_identities: true,
            recorder_capacity: 64,
            ports: 1000,
        }
    }
}

/// One device, provisioned.
#[derive(Debug, Clone)]
pub struct DeviceKit {
    /// Its configuration.
    pub config: DeviceConfig,
    /// Its key pairs (in `config` too when provisioned ahead).
    pub identity: Identity,
}

/// One domain, provisioned.
#[derive(Debug, Clone)]
pub struct DomainKit {
    /// Its name.
    pub name: Domain,
    /// Its certificate authority.
    pub ca: CertificateAuthority,
    /// Its server.
    pub server: ServerConfig,
    /// Its recorder, if it records.
    pub recorder: Option<RecorderConfig>,
    /// Its firewall agent.
    pub agent: FirewallAgentConfig,
    /// Its devices.
    pub devices: Vec<DeviceKit>,
}

/// A provisioned deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The domains, in the plan's order.
    pub domains: Vec<DomainKit>,
    /// The hub, if any.
    pub hub: Option<ServerConfig>,
    /// Every domain's anchor, and the hub's last.
    pub anchors: Vec<TrustAnchor>,
    /// Provisioned secrets by account.
    pub secrets: BTreeMap<Principal, Vec<u8>>,
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// The number of domain `d` in its addresses.
fn octet(d: usize) -> u8 {
    u8::try_from(d.saturating_add(1)).unwrap_or(u8::MAX)
}

/// The server of domain `d`.
pub fn server_addr(d: usize) -> Addr {
    Addr::new(ip(192, 0, 2, octet(d)), 5060)
}

/// The recorder of domain `d`.
pub fn recorder_addr(d: usize) -> Addr {
    Addr::new(ip(192, 0, 2, octet(d)), 6000)
}

/// The firewall agent of domain `d`.
pub fn agent_addr(d: usize) -> Addr {
    Addr::new(ip(192, 0, 2, octet(d)), 7000)
}

/// The hub.
pub fn hub_addr() -> Addr {
    Addr::new(ip(192, 0, 2, 254), 5060)
}

/// The public address of domain `d`'s firewall.
pub fn public_ip(d: usize) -> IpAddr {
    ip(198, 51, 100, octet(d))
}

/// The domain whose internal (10.d.x.y) or public (198.51.100.d) address
/// `addr` is.
pub fn domain_of(addr: &Addr) -> Option<usize> {
    let IpAddr::V4(v4) = addr.ip() else {
        return None;
    };
    match v4.octets() {
        [10, n, _, _] | [198, 51, 100, n] => usize::from(n).checked_sub(1),
        _ => None,
    }
}

/// A name built from a plan; every one the plan makes is valid.
fn principal(text: &str) -> Principal {
    Principal::new(text).unwrap_or_else(|_| fallback_principal())
}

fn fallback_principal() -> Principal {
    Principal::new("invalid@invalid.example").unwrap_or_else(|_| fallback_principal())
}

fn domain(text: &str) -> Domain {
    Domain::new(text).unwrap_or_else(|_| fallback_domain())
}

fn fallback_domain() -> Domain {
    Domain::new("invalid.example").unwrap_or_else(|_| fallback_domain())
}

impl Plan {
    /// A generator for one named purpose, independent of every other.
    pub fn rng(&self, purpose: &str) -> SeededEntropy {
        SeededEntropy::from_label(&format!("{} {purpose}", self.label))
    }

    /// Provisions the deployment.
    pub fn provision(&self) -> Deployment {
        let mut setup = self.rng("setup");
        let cas: Vec<CertificateAuthority> = self
            .domains
            .iter()
            .map(|d| CertificateAuthority::new(domain(d), SigningKeyPair::generate(&mut setup)))
            .collect();
        let hub_ca =
            CertificateAuthority::new(domain("hub.example"), SigningKeyPair::generate(&mut setup));
        let mut anchors: Vec<TrustAnchor> = cas.iter().map(CertificateAuthority::anchor).collect();
        anchors.push(hub_ca.anchor());
        let not_before = self.t0 / 1000 - 3600;
        let not_after = self.t0 / 1000 + 30 * 24 * 3600;
        let service = |ca: &CertificateAuthority, id: &Identity, role: Role, serial: u64| {
            ca.issue(&CertProfile {
                serial,
                subject: id.account.clone(),
                role,
                sig_key: id.signing.public(),
                kx_key: id.kx.public(),
                not_before,
                not_after,
            })
        };
        let hub_account = principal("sc@hub.example");
        let mut secrets = BTreeMap::new();
        let mut domains = Vec::new();
        let mut device_index = 0;
        for (d, ca) in cas.iter().enumerate() {
            let name = ca.domain().as_str().to_string();
            let server_id = Identity::generate(principal(&format!("sc@{name}")), &mut setup);
            let server_cert = service(ca, &server_id, Role::Server, SERVICE_SERIAL);
            let recorder = self.record.then(|| {
                let id = Identity::generate(principal(&format!("rec@{name}")), &mut setup);
                let cert = service(ca, &id, Role::Recorder, SERVICE_SERIAL + 1);
                let mut servers = BTreeMap::new();
                servers.insert(server_id.account.clone(), server_cert.clone());
                let link = RecorderLink {
                    account: id.account.clone(),
                    addr: recorder_addr(d),
                    transport: Transport::Udp,
                    kx_key: cert.tbs.kx_key,
                    mode: RecordingMode::Plaintext,
                };
                let config = RecorderConfig {
                    identity: id,
                    addr: recorder_addr(d),
                    trust: TrustStore::new(vec![ca.anchor()]),
                    servers,
                    readers: BTreeMap::new(),
                    auditors: BTreeSet::new(),
                    capacity: self.recorder_capacity,
                    window_secs: FRESHNESS_WINDOW_SECS,
                };
                (config, link)
            });
            let agent_account = principal(&format!("fw@{name}"));
            let mut obeyed = BTreeMap::new();
            obeyed.insert(server_id.account.clone(), server_cert.clone());
            let agent = FirewallAgentConfig {
                account: agent_account,
                addr: agent_addr(d),
                trust: TrustStore::new(vec![ca.anchor()]),
                servers: obeyed,
                window_secs: FRESHNESS_WINDOW_SECS,
                max_closed: MAX_CLOSED,
            };
            let mut accounts = BTreeMap::new();
            let mut devices = Vec::new();
            for k in 0..self.devices {
                let account = principal(&format!("u{}@{name}", k + 1));
                let secret = format!("secret of {account}").into_bytes();
                if let Ok(v) = Verifier::new(&secret, ITERATIONS, &mut setup) {
                    accounts.insert(account.clone(), v);
                }
                secrets.insert(account.clone(), secret.clone());
                let host = ip(10, octet(d), (k / 250) as u8, (k % 250 + 1) as u8);
                let media_host = if self.media_elsewhere {
                    ip(10, octet(d), 9, (k % 250 + 1) as u8)
                } else {
                    host
                };
                let identity = Identity::generate(
                    account.clone(),
                    &mut self.rng(&format!("identity of {account}")),
                );
                let spread = match self.device_expires_spread {
                    0 => 0,
                    n => u64::from_le_bytes(setup.array()) % n,
                };
                let policy = self
                    .device_policy_of
                    .map_or_else(|| self.device_policy.clone(), |f| f(device_index));
                device_index += 1;
                devices.push(DeviceKit {
                    config: DeviceConfig {
                        account: account.clone(),
                        secret,
                        server: server_addr(d),
                        server_account: server_id.account.clone(),
                        contact: Contact {
                            transport: Transport::Udp,
                            addr: Addr::new(host, 5060),
                        },
                        media: Addr::new(media_host, 40_000),
                        expires: self.device_expires.saturating_add(spread),
                        anchor: ca.anchor(),
                        policy,
                        retransmit: self.retransmit,
                        keys: self.keys,
                        identity: self.provisioned_identities.then(|| identity.clone()),
                    },
                    identity,
                });
            }
            let mut directory = ServerDirectory::default();
            if self.hub {
                directory.default = Some(Route {
                    addr: hub_addr(),
                    transport: Transport::Udp,
                    account: hub_account.clone(),
                });
            } else {
                for (e, other) in cas.iter().enumerate().filter(|(e, _)| *e != d) {
                    directory.routes.insert(
                        other.domain().clone(),
                        Route {
                            addr: server_addr(e),
                            transport: Transport::Udp,
                            account: principal(&format!("sc@{}", other.domain().as_str())),
                        },
                    );
                }
            }
            let mut policy = self
                .server_policies
                .get(&d)
                .cloned()
                .unwrap_or_else(|| self.server_policy.clone());
            if self.record {
                policy.record = self
                    .record_policies
                    .get(&d)
                    .cloned()
                    .unwrap_or(RecordPolicy::Everything);
            }
            let server = ServerConfig {
                identity: server_id,
                cert: server_cert,
                ca: ca.clone(),
                anchors: anchors.clone(),
                addr: server_addr(d),
                directory,
                accounts,
                policy,
                retransmit: self.retransmit,
                keys: self.keys,
                firewall: Some(FirewallPlan {
                    agent: FirewallLink {
                        addr: agent_addr(d),
                        transport: Transport::Udp,
                    },
                    public_ip: public_ip(d),
                    first_port: 20_000,
                    ports: self.ports,
                }),
                recorder: recorder.as_ref().map(|(_, link)| link.clone()),
                decoy_secret: Secret32::new(setup.array()),
            };
            domains.push(DomainKit {
                name: ca.domain().clone(),
                ca: ca.clone(),
                server,
                recorder: recorder.map(|(config, _)| config),
                agent,
                devices,
            });
        }
        let hub = self.hub.then(|| {
            let id = Identity::generate(hub_account, &mut setup);
            let cert: Certificate = service(&hub_ca, &id, Role::Server, SERVICE_SERIAL);
            let mut directory = ServerDirectory::default();
            for (d, kit) in domains.iter().enumerate() {
                directory.routes.insert(
                    kit.name.clone(),
                    Route {
                        addr: server_addr(d),
                        transport: Transport::Udp,
                        account: kit.server.identity.account.clone(),
                    },
                );
            }
            ServerConfig {
                identity: id,
                cert,
                ca: hub_ca.clone(),
                anchors: anchors.clone(),
                addr: hub_addr(),
                directory,
                accounts: BTreeMap::new(),
                // A transit server: the terms of the domains' servers, the
                // rest as default.
                policy: ServerPolicy {
                    min_expires: self.server_policy.min_expires,
                    session_secs: self.server_policy.session_secs,
                    ..ServerPolicy::default()
                },
                retransmit: self.retransmit,
                keys: self.keys,
                firewall: None,
                recorder: None,
                decoy_secret: Secret32::new(setup.array()),
            }
        });
        Deployment {
            domains,
            hub,
            anchors,
            secrets,
        }
    }
}
