//! The simulated deployment: who exists, where, and the event loop that
//! drives their state machines and carries out their outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use super::SimConfig;
use super::checks::{Ledger, Report};
use super::net::{Action, Net, Node, What};
use crate::core::{
    Addr, Device, DeviceCommand, DeviceConfig, DevicePolicy, FirewallPlan, MemoryFirewall,
    MemoryStore, Millis, RecordPolicy, Recorder, RecorderConfig, RecorderLink, Route, Server,
    ServerConfig, ServerDirectory, ServerPolicy,
};
use crate::crypto::register::Verifier;
use crate::crypto::{
    CertProfile, CertificateAuthority, Entropy, Identity, KeyPolicy, Secret32, SeededEntropy,
    SigningKeyPair, TrustStore,
};
use crate::wire::{
    Certificate, Contact, Domain, Principal, RecordingMode, Role, SessionId, Transport,
};

/// The virtual clock starts here (2027-01-15), so certificate times look
/// like real ones.
pub(super) const T0: Millis = 1_800_000_000_000;
/// When calls start: after every device has registered.
const CALLS_AT: Millis = 10_000;
/// Time between call attempts.
const CALL_SPACING: Millis = 250;
/// Media frames each party sends per call, before and after the rekey.
const FRAMES: u64 = 6;
/// Iterations of the provisioned-secret verifiers (the minimum allowed).
const ITERATIONS: u64 = 4096;
/// Most events processed, against runaway loops.
const MAX_EVENTS: u64 = 50_000_000;

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
    pub(super) end: Millis,
    /// The frame of the media command being carried out.
    pub(super) pending_frame: Option<Vec<u8>>,
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
            end: T0,
            pending_frame: None,
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
            let server_cert = service_cert(ca, &server_id, Role::Server, 1);
            let recorder = if cfg.record {
                let rec_id =
                    Identity::generate(principal(&format!("rec@{}", name.as_str())), &mut setup);
                let rec_cert = service_cert(ca, &rec_id, Role::Recorder, 2);
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
                keys: KeyPolicy::default(),
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
                    expires: 3600,
                    anchor: ca.anchor(),
                    policy: DevicePolicy::default(),
                    retransmit: Default::default(),
                    keys: KeyPolicy::default(),
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
            let hub_cert = service_cert(&hub_ca, &hub_id, Role::Server, 1);
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
                policy: ServerPolicy::default(),
                retransmit: Default::default(),
                keys: KeyPolicy::default(),
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

    /// Registrations, then calls between random pairs.
    fn script(&mut self, rng: &mut SeededEntropy) {
        for d in 0..self.devices.len() {
            self.net
                .at(T0 + 10 * d as Millis, What::Script(Action::Register(d)));
        }
        let n = self.devices.len() as u64;
        for call in 0..self.cfg.calls {
            let caller = (u64::from_le_bytes(rng.array()) % n) as usize;
            let mut callee = (u64::from_le_bytes(rng.array()) % (n - 1).max(1)) as usize;
            if callee >= caller {
                callee += 1;
            }
            self.calls.push(CallRecord {
                caller,
                callee: callee.min(self.devices.len() - 1),
                session: None,
                established: false,
                caller_ended: false,
                callee_ended: false,
                hung_up: false,
            });
            let at = T0 + CALLS_AT + CALL_SPACING * call as Millis;
            self.net.at(at, What::Script(Action::Call { call }));
        }
        let last_call = T0 + CALLS_AT + CALL_SPACING * self.cfg.calls as Millis;
        // Long enough for every retransmission to end (32 s) twice over.
        self.end = last_call + 120_000;
    }

    pub fn run(&mut self) {
        let mut events = 0u64;
        let mut next_check = T0;
        while let Some((at, what)) = self.net.pop() {
            if at > self.end || events >= MAX_EVENTS {
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
                self.check_pinholes();
                next_check = self.now + 1000;
            }
        }
        self.now = self.end;
        self.check_pinholes();
        self.finish();
    }

    pub fn into_report(self) -> Report {
        self.ledger.report
    }

    // ------------------------------------------------------------ input

    fn deliver(&mut self, to: Node, from: Addr, bytes: &[u8]) {
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

    fn command(&mut self, device: usize, command: DeviceCommand) {
        let now = self.now;
        if let Some((d, rng, ..)) = self.devices.get_mut(device) {
            if d.command(now, command, rng).is_err() {
                self.ledger.report.commands_refused += 1;
            }
        }
        self.drain(Node::Device(device));
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Register(d) => self.command(d, DeviceCommand::Register),
            Action::Call { call } => self.place_call(call),
            Action::Media {
                device,
                session,
                frame,
            } => {
                let payload = format!(
                    "frame {frame} of {} from {device}",
                    crate::cbor::hex(&session.0)
                )
                .into_bytes();
                self.pending_frame = Some(payload.clone());
                self.command(device, DeviceCommand::Media(session, payload));
                self.pending_frame = None;
            }
            Action::Info { device, session } => {
                self.command(device, DeviceCommand::Info(session, "hello".into()))
            }
            Action::Rekey {
                device,
                session,
                body,
            } => self.command(device, DeviceCommand::Rekey(session, body)),
            Action::HangUp { device, session } => {
                if let Some(call) = self
                    .call_of
                    .get(&session)
                    .and_then(|c| self.calls.get_mut(*c))
                {
                    call.hung_up = true;
                }
                self.command(device, DeviceCommand::HangUp(session));
            }
        }
    }

    fn place_call(&mut self, call: usize) {
        let Some(record) = self.calls.get(call) else {
            return;
        };
        let (caller, callee) = (record.caller, record.callee);
        let Some(to) = self.devices.get(callee).map(|d| d.0.account().clone()) else {
            return;
        };
        let before: BTreeSet<SessionId> = self
            .devices
            .get(caller)
            .map(|d| d.0.sessions().into_iter().collect())
            .unwrap_or_default();
        self.ledger.report.calls_attempted += 1;
        let now = self.now;
        if let Some((d, rng, ..)) = self.devices.get_mut(caller) {
            if d.command(now, DeviceCommand::Call(to), rng).is_err() {
                self.ledger.report.commands_refused += 1;
            }
        }
        let after: Vec<SessionId> = self
            .devices
            .get(caller)
            .map(|d| d.0.sessions())
            .unwrap_or_default();
        if let Some(session) = after.into_iter().find(|s| !before.contains(s)) {
            self.call_of.insert(session, call);
            if let Some(record) = self.calls.get_mut(call) {
                record.session = Some(session);
            }
        }
        self.drain(Node::Device(caller));
    }

    /// The established call's script: media both ways, text, a rekey,
    /// media under the new keys, then the caller hangs up.
    pub(super) fn schedule_call(&mut self, call: usize) {
        let Some(record) = self.calls.get(call) else {
            return;
        };
        let Some(session) = record.session else {
            return;
        };
        let (caller, callee) = (record.caller, record.callee);
        let t = self.now;
        for f in 0..FRAMES {
            for device in [caller, callee] {
                self.net.at(
                    t + 100 + 20 * f,
                    What::Script(Action::Media {
                        device,
                        session,
                        frame: f,
                    }),
                );
            }
        }
        self.net.at(
            t + 150,
            What::Script(Action::Info {
                device: callee,
                session,
            }),
        );
        let body = call % 2 == 1;
        self.net.at(
            t + 300,
            What::Script(Action::Rekey {
                device: caller,
                session,
                body,
            }),
        );
        for f in FRAMES..2 * FRAMES {
            for device in [caller, callee] {
                self.net.at(
                    t + 900 + 20 * f,
                    What::Script(Action::Media {
                        device,
                        session,
                        frame: f,
                    }),
                );
            }
        }
        self.net.at(
            t + 2000,
            What::Script(Action::HangUp {
                device: caller,
                session,
            }),
        );
    }
}

fn fallback_domain() -> Domain {
    Domain::new("invalid.example").unwrap_or_else(|_| fallback_domain())
}
