//! A small deployment for scenario tests: servers, devices, firewall agents
//! and recorders of named domains, joined by a lossless network the test
//! steps explicitly. Every party goes through the one driver contract
//! ([`Party`], [`carry`]); every output is kept, in order, in `trace`, so
//! a test can assert that a claim's steps happened and in which order.
//! A test may play any party itself: it sends what it likes with
//! [`Lab::inject`] and reads what others sent from the trace.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::provision::{self, Deployment, Plan};
use crate::core::{
    Addr, ApiMisuse, Device, DeviceCommand, DeviceEvent, DevicePolicy, Driver, Faults, Filtered,
    Firewall, FirewallAgent, FirewallCommand, FirewallError, FirewallEvent, MemoryFirewall,
    MemoryStore, Millis, Now, Output, Party, PinholeView, ProtocolError, Receive, Recorder,
    RecorderConfig, RecorderEvent, Server, ServerConfig, ServerEvent, ServerPolicy, SessionEnd,
    Store, StoreError, StoreWrite, Transmit, carry,
};
use crate::crypto::{Identity, KeyPolicy, SeededEntropy, TrustAnchor};
use crate::wire::{Message, Principal, SessionId, Transport};

/// 2027-01-15 in milliseconds.
pub const T0: Millis = 1_800_000_000_000;

/// One thing a party did, in the order it did it. Kept unboxed: a trace is
/// read far more than built.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Step {
    /// `from` sent `message` to `to`.
    Sent {
        /// The sender's name.
        from: String,
        /// The destination.
        to: Addr,
        /// The message.
        message: Message,
    },
    /// A party's store committed a write (each write of a group, in order).
    Stored {
        /// The party.
        server: String,
        /// The write.
        write: StoreWrite,
    },
    /// A firewall agent changed its firewall for `server`; `ok` is the
    /// firewall's verdict.
    Firewall {
        /// The server the agent obeys.
        server: String,
        /// The change, with the firewall's own pinhole identifiers.
        command: FirewallCommand,
        /// Whether the firewall carried it out.
        ok: bool,
    },
    /// A device's event.
    Device {
        /// The device.
        device: String,
        /// The event.
        event: DeviceEvent,
    },
    /// A server's event.
    Server {
        /// The server.
        server: String,
        /// The event.
        event: ServerEvent,
    },
    /// A recorder's event.
    Recorder {
        /// The recorder.
        recorder: String,
        /// The event.
        event: RecorderEvent,
    },
    /// A firewall agent's event.
    Agent {
        /// The agent.
        agent: String,
        /// The event.
        event: FirewallEvent,
    },
    /// A party refused a message (its `error` response, if any, follows).
    Refused {
        /// The party.
        node: String,
        /// Why.
        error: ProtocolError,
    },
    /// A party's store failed; it was restarted from what it holds
    /// (KW-SM-024).
    Restarted {
        /// The party.
        node: String,
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
            Step::Agent { agent, event } => short(format!("agent {agent}: {event:?}")),
            Step::Refused { node, error } => short(format!("refused {node}: {error:?}")),
            Step::Restarted { node } => format!("restarted {node}"),
        }
    }
}

/// A memory firewall that keeps what it was asked to do, for the trace.
#[derive(Debug, Clone)]
pub struct TracingFirewall {
    /// The firewall.
    pub inner: MemoryFirewall,
    log: Vec<(FirewallCommand, bool)>,
}

impl TracingFirewall {
    /// A firewall holding at most `capacity` pinholes.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: MemoryFirewall::new(capacity),
            log: Vec::new(),
        }
    }

    /// Takes what was applied since last asked.
    pub fn take_log(&mut self) -> Vec<(FirewallCommand, bool)> {
        core::mem::take(&mut self.log)
    }
}

impl Firewall for TracingFirewall {
    fn apply(&mut self, now: Millis, command: &FirewallCommand) -> Result<(), FirewallError> {
        let outcome = self.inner.apply(now, command);
        self.log.push((command.clone(), outcome.is_ok()));
        outcome
    }

    fn pinholes(&self) -> Vec<PinholeView> {
        self.inner.pinholes()
    }
}

