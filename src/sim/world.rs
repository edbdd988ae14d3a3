//! The simulated deployment: who exists, where, and the event loop that
//! drives their state machines and carries out their outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use super::SimConfig;
use super::checks::{Ledger, Report};
use super::net::{Net, Node, What};
use super::plan::{CallKind, KEYS, Lifecycle, SESSION_SECS, T0, give_up, policy_of};
use crate::core::{
    Addr, Device, DeviceCommand, DeviceConfig, DevicePolicy, FirewallPlan, MemoryFirewall,
    MemoryStore, Millis, RecordPolicy, Recorder, RecorderConfig, RecorderLink, Route, Server,
    ServerConfig, ServerDirectory, ServerPolicy,
};
use crate::crypto::register::Verifier;
use crate::crypto::{
    CertProfile, CertificateAuthority, Entropy, Identity, Secret32, SeededEntropy, SigningKeyPair,
    TrustStore,
};
use crate::wire::{
    Certificate, Contact, Domain, Principal, RecordingMode, Role, SessionId, Transport,
};

/// Iterations of the provisioned-secret verifiers (the minimum allowed).
const ITERATIONS: u64 = 4096;
/// Serials of the servers' and recorders' certificates, issued at setup:
/// far from those the servers issue to devices (from 1), since a
/// revocation names a certificate by issuer and serial (KW-CERT-006).
const SERVICE_SERIAL: u64 = 1 << 40;
/// Most events processed, against runaway loops.
const MAX_EVENTS: u64 = 50_000_000;
/// Registration terms devices ask for: 30 to 50 s, so that every device
/// refreshes (KW-REG-014) several times in a run — each refresh a new
/// certificate, the previous one revoked (KW-SM-009) — mid-call too, and
/// so that certificates held in caches expire (KW-QUERY-006).
const TERM_SECS: u64 = 30;
const TERM_SPREAD_SECS: u64 = 21;
/// The shortest term servers grant (KW-REG-013): below the terms asked
/// for, and below what an F2 re-registration shortly after a refresh has
/// left of its certificate (KW-REG-009).
const MIN_EXPIRES_SECS: u64 = 20;

pub(super) struct DomainNodes {
    pub(super) name: Domain,
    pub(super) server: usize,
    pub(super) firewall: Option<MemoryFirewall>,
}

pub(super) struct CallRecord {
    pub(super) caller: usize,
    pub(super) callee: usize,
    pub(super) session: Option<SessionId>,
    pub(super) established: bool,
    pub(super) caller_ended: bool,
    pub(super) callee_ended: bool,
    pub(super) hung_up: bool,
    /// Whether the callee saw the call established (its `ack` arrived).
    pub(super) callee_established: bool,
    pub(super) kind: CallKind,
}

/// Everything simulated.
pub struct World {
    pub(super) cfg: SimConfig,
    pub(super) net: Net,
    pub(super) now: Millis,
    pub(super) servers: Vec<(Server, SeededEntropy, Addr, MemoryStore, Option<usize>)>,
    pub(super) devices: Vec<(Device, SeededEntropy, Addr, Addr)>,
    pub(super) recorders: Vec<(Recorder, Addr)>,
    pub(super) domains: Vec<DomainNodes>,
    pub(super) by_addr: BTreeMap<Addr, Node>,
    pub(super) device_index: BTreeMap<Principal, usize>,
    pub(super) timers: BTreeMap<Node, Millis>,
    pub(super) calls: Vec<CallRecord>,
    pub(super) call_of: BTreeMap<SessionId, usize>,
    pub(super) ledger: Ledger,
    /// When the script's last action, and what it sets off, is over: the
    /// end-of-run phase starts here.
    pub(super) script_end: Millis,
    pub(super) end: Millis,
    /// The frame of the media command being carried out.
    pub(super) pending_frame: Option<Vec<u8>>,
    /// Each device's trust policy, as configured: which servers its offers
    /// must have made recipients (the check of KW-SM-010).
    pub(super) policies: Vec<DevicePolicy>,
    /// Each device's registration script.
    pub(super) lifecycles: Vec<Lifecycle>,
    /// Devices off line now.
    pub(super) offline: BTreeSet<usize>,
    /// Devices registered, as their events tell: a new certificate for one
    /// of them is a refresh.
    pub(super) holding: BTreeSet<usize>,
    /// Devices whose F2 re-registration has been scheduled.
    pub(super) confirming: BTreeSet<usize>,
    /// Whether a scripted rekey command is being carried out: a rekey sent
    /// otherwise was due by time or count (KW-SM-006).
    pub(super) commanded_rekey: bool,
    /// The certificate the latest offer or answer sent to a device carried,
    /// by device and session.
    pub(super) carried: BTreeMap<(usize, SessionId), Certificate>,
    /// The end of the certificate each device holds of each account, as
    /// its acceptances tell (KW-QUERY-006): a caller verifies an answer
    /// with the one it holds, if valid, rather than the one carried.
    pub(super) cached: BTreeMap<(usize, Principal), u64>,
}

