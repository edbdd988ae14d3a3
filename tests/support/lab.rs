//! A small deployment for scenario tests: servers, devices, firewalls and
//! recorders of named domains, joined by a lossless network the test
//! steps explicitly. Every output is kept, in order, in `trace`, so a test
//! can assert that a claim's steps happened and in which order.
#![allow(clippy::large_enum_variant, clippy::type_complexity)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use keyway::core::{
    Addr, ApiMisuse, Device, DeviceCommand, DeviceConfig, DeviceEvent, DevicePolicy, Firewall,
    FirewallCommand, FirewallPlan, MemoryFirewall, MemoryStore, Millis, Output, ProtocolError,
    RecordPolicy, Recorder, RecorderConfig, RecorderEvent, RecorderLink, Route, Server,
    ServerConfig, ServerDirectory, ServerEvent, ServerPolicy, Store, StoreWrite,
};
use keyway::crypto::register::Verifier;
use keyway::crypto::{
    CertProfile, CertificateAuthority, Entropy, Identity, KeyPolicy, Secret32, SeededEntropy,
    SigningKeyPair, TrustStore,
};
use keyway::wire::{
    Certificate, Contact, Domain, Message, Principal, RecordingMode, Role, SessionId, Transport,
};

/// 2027-01-15 in milliseconds.
pub const T0: Millis = 1_800_000_000_000;

/// One thing a party did, in the order it did it.
#[derive(Debug, Clone)]
pub enum Step {
    /// `from` sent `message` to `to`.
    Sent {
        from: String,
        to: Addr,
        message: Message,
    },
    /// A server made a write durable.
    Stored {
        server: String,
        write: StoreWrite,
    },
    /// A server commanded its firewall; `ok` is the firewall's verdict.
    Firewall {
        server: String,
        command: FirewallCommand,
        ok: bool,
    },
    /// Events.
    Device {
        device: String,
        event: DeviceEvent,
    },
    Server {
        server: String,
        event: ServerEvent,
    },
    Recorder {
        recorder: String,
        event: RecorderEvent,
    },
    /// A party refused a datagram (its `error` response, if any, follows).
    Refused {
        node: String,
        error: ProtocolError,
    },
}

/// One step a claim lists: what the claim calls it, and the trace step
/// that shows it happened.
pub type ClaimStep<'a> = (&'a str, &'a dyn Fn(&Step) -> bool);

impl Step {
    /// One line, enough to follow a scenario in a failure report.
    pub fn brief(&self) -> String {
        fn short(text: String) -> String {
            text.chars().take(140).collect()
        }
        match self {
            Step::Sent { from, to, message } => {
                let detail = match message {
                    Message::Register(r) => format!(
                        " csr={} cert={} auth={}",
                        r.csr.is_some(),
                        r.cert.is_some(),
                        r.auth.is_some()
                    ),
                    Message::Offer(o) => {
                        format!(" edits={}", o.body.edits.as_ref().map_or(0, |e| e.len()))
                    }
                    Message::Rekey(r) => format!(
                        " epoch={} body={} wrapped={}",
                        r.epoch,
                        r.body.is_some(),
                        r.wrapped.is_some()
                    ),
                    Message::Info(i) => format!(" from={} epoch={} seq={}", i.from, i.epoch, i.seq),
                    Message::Media(m) => {
                        format!(" from={} epoch={} seq={}", m.from, m.epoch, m.seq)
                    }
                    Message::RecordKey(k) => format!(" epoch={}", k.epoch),
                    Message::Ok(o) => format!(" re={:?}", o.re),
                    Message::Error(e) => format!(" code={:?}", e.code),
                    _ => String::new(),
                };
                format!("sent {from} -> {to}: {:?}{detail}", message.msg_type())
            }
            Step::Stored { server, write } => short(format!("stored {server}: {write:?}")),
            Step::Firewall {
                server,
                command,
                ok,
            } => short(format!("firewall {server} (ok {ok}): {command:?}")),
            Step::Device { device, event } => short(format!("device {device}: {event:?}")),
            Step::Server { server, event } => short(format!("server {server}: {event:?}")),
            Step::Recorder { recorder, event } => short(format!("recorder {recorder}: {event:?}")),
            Step::Refused { node, error } => short(format!("refused {node}: {error:?}")),
        }
    }
}