/// A server of the lab.
pub struct LabServer {
    /// The server.
    pub server: Server,
    /// What it was built with, to restart it.
    pub config: ServerConfig,
    /// Its generator.
    pub rng: SeededEntropy,
    /// Its address.
    pub addr: Addr,
    /// Its store.
    pub store: MemoryStore,
    /// Its domain's index; `None` for the hub.
    pub domain: Option<usize>,
}

/// A device of the lab.
pub struct LabDevice {
    /// The device.
    pub device: Device,
    /// Its generator.
    pub rng: SeededEntropy,
    /// Where it receives signalling.
    pub contact: Addr,
    /// Where it receives media.
    pub media: Addr,
    /// Its key pairs, as provisioned.
    pub identity: Identity,
}

/// A recorder of the lab.
pub struct LabRecorder {
    /// The recorder.
    pub recorder: Recorder,
    /// Its generator.
    pub rng: SeededEntropy,
    /// What it was built with, to restart it.
    pub config: RecorderConfig,
    /// Its address.
    pub addr: Addr,
    /// Its account, as the trace names it.
    pub name: String,
    /// Its store.
    pub store: MemoryStore,
}

/// A firewall agent of the lab.
pub struct LabAgent {
    /// The agent.
    pub agent: FirewallAgent<TracingFirewall>,
    /// Its generator.
    pub rng: SeededEntropy,
    /// Its address.
    pub addr: Addr,
    /// Its domain's index.
    pub domain: usize,
    /// The server it obeys, as the trace names it.
    pub server: String,
}

/// How to build a lab.
#[derive(Clone)]
pub struct LabOptions {
    /// The domains with devices.
    pub domains: Vec<&'static str>,
    /// Devices per domain.
    pub devices: usize,
    /// A transit hub joins the domains.
    pub hub: bool,
    /// Every domain records every session.
    pub record: bool,
    /// The devices' policy.
    pub device_policy: DevicePolicy,
    /// The servers' policy.
    pub server_policy: ServerPolicy,
    /// Server policy per domain index, overriding `server_policy`.
    pub server_policies: BTreeMap<usize, ServerPolicy>,
    /// Every party's rekey policy.
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

impl LabOptions {
    /// The provisioning plan of these options.
    pub fn plan(&self) -> Plan {
        Plan {
            label: "keyway lab".into(),
            t0: T0,
            domains: self.domains.iter().map(|d| (*d).to_string()).collect(),
            devices: self.devices,
            hub: self.hub,
            record: self.record,
            server_policy: self.server_policy.clone(),
            server_policies: self.server_policies.clone(),
            device_policy: self.device_policy.clone(),
            keys: self.keys,
            media_elsewhere: self.media_elsewhere,
            ..Plan::default()
        }
    }
}

/// A crash to stage: a server goes down just after an input and restarts
/// from its store (KW-SM-025).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash {
    /// The server (`servers[server]`).
    pub server: usize,
    /// After its input number `at` (counted in [`Lab::inputs`], from 1).
    pub at: usize,
    /// Whether what that input asked for dies with it: its store group is
    /// committed, nothing else is carried out — the worst moment to crash.
    /// Otherwise it is all carried out first.
    pub lose_outputs: bool,
}

/// Which messages the lab's network loses.
pub type DropIf = Box<dyn FnMut(&Message) -> bool>;

/// A party of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    /// `servers[i]`.
    Server(usize),
    /// `devices[i]`.
    Device(usize),
    /// `recorders[i]`.
    Recorder(usize),
    /// `agents[i]`.
    Agent(usize),
}