fn principal(text: &str) -> Principal {
    Principal::new(text).unwrap_or_else(|_| unreachable_principal())
}

/// Every name built here is valid; this is the type-checked fallback.
fn unreachable_principal() -> Principal {
    Principal::new("invalid@invalid.example").unwrap_or_else(|_| unreachable_principal())
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

impl World {
    pub fn build(cfg: &SimConfig) -> Self {
        let mut setup = SeededEntropy::from_label(&format!("keyway sim setup {}", cfg.seed));
        let mut world = World {
            cfg: cfg.clone(),
            net: Net::new(cfg.seed, cfg.loss),
            now: T0,
            servers: Vec::new(),
            devices: Vec::new(),
            recorders: Vec::new(),
            domains: Vec::new(),
            by_addr: BTreeMap::new(),
            device_index: BTreeMap::new(),
            timers: BTreeMap::new(),
            calls: Vec::new(),
            call_of: BTreeMap::new(),
            ledger: Ledger::default(),
            script_end: T0,
            end: T0,
            pending_frame: None,
            policies: Vec::new(),
            lifecycles: Vec::new(),
            offline: BTreeSet::new(),
            holding: BTreeSet::new(),
            confirming: BTreeSet::new(),
            commanded_rekey: false,
            carried: BTreeMap::new(),
            cached: BTreeMap::new(),
        };
        world.ledger.report.seed = cfg.seed;
        world.ledger.report.domains = cfg.domains;
        world.ledger.report.devices = cfg.devices;
        world.ledger.report.loss = cfg.loss;
        let hub = cfg.domains >= 2;
        let hub_addr = Addr::new(ip(192, 0, 2, 254), 5060);
        let hub_account = principal("sc@hub.example");

        // Certificate authorities and server identities first: every
        // server trusts every domain's anchor (KW-CERT-005).
        let mut cas = Vec::new();
        for d in 0..cfg.domains {
            let name =
                Domain::new(&format!("d{}.example", d + 1)).unwrap_or_else(|_| fallback_domain());
            let ca = CertificateAuthority::new(name, SigningKeyPair::generate(&mut setup));
            cas.push(ca);
        }
        let hub_ca = CertificateAuthority::new(
            Domain::new("hub.example").unwrap_or_else(|_| fallback_domain()),
            SigningKeyPair::generate(&mut setup),
        );
        let mut anchors: Vec<_> = cas.iter().map(CertificateAuthority::anchor).collect();
        anchors.push(hub_ca.anchor());
        let not_before = crate::core::secs(T0) - 3600;
        let not_after = crate::core::secs(T0) + 30 * 24 * 3600;
        let service_cert =
            |ca: &CertificateAuthority, id: &Identity, role: Role, serial: u64| -> Certificate {
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

        let last = cfg.domains.saturating_sub(1);
        for (d, ca) in cas.iter().enumerate() {
            let n = (d + 1) as u8;
            let name = ca.domain().clone();
            let server_addr = Addr::new(ip(192, 0, 2, n), 5060);
            let server_id =
                Identity::generate(principal(&format!("sc@{}", name.as_str())), &mut setup);
            let server_cert = service_cert(ca, &server_id, Role::Server, SERVICE_SERIAL);
            world
                .ledger
                .issued(name.as_str(), SERVICE_SERIAL, not_after);
            let recorder = if cfg.record {
                let rec_id =
                    Identity::generate(principal(&format!("rec@{}", name.as_str())), &mut setup);
                let rec_cert = service_cert(ca, &rec_id, Role::Recorder, SERVICE_SERIAL + 1);
                world
                    .ledger
                    .issued(name.as_str(), SERVICE_SERIAL + 1, not_after);
                let addr = Addr::new(ip(192, 0, 2, n), 6000);
                let mut servers = BTreeMap::new();
                servers.insert(server_id.account.clone(), server_cert.clone());
                let link = RecorderLink {
                    account: rec_id.account.clone(),
                    addr,
                    kx_key: rec_cert.tbs.kx_key,
                    mode: RecordingMode::Plaintext,
                };
                world.recorders.push((
                    Recorder::new(RecorderConfig {
                        identity: rec_id,
                        trust: TrustStore::new(vec![ca.anchor()]),
                        servers,
                        readers: BTreeMap::new(),
                        auditors: BTreeSet::new(),
                        capacity: 100_000,
                    }),
                    addr,
                ));
                let index = world.recorders.len() - 1;
                world.by_addr.insert(addr, Node::Recorder(index));
                Some((index, link))
            } else {
                None
            };
            let mut accounts = BTreeMap::new();
            let mut device_secrets = Vec::new();
            for k in 0..cfg.devices {
                let account = principal(&format!("u{}@{}", k + 1, name.as_str()));
                let secret = setup.array::<16>().to_vec();
                if let Ok(v) = Verifier::new(&secret, ITERATIONS, &mut setup) {
                    accounts.insert(account.clone(), v);
                }
                device_secrets.push((account, secret));
            }
            let mut directory = ServerDirectory::default();
            if hub {
                directory.default = Some(Route {
                    addr: hub_addr,
                    account: hub_account.clone(),
                });
            }
            let public_ip = Ipv4Addr::new(198, 51, 100, n);
            let policy = ServerPolicy {
                record: if cfg.record {
                    RecordPolicy::Everything
                } else {
                    RecordPolicy::Nothing
                },
                tamper_read_only: cfg.tamper && d == last && cfg.domains > 1,
                min_expires: MIN_EXPIRES_SECS,
                session_secs: SESSION_SECS,
                rekey_offers: true,
                ..ServerPolicy::default()
            };
            let server = Server::new(ServerConfig {
                identity: server_id.clone(),
                cert: server_cert,
                ca: ca.clone(),
                anchors: anchors.clone(),
                addr: server_addr,
                directory,
                accounts,
                policy,
                retransmit: Default::default(),
                keys: KEYS,
                firewall: Some(FirewallPlan {
                    public_ip: IpAddr::V4(public_ip),
                    first_port: 20_000,
                    ports: 40_000,
                }),
                recorder: recorder.as_ref().map(|(_, link)| link.clone()),
                decoy_secret: Secret32::new(setup.array()),
            });
            let server_rng = SeededEntropy::new(setup.array());
            world.servers.push((
                server,
                server_rng,
                server_addr,
                MemoryStore::default(),
                Some(d),
            ));
            let server_index = world.servers.len() - 1;
            world
                .by_addr
                .insert(server_addr, Node::Server(server_index));
            for (k, (account, secret)) in device_secrets.into_iter().enumerate() {
                let host = ip(10, n, (k / 250) as u8, (k % 250 + 1) as u8);
                let contact = Addr::new(host, 5060);
                let media = Addr::new(host, 40_000);
                let index = world.devices.len();
                let policy = policy_of(index);
                world.policies.push(policy.clone());
                let device = Device::new(DeviceConfig {
                    account: account.clone(),
                    secret,
                    server: server_addr,
                    server_account: server_id.account.clone(),
                    contact: Contact {
                        transport: Transport::Udp,
                        addr: contact,
                    },
                    media,
                    expires: TERM_SECS + u64::from_le_bytes(setup.array()) % TERM_SPREAD_SECS,
                    anchor: ca.anchor(),
                    policy,
                    retransmit: Default::default(),
                    keys: KEYS,
                    identity: None,
                });
                world
                    .devices
                    .push((device, SeededEntropy::new(setup.array()), contact, media));
                let index = world.devices.len() - 1;
                world.by_addr.insert(contact, Node::Device(index));
                world.by_addr.insert(media, Node::Device(index));
                world.device_index.insert(account, index);
            }
            world.domains.push(DomainNodes {
                name,
                server: server_index,
                firewall: Some(MemoryFirewall::new(100_000)),
            });
        }
        if hub {
            let hub_id = Identity::generate(hub_account.clone(), &mut setup);
            let hub_cert = service_cert(&hub_ca, &hub_id, Role::Server, SERVICE_SERIAL);
            let mut directory = ServerDirectory::default();
            for dom in &world.domains {
                if let Some((server, _, addr, ..)) = world.servers.get(dom.server) {
                    let route = Route {
                        addr: *addr,
                        account: server.account().clone(),
                    };
                    directory.routes.insert(dom.name.clone(), route);
                }
            }
            let server = Server::new(ServerConfig {
                identity: hub_id,
                cert: hub_cert,
                ca: hub_ca,
                anchors,
                addr: hub_addr,
                directory,
                accounts: BTreeMap::new(),
                policy: ServerPolicy {
                    min_expires: MIN_EXPIRES_SECS,
                    session_secs: SESSION_SECS,
                    ..ServerPolicy::default()
                },
                retransmit: Default::default(),
                keys: KEYS,
                firewall: None,
                recorder: None,
                decoy_secret: Secret32::new(setup.array()),
            });
            world.servers.push((
                server,
                SeededEntropy::new(setup.array()),
                hub_addr,
                MemoryStore::default(),
                None,
            ));
            let index = world.servers.len() - 1;
            world.by_addr.insert(hub_addr, Node::Server(index));
        }
        world.script(&mut setup);
        world
    }

    /// Runs the script, then the end-of-run phase: virtual time moves on
    /// past every session's term and every retransmission, after which no
    /// firewall may hold a pinhole and no server may follow a session
    /// (KW-SM-013, KW-FW-004).
    pub fn run(&mut self) {
        let mut events = 0u64;
        let mut next_check = T0;
        let mut drained = false;
        loop {
            if !drained && self.net.peek().is_none_or(|at| at > self.script_end) {
                // The script is over: what is left to end ends within a
                // session term and a retransmission give-up from now.
                drained = true;
                self.end = self
                    .servers
                    .iter()
                    .flat_map(|s| {
                        let server = &s.0;
                        server
                            .session_ids()
                            .into_iter()
                            .filter_map(|id| server.session_expiry(&id))
                            .collect::<Vec<_>>()
                    })
                    .chain([self.script_end])
                    .max()
                    .unwrap_or(self.script_end)
                    .saturating_add(2 * give_up() + 1000);
            }
            let Some((at, what)) = self.net.pop() else {
                break;
            };
            if (drained && at > self.end) || events >= MAX_EVENTS {
                break;
            }
            events += 1;
            self.now = at;
            match what {
                What::Deliver { to, from, bytes } => self.deliver(to, from, &bytes),
                What::Timer(node) => self.timer(node),
                What::Script(action) => self.act(action),
            }
            if self.now >= next_check {
                self.check_state();
                next_check = self.now + 1000;
            }
        }
        self.now = self.end.max(self.now);
        self.check_state();
        self.check_quiescent();
        self.finish();
    }

    pub fn into_report(self) -> Report {
        self.ledger.report
    }

    // ------------------------------------------------------------ input

    fn deliver(&mut self, to: Node, from: Addr, bytes: &[u8]) {
        if let Node::Device(i) = to {
            if self.offline.contains(&i) {
                self.ledger.report.datagrams_unreachable += 1;
                return;
            }
        }
        let now = self.now;
        let outcome = match to {
            Node::Server(i) => self
                .servers
                .get_mut(i)
                .map(|(s, rng, ..)| s.handle_receive(now, from, bytes, rng)),
            Node::Device(i) => self
                .devices
                .get_mut(i)
                .map(|(d, rng, ..)| d.handle_receive(now, from, bytes, rng)),
            Node::Recorder(i) => self
                .recorders
                .get_mut(i)
                .map(|(r, _)| r.handle_receive(now, from, bytes)),
        };
        if let Some(Err(_)) = outcome {
            self.ledger.report.datagrams_refused += 1;
        }
        self.drain(to);
    }

    fn timer(&mut self, node: Node) {
        if self.timers.get(&node) != Some(&self.now) {
            return; // superseded
        }
        self.timers.remove(&node);
        if let Node::Device(i) = node {
            if self.offline.contains(&i) {
                // Not run while off line; `ComeBack` runs it and re-arms.
                return;
            }
        }
        let now = self.now;
        match node {
            Node::Server(i) => {
                if let Some((s, rng, ..)) = self.servers.get_mut(i) {
                    s.handle_timeout(now, rng);
                }
            }
            Node::Device(i) => {
                if let Some((d, rng, ..)) = self.devices.get_mut(i) {
                    d.handle_timeout(now, rng);
                }
            }
            Node::Recorder(i) => {
                if let Some((r, _)) = self.recorders.get_mut(i) {
                    r.handle_timeout(now);
                }
            }
        }
        self.drain(node);
    }

    /// Gives a device a command the script has checked its state allows:
    /// a refusal (`ApiMisuse`) means the device's reported state and its
    /// checks disagree, and is an invariant broken.
    pub(super) fn command(&mut self, device: usize, command: DeviceCommand) {
        self.issue(device, command);
        self.drain(Node::Device(device));
    }

    /// [`World::command`] without carrying out the outputs yet.
    pub(super) fn issue(&mut self, device: usize, command: DeviceCommand) {
        let now = self.now;
        let mut refused = None;
        if let Some((d, rng, ..)) = self.devices.get_mut(device) {
            let what = command_name(&command);
            if let Err(e) = d.command(now, command, rng) {
                refused = Some(format!(
                    "{} refused a command its state allows ({what}): {e}",
                    d.account()
                ));
            }
        }
        if let Some(v) = refused {
            self.ledger.report.commands_refused += 1;
            self.ledger.violation(now, v);
        }
    }

    /// Runs a device's timers once it is back on line (they did not run
    /// while it was off).
    pub(super) fn wake(&mut self, device: usize) {
        let now = self.now;
        if let Some((d, rng, ..)) = self.devices.get_mut(device) {
            d.handle_timeout(now, rng);
        }
        self.drain(Node::Device(device));
    }
}

fn command_name(command: &DeviceCommand) -> &'static str {
    match command {
        DeviceCommand::Register => "register",
        DeviceCommand::RegisterWithCertificate => "register with certificate",
        DeviceCommand::Deregister => "de-register",
        DeviceCommand::QueryCertificate(_) => "query certificate",
        DeviceCommand::Call(_) => "call",
        DeviceCommand::Info(..) => "info",
        DeviceCommand::Rekey(..) => "rekey",
        DeviceCommand::Media(..) => "media",
        DeviceCommand::HangUp(_) => "hang up",
    }
}

fn fallback_domain() -> Domain {
    Domain::new("invalid.example").unwrap_or_else(|_| fallback_domain())
}