pub struct LabServer {
    pub server: Server,
    /// What it was built with, to restart it.
    pub config: ServerConfig,
    pub rng: SeededEntropy,
    pub addr: Addr,
    pub store: MemoryStore,
    pub firewall: Option<MemoryFirewall>,
    pub domain: Option<usize>,
}

pub struct LabDevice {
    pub device: Device,
    pub rng: SeededEntropy,
    pub contact: Addr,
    pub media: Addr,
    /// Its key pairs, as provisioned.
    pub identity: Identity,
}

/// How to build a lab.
#[derive(Clone)]
pub struct LabOptions {
    pub domains: Vec<&'static str>,
    pub devices: usize,
    pub hub: bool,
    pub record: bool,
    pub device_policy: DevicePolicy,
    pub server_policy: ServerPolicy,
    /// Server policy per domain index, overriding `server_policy`.
    pub server_policies: BTreeMap<usize, ServerPolicy>,
    pub keys: KeyPolicy,
    /// Devices send media from another host than their contact.
    pub media_elsewhere: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            domains: vec!["a.example", "b.example"],
            devices: 2,
            hub: true,
            record: false,
            device_policy: DevicePolicy::default(),
            server_policy: ServerPolicy::default(),
            server_policies: BTreeMap::new(),
            keys: KeyPolicy::default(),
            media_elsewhere: false,
        }
    }
}