/// See the module documentation.
pub struct Lab {
    /// The lab's monotonic clock; the wall clock is it plus `wall_step`.
    pub now: Millis,
    /// How far the wall clock has been stepped from the monotonic one
    /// (`step_wall`): zero unless a test steps it.
    pub wall_step: i64,
    /// The domains' servers, then the hub.
    pub servers: Vec<LabServer>,
    /// Every device.
    pub devices: Vec<LabDevice>,
    /// The recorders, by domain.
    pub recorders: Vec<LabRecorder>,
    /// The firewall agents, by domain.
    pub agents: Vec<LabAgent>,
    /// Who is at each address.
    pub by_addr: BTreeMap<Addr, Node>,
    /// Devices by account.
    pub names: BTreeMap<Principal, usize>,
    /// Everything that happened.
    pub trace: Vec<Step>,
    /// Datagrams in flight: (source, destination, bytes).
    pub queue: VecDeque<(Addr, Addr, Vec<u8>)>,
    /// Datagrams for which this returns true are dropped.
    pub drop_if: Option<DropIf>,
    /// Every domain's anchor, and the hub's last.
    pub anchors: Vec<TrustAnchor>,
    /// Provisioned secrets by account.
    pub secrets: BTreeMap<Principal, Vec<u8>>,
    /// The deployment the lab was built from.
    pub deployment: Deployment,
    /// Inputs each party has handled (messages, timeouts, commands).
    pub inputs: BTreeMap<Node, usize>,
    /// A crash to stage, if any.
    pub crash: Option<Crash>,
}