pub struct Lab {
    pub now: Millis,
    pub servers: Vec<LabServer>,
    pub devices: Vec<LabDevice>,
    pub recorders: Vec<(Recorder, Addr, String)>,
    pub by_addr: BTreeMap<Addr, Node>,
    pub names: BTreeMap<Principal, usize>,
    pub trace: Vec<Step>,
    pub queue: VecDeque<(Addr, Addr, Vec<u8>)>,
    /// Datagrams for which this returns true are dropped.
    pub drop_if: Option<Box<dyn FnMut(&Message) -> bool>>,
    /// Every domain's anchor, and the hub's last.
    pub anchors: Vec<keyway::crypto::TrustAnchor>,
    /// Provisioned secrets by account.
    pub secrets: BTreeMap<Principal, Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Server(usize),
    Device(usize),
    Recorder(usize),
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

pub fn principal(s: &str) -> Principal {
    Principal::new(s).expect("valid account")
}

impl Lab {
    pub fn new(opts: LabOptions) -> Self {
        let mut setup = SeededEntropy::from_label("keyway lab setup");
        let mut lab = Lab {
            now: T0,
            servers: Vec::new(),
            devices: Vec::new(),
            recorders: Vec::new(),
            by_addr: BTreeMap::new(),
            names: BTreeMap::new(),
            trace: Vec::new(),
            queue: VecDeque::new(),
            drop_if: None,
            anchors: Vec::new(),
            secrets: BTreeMap::new(),
        };
        let cas: Vec<CertificateAuthority> = opts
            .domains
            .iter()
            .map(|d| {
                CertificateAuthority::new(
                    Domain::new(d).unwrap(),
                    SigningKeyPair::generate(&mut setup),
                )
            })
            .collect();
        let hub_ca = CertificateAuthority::new(
            Domain::new("hub.example").unwrap(),
            SigningKeyPair::generate(&mut setup),
        );
        let mut anchors: Vec<_> = cas.iter().map(|c| c.anchor()).collect();
        anchors.push(hub_ca.anchor());
        lab.anchors = anchors.clone();
        let service = |ca: &CertificateAuthority, id: &Identity, role: Role| -> Certificate {
            ca.issue(&CertProfile {
                serial: 1_000,
                subject: id.account.clone(),
                role,
                sig_key: id.signing.public(),
                kx_key: id.kx.public(),
                not_before: T0 / 1000 - 3600,
                not_after: T0 / 1000 + 86_400,
            })
        };
        let hub_addr = Addr::new(v4(192, 0, 2, 254), 5060);
        let hub_account = principal("sc@hub.example");
        for (d, ca) in cas.iter().enumerate() {
            let n = (d + 1) as u8;
            let name = ca.domain().as_str().to_string();
            let addr = Addr::new(v4(192, 0, 2, n), 5060);
            let id = Identity::generate(principal(&format!("sc@{name}")), &mut setup);
            let cert = service(ca, &id, Role::Server);
            let recorder = if opts.record {
                let rid = Identity::generate(principal(&format!("rec@{name}")), &mut setup);
                let rcert = service(ca, &rid, Role::Recorder);
                let raddr = Addr::new(v4(192, 0, 2, n), 6000);
                let mut servers = BTreeMap::new();
                servers.insert(id.account.clone(), cert.clone());
                let link = RecorderLink {
                    account: rid.account.clone(),
                    addr: raddr,
                    kx_key: rcert.tbs.kx_key,
                    mode: RecordingMode::Plaintext,
                };
                let readers = BTreeMap::new();
                lab.recorders.push((
                    Recorder::new(RecorderConfig {
                        identity: rid.clone(),
                        trust: TrustStore::new(vec![ca.anchor()]),
                        servers,
                        readers,
                        auditors: BTreeSet::new(),
                        capacity: 64,
                    }),
                    raddr,
                    rid.account.to_string(),
                ));
                lab.by_addr
                    .insert(raddr, Node::Recorder(lab.recorders.len() - 1));
                Some(link)
            } else {
                None
            };
            let mut accounts = BTreeMap::new();
            let mut made = Vec::new();
            for k in 0..opts.devices {
                let account = principal(&format!("u{}@{name}", k + 1));
                let secret = format!("secret of {account}").into_bytes();
                accounts.insert(
                    account.clone(),
                    Verifier::new(&secret, 4096, &mut setup).unwrap(),
                );
                lab.secrets.insert(account.clone(), secret.clone());
                made.push((account, secret));
            }
            let mut directory = ServerDirectory::default();
            if opts.hub {
                directory.default = Some(Route {
                    addr: hub_addr,
                    account: hub_account.clone(),
                });
            } else {
                for (e, other) in opts.domains.iter().enumerate() {
                    if e != d {
                        directory.routes.insert(
                            Domain::new(other).unwrap(),
                            Route {
                                addr: Addr::new(v4(192, 0, 2, (e + 1) as u8), 5060),
                                account: principal(&format!("sc@{other}")),
                            },
                        );
                    }
                }
            }
            let mut policy = opts.server_policy.clone();
            if let Some(p) = opts.server_policies.get(&d) {
                policy = p.clone();
            }
            if opts.record {
                policy.record = RecordPolicy::Everything;
            }
            let config = ServerConfig {
                identity: id.clone(),
                cert,
                ca: ca.clone(),
                anchors: anchors.clone(),
                addr,
                directory,
                accounts,
                policy,
                retransmit: Default::default(),
                keys: opts.keys,
                firewall: Some(FirewallPlan {
                    public_ip: v4(198, 51, 100, n),
                    first_port: 20_000,
                    ports: 1000,
                }),
                recorder,
                decoy_secret: Secret32::new([7; 32]),
            };
            lab.servers.push(LabServer {
                server: Server::new(config.clone()),
                config,
                rng: SeededEntropy::new(setup.array()),
                addr,
                store: MemoryStore::default(),
                firewall: Some(MemoryFirewall::new(1000)),
                domain: Some(d),
            });
            lab.by_addr
                .insert(addr, Node::Server(lab.servers.len() - 1));
            for (k, (account, secret)) in made.into_iter().enumerate() {
                let host = v4(10, n, 0, (k + 1) as u8);
                let contact = Addr::new(host, 5060);
                let media_host = if opts.media_elsewhere {
                    v4(10, n, 9, (k + 1) as u8)
                } else {
                    host
                };
                let media = Addr::new(media_host, 40_000);
                // Provisioned, so that a test can act as the device (forge
                // what only it could sign).
                let identity = Identity::generate(
                    account.clone(),
                    &mut SeededEntropy::from_label(&format!("identity of {account}")),
                );
                let device = Device::new(DeviceConfig {
                    account: account.clone(),
                    secret,
                    server: addr,
                    server_account: id.account.clone(),
                    contact: Contact {
                        transport: Transport::Udp,
                        addr: contact,
                    },
                    media,
                    expires: 3600,
                    anchor: ca.anchor(),
                    policy: opts.device_policy.clone(),
                    retransmit: Default::default(),
                    keys: opts.keys,
                    identity: Some(identity.clone()),
                });
                lab.devices.push(LabDevice {
                    device,
                    rng: SeededEntropy::new(setup.array()),
                    contact,
                    media,
                    identity,
                });
                let index = lab.devices.len() - 1;
                lab.by_addr.insert(contact, Node::Device(index));
                lab.by_addr.insert(media, Node::Device(index));
                lab.names.insert(account, index);
            }
        }
        if opts.hub {
            let id = Identity::generate(hub_account, &mut setup);
            let cert = service(&hub_ca, &id, Role::Server);
            let mut directory = ServerDirectory::default();
            for (d, name) in opts.domains.iter().enumerate() {
                directory.routes.insert(
                    Domain::new(name).unwrap(),
                    Route {
                        addr: Addr::new(v4(192, 0, 2, (d + 1) as u8), 5060),
                        account: principal(&format!("sc@{name}")),
                    },
                );
            }
            let config = ServerConfig {
                identity: id,
                cert,
                ca: hub_ca,
                anchors,
                addr: hub_addr,
                directory,
                accounts: BTreeMap::new(),
                policy: ServerPolicy::default(),
                retransmit: Default::default(),
                keys: opts.keys,
                firewall: None,
                recorder: None,
                decoy_secret: Secret32::new([8; 32]),
            };
            lab.servers.push(LabServer {
                server: Server::new(config.clone()),
                config,
                rng: SeededEntropy::new(setup.array()),
                addr: hub_addr,
                store: MemoryStore::default(),
                firewall: None,
                domain: None,
            });
            lab.by_addr
                .insert(hub_addr, Node::Server(lab.servers.len() - 1));
        }
        lab
    }

    /// The device of an account.
    pub fn dev(&self, account: &str) -> usize {
        self.names[&principal(account)]
    }

    pub fn device(&self, account: &str) -> &Device {
        &self.devices[self.dev(account)].device
    }

    /// The server of a domain index (the hub is last).
    pub fn server(&self, index: usize) -> &Server {
        &self.servers[index].server
    }

    /// Gives a device a command it must accept.
    pub fn command(&mut self, account: &str, command: DeviceCommand) {
        let refused = self.try_command(account, command.clone());
        assert_eq!(refused, Ok(()), "{account} refused {command:?}");
    }

    /// Gives a device a command, and says whether it took it.
    pub fn try_command(&mut self, account: &str, command: DeviceCommand) -> Result<(), ApiMisuse> {
        let i = self.dev(account);
        let now = self.now;
        let d = &mut self.devices[i];
        let outcome = d.device.command(now, command, &mut d.rng);
        self.drain(Node::Device(i));
        outcome
    }

    /// Delivers everything queued, and whatever that causes, one
    /// millisecond per datagram.
    pub fn settle(&mut self) {
        let mut budget = 100_000;
        while let Some((from, to, bytes)) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "the lab does not settle");
            self.now += 1;
            if let Some(node) = self.by_addr.get(&to).copied() {
                self.receive(node, from, &bytes);
            }
        }
    }

    /// Like [`Lab::settle`], but delivers the queued datagrams in the order
    /// `pick(len)` chooses (an index below `len`): any interleaving.
    pub fn settle_in_order(&mut self, mut pick: impl FnMut(usize) -> usize) {
        let mut budget = 100_000;
        while !self.queue.is_empty() {
            budget -= 1;
            assert!(budget > 0, "the lab does not settle");
            let i = pick(self.queue.len()) % self.queue.len();
            let (from, to, bytes) = self.queue.remove(i).unwrap();
            self.now += 1;
            if let Some(node) = self.by_addr.get(&to).copied() {
                self.receive(node, from, &bytes);
            }
        }
    }

    /// Restarts server `i` from its store, as after a crash, and lets it
    /// reconcile its firewall (KW-REG-010, KW-FW-004).
    pub fn restart_server(&mut self, i: usize) {
        let snapshot = self.servers[i].store.snapshot().unwrap();
        let s = &mut self.servers[i];
        s.server = Server::restore(s.config.clone(), snapshot);
        let pinholes = s
            .firewall
            .as_ref()
            .map(|f| f.pinholes())
            .unwrap_or_default();
        s.server.reconcile_firewall(&pinholes);
        self.drain(Node::Server(i));
    }

    /// Delivers raw bytes to a node as if from `from`.
    pub fn inject(&mut self, to: Addr, from: Addr, bytes: &[u8]) {
        if let Some(node) = self.by_addr.get(&to).copied() {
            self.receive(node, from, bytes);
        }
    }

    fn receive(&mut self, node: Node, from: Addr, bytes: &[u8]) {
        let now = self.now;
        let (name, outcome) = match node {
            Node::Server(i) => {
                let s = &mut self.servers[i];
                let outcome = s.server.handle_receive(now, from, bytes, &mut s.rng);
                (s.server.account().to_string(), outcome)
            }
            Node::Device(i) => {
                let d = &mut self.devices[i];
                let outcome = d.device.handle_receive(now, from, bytes, &mut d.rng);
                (d.device.account().to_string(), outcome)
            }
            Node::Recorder(i) => {
                let outcome = self.recorders[i].0.handle_receive(now, from, bytes);
                (format!("recorder {i}"), outcome)
            }
        };
        if let Err(error) = outcome {
            self.trace.push(Step::Refused { node: name, error });
        }
        self.drain(node);
    }

    /// The refusals of `node` (an account, or `recorder N`) since trace
    /// position `from`.
    pub fn refusals(&self, from: usize, node: &str) -> Vec<ProtocolError> {
        self.trace[from..]
            .iter()
            .filter_map(|s| match s {
                Step::Refused { node: n, error } if n == node => Some(error.clone()),
                _ => None,
            })
            .collect()
    }

    /// Moves the clock and fires every timer due, settling after each.
    pub fn advance(&mut self, ms: Millis) {
        let end = self.now + ms;
        loop {
            let next = self.next_timer().filter(|t| *t <= end);
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            for i in 0..self.servers.len() {
                if self.servers[i]
                    .server
                    .poll_timeout()
                    .is_some_and(|x| x <= self.now)
                {
                    let now = self.now;
                    let s = &mut self.servers[i];
                    s.server.handle_timeout(now, &mut s.rng);
                    self.drain(Node::Server(i));
                }
            }
            for i in 0..self.devices.len() {
                if self.devices[i]
                    .device
                    .poll_timeout()
                    .is_some_and(|x| x <= self.now)
                {
                    let now = self.now;
                    let d = &mut self.devices[i];
                    d.device.handle_timeout(now, &mut d.rng);
                    self.drain(Node::Device(i));
                }
            }
            for i in 0..self.recorders.len() {
                if self.recorders[i]
                    .0
                    .poll_timeout()
                    .is_some_and(|x| x <= self.now)
                {
                    let now = self.now;
                    self.recorders[i].0.handle_timeout(now);
                    self.drain(Node::Recorder(i));
                }
            }
            self.settle();
        }
        self.now = self.now.max(end);
        self.settle();
    }

    fn next_timer(&self) -> Option<Millis> {
        let s = self.servers.iter().filter_map(|s| s.server.poll_timeout());
        let d = self.devices.iter().filter_map(|d| d.device.poll_timeout());
        let r = self.recorders.iter().filter_map(|r| r.0.poll_timeout());
        s.chain(d).chain(r).min()
    }

    fn drain(&mut self, node: Node) {
        match node {
            Node::Server(i) => {
                while let Some(o) = self.servers[i].server.poll_output() {
                    let name = self.servers[i].server.account().to_string();
                    let addr = self.servers[i].addr;
                    match o {
                        Output::Transmit { to, message } => self.send(name, addr, to, message),
                        Output::Store(write) => {
                            self.servers[i].store.apply(&write).unwrap();
                            self.trace.push(Step::Stored {
                                server: name,
                                write,
                            });
                        }
                        Output::Firewall(command) => {
                            let now = self.now;
                            let ok = match self.servers[i].firewall.as_mut() {
                                Some(fw) => fw.apply(now, &command).is_ok(),
                                None => false,
                            };
                            self.trace.push(Step::Firewall {
                                server: name,
                                command,
                                ok,
                            });
                        }
                        Output::Event(event) => self.trace.push(Step::Server {
                            server: name,
                            event,
                        }),
                    }
                }
            }
            Node::Device(i) => {
                while let Some(o) = self.devices[i].device.poll_output() {
                    let name = self.devices[i].device.account().to_string();
                    match o {
                        Output::Transmit { to, message } => {
                            let from = if matches!(message, Message::Media(_)) {
                                self.devices[i].media
                            } else {
                                self.devices[i].contact
                            };
                            if matches!(message, Message::Media(_)) {
                                self.trace.push(Step::Sent {
                                    from: name,
                                    to,
                                    message: message.clone(),
                                });
                                self.media(from, to, message);
                            } else {
                                self.send(name, from, to, message);
                            }
                        }
                        Output::Event(event) => self.trace.push(Step::Device {
                            device: name,
                            event,
                        }),
                        Output::Store(_) | Output::Firewall(_) => {}
                    }
                }
            }
            Node::Recorder(i) => {
                while let Some(o) = self.recorders[i].0.poll_output() {
                    let name = self.recorders[i].2.clone();
                    let addr = self.recorders[i].1;
                    match o {
                        Output::Transmit { to, message } => self.send(name, addr, to, message),
                        Output::Event(event) => self.trace.push(Step::Recorder {
                            recorder: name,
                            event,
                        }),
                        Output::Store(_) | Output::Firewall(_) => {}
                    }
                }
            }
        }
    }

    fn send(&mut self, from_name: String, from: Addr, to: Addr, message: Message) {
        let dropped = self.drop_if.as_mut().is_some_and(|f| f(&message));
        self.trace.push(Step::Sent {
            from: from_name,
            to,
            message: message.clone(),
        });
        if !dropped {
            self.queue.push_back((from, to, message.encode()));
        }
    }

    fn domain_of(addr: &Addr) -> Option<usize> {
        let IpAddr::V4(ip) = addr.ip() else {
            return None;
        };
        let o = ip.octets();
        match o {
            [10, n, _, _] => Some(usize::from(n) - 1),
            [198, 51, 100, n] => Some(usize::from(n) - 1),
            _ => None,
        }
    }

    /// The firewall of the server of domain `d`.
    pub fn firewall(&self, d: usize) -> &MemoryFirewall {
        self.servers
            .iter()
            .find(|s| s.domain == Some(d))
            .and_then(|s| s.firewall.as_ref())
            .unwrap()
    }

    fn firewall_mut(&mut self, d: usize) -> Option<&mut MemoryFirewall> {
        self.servers
            .iter_mut()
            .find(|s| s.domain == Some(d))
            .and_then(|s| s.firewall.as_mut())
    }

    /// Media crosses the destination domain's firewall, with the sender's
    /// address translated by its own firewall's mapping.
    fn media(&mut self, from: Addr, to: Addr, message: Message) {
        let now = self.now;
        let seen_from = Self::domain_of(&from)
            .and_then(|d| self.firewall_mut(d))
            .and_then(|fw| {
                fw.pinholes()
                    .into_iter()
                    .find(|p| p.dst == from && p.public.is_some() && p.expires_at > now)
                    .and_then(|p| p.public)
            })
            .unwrap_or(from);
        let Some(d) = Self::domain_of(&to) else {
            return;
        };
        let Some(fw) = self.firewall_mut(d) else {
            return;
        };
        let filtered = fw.filter(now, Transport::Udp, seen_from, to);
        let bytes = message.encode();
        for copy in filtered.copies {
            self.queue.push_back((seen_from, copy, bytes.clone()));
        }
        if let Some(dst) = filtered.deliver {
            self.queue.push_back((seen_from, dst, bytes));
        }
    }

    /// Registers every device (F1) and settles.
    pub fn register_all(&mut self) {
        for i in 0..self.devices.len() {
            let now = self.now;
            let d = &mut self.devices[i];
            let taken = d.device.command(now, DeviceCommand::Register, &mut d.rng);
            assert_eq!(taken, Ok(()));
            self.drain(Node::Device(i));
        }
        self.settle();
    }

    /// Places a call and settles; returns its session.
    pub fn call(&mut self, from: &str, to: &str) -> SessionId {
        let before: BTreeSet<SessionId> = self.device(from).sessions().into_iter().collect();
        self.command(from, DeviceCommand::Call(principal(to)));
        let session = self
            .device(from)
            .sessions()
            .into_iter()
            .find(|s| !before.contains(s))
            .expect("a new call");
        self.settle();
        session
    }

    // ------------------------------------------------------------ trace queries

    /// Index of the first step at or after `from` matching `f`.
    pub fn find(&self, from: usize, f: impl Fn(&Step) -> bool) -> Option<usize> {
        self.trace
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, s)| f(s))
            .map(|(i, _)| i)
    }

    /// Where each of a claim's `steps` happened, looking from trace position
    /// `from`, each after the one before it; or which step is missing or out
    /// of order, with the trace from `from` to follow it by.
    pub fn check_in_order(
        &self,
        from: usize,
        claim: &str,
        steps: &[ClaimStep<'_>],
    ) -> Result<Vec<usize>, String> {
        let mut at = Vec::with_capacity(steps.len());
        let mut after = from;
        for (k, (name, pred)) in steps.iter().enumerate() {
            if let Some(i) = self.find(after, pred) {
                at.push(i);
                after = i + 1;
                continue;
            }
            let problem = match (k.checked_sub(1), self.find(from, pred)) {
                (Some(prev), Some(i)) => format!(
                    "{claim}: \"{name}\" (step {i}) does not come after \"{}\" (step {})",
                    steps[prev].0, at[prev]
                ),
                _ => format!("{claim}: \"{name}\" is not in the trace after step {from}"),
            };
            let trace: Vec<String> = self.trace[from..]
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{:5} {}", from + i, s.brief()))
                .collect();
            return Err(format!("{problem}\n{}", trace.join("\n")));
        }
        Ok(at)
    }

    /// Asserts [`Lab::check_in_order`] and returns the steps' positions.
    #[track_caller]
    pub fn assert_in_order(&self, from: usize, claim: &str, steps: &[ClaimStep<'_>]) -> Vec<usize> {
        self.check_in_order(from, claim, steps)
            .unwrap_or_else(|report| panic!("{report}"))
    }

    pub fn device_events(&self, account: &str) -> Vec<DeviceEvent> {
        self.trace
            .iter()
            .filter_map(|s| match s {
                Step::Device { device, event } if device == account => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn server_events(&self, account: &str) -> Vec<ServerEvent> {
        self.trace
            .iter()
            .filter_map(|s| match s {
                Step::Server { server, event } if server == account => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn firewall_commands(&self, account: &str) -> Vec<FirewallCommand> {
        self.trace
            .iter()
            .filter_map(|s| match s {
                Step::Firewall {
                    server,
                    command,
                    ok,
                } if server == account => {
                    assert!(ok, "firewall refused {command:?}");
                    Some(command.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// Messages sent, with sender name.
    pub fn sent(&self) -> Vec<(String, Addr, Message)> {
        self.trace
            .iter()
            .filter_map(|s| match s {
                Step::Sent { from, to, message } => Some((from.clone(), *to, message.clone())),
                _ => None,
            })
            .collect()
    }
}