/// An account of a test.
pub fn principal(s: &str) -> Principal {
    Principal::new(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

impl Lab {
    /// A lab as the options say.
    pub fn new(opts: LabOptions) -> Self {
        Self::from_plan(&opts.plan())
    }

    /// A lab of a provisioning plan.
    pub fn from_plan(plan: &Plan) -> Self {
        let deployment = plan.provision();
        let mut lab = Lab {
            now: plan.t0,
            wall_step: 0,
            servers: Vec::new(),
            devices: Vec::new(),
            recorders: Vec::new(),
            agents: Vec::new(),
            by_addr: BTreeMap::new(),
            names: BTreeMap::new(),
            trace: Vec::new(),
            queue: VecDeque::new(),
            drop_if: None,
            anchors: deployment.anchors.clone(),
            secrets: deployment.secrets.clone(),
            deployment: deployment.clone(),
            inputs: BTreeMap::new(),
            crash: None,
        };
        for (d, kit) in deployment.domains.into_iter().enumerate() {
            let server_name = kit.server.identity.account.to_string();
            lab.servers.push(LabServer {
                server: Server::new(kit.server.clone()),
                rng: plan.rng(&format!("server {server_name}")),
                addr: kit.server.addr,
                config: kit.server,
                store: MemoryStore::default(),
                domain: Some(d),
            });
            lab.by_addr.insert(
                provision::server_addr(d),
                Node::Server(lab.servers.len() - 1),
            );
            lab.agents.push(LabAgent {
                rng: plan.rng(&format!("agent {}", kit.name.as_str())),
                addr: kit.agent.addr,
                agent: FirewallAgent::new(kit.agent, TracingFirewall::new(1000)),
                domain: d,
                server: server_name,
            });
            lab.by_addr
                .insert(provision::agent_addr(d), Node::Agent(lab.agents.len() - 1));
            if let Some(config) = kit.recorder {
                let name = config.identity.account.to_string();
                lab.by_addr
                    .insert(config.addr, Node::Recorder(lab.recorders.len()));
                lab.recorders.push(LabRecorder {
                    rng: plan.rng(&format!("recorder {name}")),
                    recorder: Recorder::new(config.clone()),
                    addr: config.addr,
                    config,
                    name,
                    store: MemoryStore::default(),
                });
            }
            for device in kit.devices {
                let account = device.config.account.clone();
                let contact = device.config.contact.addr;
                let media = device.config.media;
                lab.devices.push(LabDevice {
                    rng: plan.rng(&format!("device {account}")),
                    device: Device::new(device.config),
                    contact,
                    media,
                    identity: device.identity,
                });
                let index = lab.devices.len() - 1;
                lab.by_addr.insert(contact, Node::Device(index));
                lab.by_addr.insert(media, Node::Device(index));
                lab.names.insert(account, index);
            }
        }
        if let Some(config) = deployment.hub {
            lab.servers.push(LabServer {
                server: Server::new(config.clone()),
                rng: plan.rng("server hub"),
                addr: config.addr,
                config,
                store: MemoryStore::default(),
                domain: None,
            });
            lab.by_addr
                .insert(provision::hub_addr(), Node::Server(lab.servers.len() - 1));
        }
        lab
    }

    /// The lab's time, for an input.
    pub fn clock(&self) -> Now {
        Now {
            mono: self.now,
            wall: self.now.saturating_add_signed(self.wall_step),
        }
    }

    /// Steps the wall clock by `ms` (back when negative), as an operator or
    /// NTP does; the monotonic clock, and every deadline on it, runs on.
    pub fn step_wall(&mut self, ms: i64) {
        self.wall_step = self.wall_step.saturating_add(ms);
    }

    /// The device of an account.
    pub fn dev(&self, account: &str) -> usize {
        self.names
            .get(&principal(account))
            .copied()
            .unwrap_or_else(|| panic!("no device {account}"))
    }

    /// The device of an account.
    pub fn device(&self, account: &str) -> &Device {
        &self.devices[self.dev(account)].device
    }

    /// The server of a domain index (the hub is last).
    pub fn server(&self, index: usize) -> &Server {
        &self.servers[index].server
    }

    /// Makes server `i` misbehave.
    pub fn inject_faults(&mut self, i: usize, faults: Faults) {
        self.servers[i].server.inject_faults(faults);
    }

    /// Gives a device a command it must accept.
    #[track_caller]
    pub fn command(&mut self, account: &str, command: DeviceCommand) {
        let refused = self.try_command(account, command.clone());
        assert_eq!(refused, Ok(()), "{account} refused {command:?}");
    }

    /// Gives a device a command, and says whether it took it.
    pub fn try_command(&mut self, account: &str, command: DeviceCommand) -> Result<(), ApiMisuse> {
        let i = self.dev(account);
        let now = self.clock();
        let d = &mut self.devices[i];
        let outcome = d.device.command(now, command, &mut d.rng);
        self.handled(Node::Device(i));
        outcome
    }

    /// Delivers everything queued, and whatever that causes, one
    /// millisecond per datagram.
    pub fn settle(&mut self) {
        self.settle_in_order(|_| 0);
    }

    /// Like [`Lab::settle`], but delivers the queued datagrams in the order
    /// `pick(len)` chooses (an index below `len`): any interleaving.
    pub fn settle_in_order(&mut self, mut pick: impl FnMut(usize) -> usize) {
        let mut budget = 100_000;
        while !self.queue.is_empty() {
            budget -= 1;
            assert!(budget > 0, "the lab does not settle");
            let i = pick(self.queue.len()) % self.queue.len();
            let Some((from, to, bytes)) = self.queue.remove(i) else {
                break;
            };
            self.now += 1;
            if let Some(node) = self.by_addr.get(&to).copied() {
                self.receive(node, from, to, &bytes);
            }
        }
    }

    /// Restarts server `i` from its store, as after a crash: what it had
    /// not committed is lost, and it goes on from what it holds
    /// (KW-SM-025).
    pub fn restart_server(&mut self, i: usize) {
        let now = self.clock();
        let snapshot = self.servers[i]
            .store
            .load()
            .unwrap_or_else(|e| panic!("store of server {i}: {e}"));
        let s = &mut self.servers[i];
        s.server = Server::restore(s.config.clone(), snapshot, now, &mut s.rng);
        let node = s.server.account().to_string();
        self.trace.push(Step::Restarted { node });
        self.drain(Node::Server(i));
    }

    /// Restarts recorder `i` from its store (KW-REC-005).
    pub fn restart_recorder(&mut self, i: usize) {
        let snapshot = self.recorders[i]
            .store
            .load()
            .unwrap_or_else(|e| panic!("store of recorder {i}: {e}"));
        let r = &mut self.recorders[i];
        r.recorder = Recorder::restore(r.config.clone(), snapshot);
        let node = r.name.clone();
        self.trace.push(Step::Restarted { node });
    }

    /// The challenge waiting in the queue for `to`, taken out of it, for
    /// a test to answer (or not) in the device's place.
    pub fn take_challenge(&mut self, to: Addr) -> crate::wire::Challenge {
        let taken = self
            .queue
            .iter()
            .position(|(_, dst, bytes)| {
                *dst == to && matches!(Message::decode(bytes), Ok(Message::Challenge(_)))
            })
            .and_then(|at| self.queue.remove(at))
            .and_then(|(_, _, bytes)| match Message::decode(&bytes) {
                Ok(Message::Challenge(c)) => Some(c),
                _ => None,
            });
        match taken {
            Some(c) => c,
            None => panic!("no challenge queued for {to}"),
        }
    }

    /// Delivers raw bytes to the party at `to` as if from `from`.
    pub fn inject(&mut self, to: Addr, from: Addr, bytes: &[u8]) {
        if let Some(node) = self.by_addr.get(&to).copied() {
            self.receive(node, from, to, bytes);
        }
    }

    /// Hands a message to a party and carries out what it asks.
    pub fn receive(&mut self, node: Node, from: Addr, to: Addr, bytes: &[u8]) {
        let now = self.clock();
        let receive = Receive::udp(from, to, bytes);
        let (name, outcome) = match node {
            Node::Server(i) => {
                let s = &mut self.servers[i];
                let outcome = s.server.handle_receive(now, receive, &mut s.rng);
                (s.server.account().to_string(), outcome)
            }
            Node::Device(i) => {
                let d = &mut self.devices[i];
                let outcome = d.device.handle_receive(now, receive, &mut d.rng);
                (d.device.account().to_string(), outcome)
            }
            Node::Recorder(i) => {
                let r = &mut self.recorders[i];
                let outcome = r.recorder.handle_receive(now, receive, &mut r.rng);
                (format!("recorder {i}"), outcome)
            }
            Node::Agent(i) => {
                let a = &mut self.agents[i];
                let outcome = a.agent.handle_receive(now, receive, &mut a.rng);
                (a.agent.account().to_string(), outcome)
            }
        };
        if let Err(error) = outcome {
            self.trace.push(Step::Refused { node: name, error });
        }
        self.handled(node);
    }

    /// A party handled an input: what it asked is carried out, unless a
    /// staged crash takes it down now.
    fn handled(&mut self, node: Node) {
        let count = self.inputs.entry(node).or_insert(0);
        *count += 1;
        let crash = self
            .crash
            .filter(|c| node == Node::Server(c.server) && c.at == *count);
        let Some(crash) = crash else {
            self.drain(node);
            return;
        };
        self.crash = None;
        if crash.lose_outputs {
            let outputs: Vec<Output<ServerEvent>> =
                core::iter::from_fn(|| self.servers[crash.server].server.poll_output()).collect();
            let name = self.servers[crash.server].server.account().to_string();
            for output in outputs {
                if let Output::Store(group) = output {
                    let mut driver = LabDriver::new(self, node, name.clone());
                    if driver.commit(&group).is_err() {
                        break;
                    }
                }
            }
        } else {
            self.drain(node);
        }
        self.restart_server(crash.server);
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
        // A party whose deadline stays due after it handled it would spin
        // here for ever: fail, naming the time, instead of hanging.
        let mut spins_at = (self.now, 0u32);
        loop {
            let next = self.next_timer().filter(|t| *t <= end);
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            spins_at = match spins_at {
                (at, n) if at == self.now => (at, n + 1),
                _ => (self.now, 0),
            };
            assert!(
                spins_at.1 < 10_000,
                "a timer stays due at {} ms after it fired",
                self.now
            );
            let due = |deadline: Option<Millis>, now: Millis| deadline.is_some_and(|x| x <= now);
            for i in 0..self.servers.len() {
                if due(self.servers[i].server.poll_timeout(), self.now) {
                    let now = self.clock();
                    let s = &mut self.servers[i];
                    s.server.handle_timeout(now, &mut s.rng);
                    self.handled(Node::Server(i));
                }
            }
            for i in 0..self.devices.len() {
                if due(self.devices[i].device.poll_timeout(), self.now) {
                    let now = self.clock();
                    let d = &mut self.devices[i];
                    d.device.handle_timeout(now, &mut d.rng);
                    self.handled(Node::Device(i));
                }
            }
            for i in 0..self.recorders.len() {
                if due(self.recorders[i].recorder.poll_timeout(), self.now) {
                    let now = self.clock();
                    let r = &mut self.recorders[i];
                    r.recorder.handle_timeout(now, &mut r.rng);
                    self.handled(Node::Recorder(i));
                }
            }
            for i in 0..self.agents.len() {
                if due(self.agents[i].agent.poll_timeout(), self.now) {
                    let now = self.clock();
                    let a = &mut self.agents[i];
                    a.agent.handle_timeout(now, &mut a.rng);
                    self.handled(Node::Agent(i));
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
        let r = self
            .recorders
            .iter()
            .filter_map(|r| r.recorder.poll_timeout());
        let a = self.agents.iter().filter_map(|a| a.agent.poll_timeout());
        s.chain(d).chain(r).chain(a).min()
    }

    /// Carries out a party's outputs through the one driver loop
    /// ([`carry`]); a party whose store fails is restarted from it
    /// (KW-SM-024).
    pub fn drain(&mut self, node: Node) {
        match node {
            Node::Server(i) => {
                let outputs: Vec<Output<ServerEvent>> =
                    core::iter::from_fn(|| self.servers[i].server.poll_output()).collect();
                let name = self.servers[i].server.account().to_string();
                let failed = carry(outputs, &mut LabDriver::new(self, node, name)).is_err();
                if failed {
                    self.restart_server(i);
                }
            }
            Node::Device(i) => {
                let outputs: Vec<Output<DeviceEvent>> =
                    core::iter::from_fn(|| self.devices[i].device.poll_output()).collect();
                let name = self.devices[i].device.account().to_string();
                let _ = carry(outputs, &mut LabDriver::new(self, node, name));
            }
            Node::Recorder(i) => {
                let outputs: Vec<Output<RecorderEvent>> =
                    core::iter::from_fn(|| self.recorders[i].recorder.poll_output()).collect();
                let name = self.recorders[i].name.clone();
                let failed = carry(outputs, &mut LabDriver::new(self, node, name)).is_err();
                if failed {
                    self.restart_recorder(i);
                }
            }
            Node::Agent(i) => {
                let server = self.agents[i].server.clone();
                for (command, ok) in self.agents[i].agent.firewall_mut().take_log() {
                    self.trace.push(Step::Firewall {
                        server: server.clone(),
                        command,
                        ok,
                    });
                }
                let outputs: Vec<Output<FirewallEvent>> =
                    core::iter::from_fn(|| self.agents[i].agent.poll_output()).collect();
                let name = self.agents[i].agent.account().to_string();
                let _ = carry(outputs, &mut LabDriver::new(self, node, name));
            }
        }
    }

    /// Sends a message: into the trace, and onto the network unless
    /// `drop_if` drops it; media cross the firewalls.
    fn send(&mut self, from_name: String, transmit: Transmit) {
        let Transmit {
            source,
            destination,
            message,
            ..
        } = transmit;
        if matches!(message, Message::Media(_)) {
            self.trace.push(Step::Sent {
                from: from_name,
                to: destination,
                message: message.clone(),
            });
            self.media(source, destination, message);
            return;
        }
        let dropped = self.drop_if.as_mut().is_some_and(|f| f(&message));
        self.trace.push(Step::Sent {
            from: from_name,
            to: destination,
            message: message.clone(),
        });
        if !dropped {
            self.queue
                .push_back((source, destination, message.encode()));
        }
    }

    /// The firewall of the server of domain `d`.
    pub fn firewall(&self, d: usize) -> &MemoryFirewall {
        &self.agent_of(d).agent.firewall().inner
    }

    /// The firewall agent of domain `d`.
    pub fn agent_of(&self, d: usize) -> &LabAgent {
        self.agents
            .iter()
            .find(|a| a.domain == d)
            .unwrap_or_else(|| panic!("no firewall in domain {d}"))
    }

    /// The firewall of the server of domain `d`, to pass packets through.
    pub fn firewall_mut(&mut self, d: usize) -> &mut MemoryFirewall {
        self.find_firewall(d)
            .unwrap_or_else(|| panic!("no firewall in domain {d}"))
    }

    fn find_firewall(&mut self, d: usize) -> Option<&mut MemoryFirewall> {
        self.agents
            .iter_mut()
            .find(|a| a.domain == d)
            .map(|a| &mut a.agent.firewall_mut().inner)
    }

    /// Media crosses the destination domain's firewall, with the sender's
    /// address translated by its own firewall's mapping.
    fn media(&mut self, from: Addr, to: Addr, message: Message) {
        let now = self.now;
        let seen_from = provision::domain_of(&from)
            .and_then(|d| self.find_firewall(d))
            .and_then(|fw| {
                fw.pinholes()
                    .into_iter()
                    .find(|p| p.dst == from && p.public.is_some() && p.expires_at > now)
                    .and_then(|p| p.public)
            })
            .unwrap_or(from);
        let Some(d) = provision::domain_of(&to) else {
            return;
        };
        let Some(fw) = self.find_firewall(d) else {
            return;
        };
        let Filtered { deliver, copies } = fw.filter(now, Transport::Udp, seen_from, to);
        let bytes = message.encode();
        for copy in copies {
            self.queue.push_back((seen_from, copy, bytes.clone()));
        }
        if let Some(dst) = deliver {
            self.queue.push_back((seen_from, dst, bytes));
        }
    }

    /// Registers every device (F1) and settles.
    pub fn register_all(&mut self) {
        for i in 0..self.devices.len() {
            let now = self.clock();
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
            .unwrap_or_else(|| panic!("{from} placed no call"));
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
        let mut at: Vec<usize> = Vec::with_capacity(steps.len());
        let mut after = from;
        for (k, (name, pred)) in steps.iter().enumerate() {
            if let Some(i) = self.find(after, pred) {
                at.push(i);
                after = i + 1;
                continue;
            }
            let previous = k
                .checked_sub(1)
                .and_then(|p| Some((steps.get(p)?.0, *at.get(p)?)));
            let problem = match (previous, self.find(from, pred)) {
                (Some((prev, prev_at)), Some(i)) => format!(
                    "{claim}: \"{name}\" (step {i}) does not come after \"{prev}\" (step {prev_at})"
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

    /// The events of a device.
    pub fn device_events(&self, account: &str) -> Vec<DeviceEvent> {
        self.trace
            .iter()
            .filter_map(|s| match s {
                Step::Device { device, event } if device == account => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    /// The events of a server.
    pub fn server_events(&self, account: &str) -> Vec<ServerEvent> {
        self.trace
            .iter()
            .filter_map(|s| match s {
                Step::Server { server, event } if server == account => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    /// What the firewall of `account`'s domain carried out for it; every
    /// change must have been carried out.
    #[track_caller]
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

    /// Whether server `i` ended `session` for `end`.
    pub fn session_ended(&self, i: usize, session: SessionId, end: SessionEnd) -> bool {
        let name = self.servers[i].server.account().to_string();
        self.server_events(&name)
            .contains(&ServerEvent::SessionEnded(session, end))
    }
}

/// How the lab carries out one party's outputs.
struct LabDriver<'l> {
    lab: &'l mut Lab,
    node: Node,
    name: String,
}

impl<'l> LabDriver<'l> {
    fn new(lab: &'l mut Lab, node: Node, name: String) -> Self {
        Self { lab, node, name }
    }

    fn transmit(&mut self, transmit: Transmit) {
        let name = self.name.clone();
        self.lab.send(name, transmit);
    }

    fn commit(&mut self, group: &[StoreWrite]) -> Result<(), StoreError> {
        let store = match self.node {
            Node::Server(i) => &mut self.lab.servers[i].store,
            Node::Recorder(i) => &mut self.lab.recorders[i].store,
            // Devices and agents keep nothing durable.
            Node::Device(_) | Node::Agent(_) => return Ok(()),
        };
        store.commit(group)?;
        for write in group {
            self.lab.trace.push(Step::Stored {
                server: self.name.clone(),
                write: write.clone(),
            });
        }
        Ok(())
    }
}

macro_rules! lab_driver {
    ($event:ty, $step:ident, $field:ident) => {
        impl Driver<$event> for LabDriver<'_> {
            fn transmit(&mut self, transmit: Transmit) {
                LabDriver::transmit(self, transmit);
            }
            fn commit(&mut self, group: &[StoreWrite]) -> Result<(), StoreError> {
                LabDriver::commit(self, group)
            }
            fn event(&mut self, event: $event) {
                self.lab.trace.push(Step::$step {
                    $field: self.name.clone(),
                    event,
                });
            }
        }
    };
}

lab_driver!(DeviceEvent, Device, device);
lab_driver!(ServerEvent, Server, server);
lab_driver!(RecorderEvent, Recorder, recorder);
lab_driver!(FirewallEvent, Agent, agent);
