//! The simulated deployment: who exists, where, and the event loop that
//! drives their state machines and carries out their outputs.

use std::collections::{BTreeMap, BTreeSet};

use super::SimConfig;
use super::adversary::{Adversary, Injected, Stranger, Verdict, judge};
use super::checks::{Ledger, Report};
use super::net::{Net, Node, What};
use super::plan::{
    CallKind, KEYS, Lifecycle, SESSION_SECS, T0, give_up, policy_of, record_policy_of,
};
use crate::core::{
    Addr, Device, DeviceCommand, DevicePolicy, Firewall, FirewallAgent, MemoryFirewall,
    MemoryStore, Millis, Now, Party, ProtocolError, Receive, RecordPolicy, Recorder, Server,
    ServerPolicy,
};
use crate::crypto::{SeededEntropy, TrustStore};
use crate::testkit::{Faults, Plan, SERVICE_SERIAL};
use crate::wire::{Certificate, Domain, Message, MsgType, Principal, SessionId};

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
    /// Its firewall agent (`World::agents`).
    pub(super) agent: usize,
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
    pub(super) recorders: Vec<(Recorder, Addr, MemoryStore, SeededEntropy)>,
    /// The firewall agents, one per domain, each with its firewall.
    pub(super) agents: Vec<(FirewallAgent<MemoryFirewall>, Addr, SeededEntropy)>,
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
    /// The adversary, with `--adversary`.
    pub(super) adversary: Option<Adversary>,
    /// Each domain's recording policy, as configured (`Nothing` without
    /// recorders).
    pub(super) record_policies: Vec<RecordPolicy>,
    /// The anchors of every domain: what a certificate a server stores
    /// must verify under.
    pub(super) anchors: TrustStore,
    /// Sessions whose `record-start` reached each domain's recorder, by
    /// domain.
    pub(super) record_started: BTreeSet<(usize, SessionId)>,
    /// Sessions each domain's server sent a `record-start` for, by domain.
    pub(super) records_sent: BTreeSet<(usize, SessionId)>,
    /// Sessions whose answer each server relayed, by server.
    pub(super) answers_relayed: BTreeSet<(usize, SessionId)>,
    /// Whether the outputs being carried out answer an attack: a firewall
    /// agent's refusal of it is no invariant broken.
    pub(super) answering_attack: bool,
    /// The server that just refused to read an answer it relays.
    pub(super) unread_answer: Option<usize>,
    /// Answers each server relayed unread, by server: their retransmissions
    /// (from its cache) say nothing again.
    pub(super) unread_answers: BTreeSet<(usize, SessionId)>,
    /// When each server ended each session, as its events tell: its
    /// pinholes' closes are on their way from then (`check_pinholes`).
    pub(super) ended_at: BTreeMap<(usize, SessionId), Millis>,
    /// When each server read each offer it holds the key of.
    pub(super) read_at: BTreeMap<(usize, SessionId), Millis>,
    /// The session of each pinhole a server asked its firewall to open.
    pub(super) pinhole_sessions: BTreeMap<(usize, u64), SessionId>,
}

impl World {
    pub fn build(cfg: &SimConfig) -> Self {
        let mut world = World {
            cfg: cfg.clone(),
            net: Net::new(cfg.seed, cfg.loss),
            now: T0,
            servers: Vec::new(),
            devices: Vec::new(),
            recorders: Vec::new(),
            agents: Vec::new(),
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
            adversary: None,
            record_policies: Vec::new(),
            anchors: TrustStore::new(Vec::new()),
            record_started: BTreeSet::new(),
            records_sent: BTreeSet::new(),
            answers_relayed: BTreeSet::new(),
            answering_attack: false,
            unread_answer: None,
            unread_answers: BTreeSet::new(),
            ended_at: BTreeMap::new(),
            read_at: BTreeMap::new(),
            pinhole_sessions: BTreeMap::new(),
        };
        world.ledger.report.seed = cfg.seed;
        world.ledger.report.domains = cfg.domains;
        world.ledger.report.devices = cfg.devices;
        world.ledger.report.loss = cfg.loss;
        let plan = Plan {
            label: format!("keyway sim {}", cfg.seed),
            t0: T0,
            domains: (1..=cfg.domains).map(|d| format!("d{d}.example")).collect(),
            devices: cfg.devices,
            // A transit hub, which no device trusts, between two or more
            // domains.
            hub: cfg.domains >= 2,
            record: cfg.record,
            record_policies: (1..=cfg.domains)
                .map(|d| {
                    let name = format!("d{d}.example");
                    (d - 1, record_policy_of(d - 1, &name, cfg.devices))
                })
                .collect(),
            server_policy: ServerPolicy {
                min_expires: MIN_EXPIRES_SECS,
                session_secs: SESSION_SECS,
                rekey_offers: true,
                ..ServerPolicy::default()
            },
            device_policy_of: Some(policy_of),
            device_expires: TERM_SECS,
            device_expires_spread: TERM_SPREAD_SECS,
            keys: KEYS,
            provisioned_identities: false,
            recorder_capacity: 100_000,
            ports: 40_000,
            ..Plan::default()
        };
        let deployment = plan.provision();
        world.anchors = TrustStore::new(deployment.anchors.clone());
        // Service certificates end 30 days after T0 (Plan::provision).
        let service_end = T0 / 1000 + 30 * 24 * 3600;
        let last = cfg.domains.saturating_sub(1);
        let mut forger = None;
        for (d, kit) in deployment.domains.into_iter().enumerate() {
            let name = kit.name.clone();
            world
                .ledger
                .issued(name.as_str(), SERVICE_SERIAL, service_end);
            if let Some(config) = kit.recorder {
                world
                    .ledger
                    .issued(name.as_str(), SERVICE_SERIAL + 1, service_end);
                world
                    .by_addr
                    .insert(config.addr, Node::Recorder(world.recorders.len()));
                let addr = config.addr;
                let rng = plan.rng(&format!("recorder {}", name.as_str()));
                world
                    .recorders
                    .push((Recorder::new(config), addr, MemoryStore::default(), rng));
            }
            let agent_addr = kit.agent.addr;
            world
                .by_addr
                .insert(agent_addr, Node::Agent(world.agents.len()));
            world.agents.push((
                FirewallAgent::new(kit.agent, MemoryFirewall::new(100_000)),
                agent_addr,
                plan.rng(&format!("agent {}", name.as_str())),
            ));
            let policy = match cfg.record {
                true => kit.server.policy.record.clone(),
                false => RecordPolicy::Nothing,
            };
            world.record_policies.push(policy);
            let server_addr = kit.server.addr;
            let rng = plan.rng(&format!("server {}", name.as_str()));
            let mut server = Server::new(kit.server);
            // With --tamper the last domain's server changes bodies it may
            // only read (KW-SEAL-006).
            if cfg.tamper && d == last && cfg.domains > 1 {
                server.inject_faults(Faults {
                    tamper_read_only: true,
                    ..Faults::default()
                });
            }
            if cfg.adversary && d == last {
                // With --adversary the last domain's server forges edits of
                // some of the bodies it reads (`World::arm_forgery`).
                forger = Some(world.servers.len());
            }
            world
                .servers
                .push((server, rng, server_addr, MemoryStore::default(), Some(d)));
            let server_index = world.servers.len() - 1;
            world
                .by_addr
                .insert(server_addr, Node::Server(server_index));
            for device in kit.devices {
                let account = device.config.account.clone();
                let contact = device.config.contact.addr;
                let media = device.config.media;
                world.policies.push(device.config.policy.clone());
                let rng = plan.rng(&format!("device {account}"));
                world
                    .devices
                    .push((Device::new(device.config), rng, contact, media));
                let index = world.devices.len() - 1;
                world.by_addr.insert(contact, Node::Device(index));
                world.by_addr.insert(media, Node::Device(index));
                world.device_index.insert(account, index);
            }
            world.domains.push(DomainNodes {
                name,
                server: server_index,
                agent: world.agents.len() - 1,
            });
        }
        if cfg.adversary {
            // The hub's server is of no device's domain: its attestations
            // are forgeries to every device (KW-CRYPTO-012).
            let stranger = deployment.hub.as_ref().map(|h| Stranger {
                account: h.identity.account.clone(),
                key: h.identity.signing.clone(),
                cert: h.cert.clone(),
            });
            world.adversary = Some(Adversary::new(cfg.seed, stranger, forger));
        }
        if let Some(config) = deployment.hub {
            let addr = config.addr;
            world.servers.push((
                Server::new(config),
                plan.rng("server hub"),
                addr,
                MemoryStore::default(),
                None,
            ));
            let index = world.servers.len() - 1;
            world.by_addr.insert(addr, Node::Server(index));
        }
        let mut setup = plan.rng("script");
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
                What::Deliver {
                    to,
                    from,
                    bytes,
                    attack,
                } => self.deliver(to, from, &bytes, attack),
                What::Timer(node) => self.timer(node),
                What::Script(action) => self.act(action),
            }
            if self.now >= next_check {
                self.check_state();
                next_check = self.now + 1000;
            }
        }
        self.ledger.report.events = events;
        if events >= MAX_EVENTS {
            // A run cut short proves nothing about what it did not reach.
            let now = self.now;
            self.ledger
                .violation(now, format!("the run was cut short at {events} events"));
        }
        self.now = self.end.max(self.now);
        self.check_state();
        self.check_quiescent();
        self.check_recordings();
        self.close_attacks();
        self.finish();
    }

    pub fn into_report(self) -> Report {
        self.ledger.report
    }

    // ------------------------------------------------------------ input

    fn deliver(&mut self, to: Node, from: Addr, bytes: &[u8], attack: Option<u64>) {
        let attack = attack.and_then(|id| self.adversary.as_mut()?.injected.remove(&id));
        if let Node::Device(i) = to {
            if self.offline.contains(&i) {
                match attack {
                    Some(a) => self
                        .ledger
                        .attack_refused(a.kind.name(), "its target was off line".into()),
                    None => self.ledger.report.datagrams_unreachable += 1,
                }
                return;
            }
        }
        let now = Now::at(self.now);
        let Some(destination) = self.addr_of(to) else {
            return;
        };
        let before = attack.as_ref().map(|_| self.fingerprint(to));
        let armed = attack.is_none() && self.arm_forgery(to, bytes);
        let receive = Receive::udp(from, destination, bytes);
        let outcome = match to {
            Node::Server(i) => self
                .servers
                .get_mut(i)
                .map(|(s, rng, ..)| s.handle_receive(now, receive, rng)),
            Node::Device(i) => self
                .devices
                .get_mut(i)
                .map(|(d, rng, ..)| d.handle_receive(now, receive, rng)),
            Node::Recorder(i) => self
                .recorders
                .get_mut(i)
                .map(|(r, _, _, rng)| r.handle_receive(now, receive, rng)),
            Node::Agent(i) => self
                .agents
                .get_mut(i)
                .map(|(a, _, rng)| a.handle_receive(now, receive, rng)),
        };
        if armed {
            self.disarm_forgery();
        }
        let Some(outcome) = outcome else { return };
        let attacked = attack.is_some();
        match (attack, before) {
            (Some(attack), Some(before)) => self.judge_attack(to, attack, &outcome, &before),
            _ => {
                if outcome.is_err() {
                    self.ledger.report.datagrams_refused += 1;
                }
                self.delivered(to, from, bytes, &outcome);
            }
        }
        self.answering_attack = attacked;
        self.drain(to);
        self.answering_attack = false;
    }

    /// What a party's state comes to, as far as an injected datagram may
    /// change it: the calls of a device and its registration; the
    /// sessions, keys and registrations of a server; the pinholes of a
    /// firewall; the recordings of a recorder.
    fn fingerprint(&self, node: Node) -> String {
        match node {
            Node::Device(i) => self.devices.get(i).map_or_else(String::new, |(d, ..)| {
                let calls: Vec<_> = d
                    .sessions()
                    .into_iter()
                    .map(|s| (s, d.call_state(&s)))
                    .collect();
                let serial = d.certificate().map(|c| c.tbs.serial);
                format!("{calls:?} {serial:?} {:?}", d.registered_until())
            }),
            Node::Server(i) => self.servers.get(i).map_or_else(String::new, |(s, ..)| {
                let sessions: Vec<_> = s
                    .session_ids()
                    .into_iter()
                    .map(|id| (id, s.holds_key(&id), s.session_expiry(&id)))
                    .collect();
                format!("{sessions:?} {}", s.registration_count())
            }),
            Node::Agent(i) => self
                .agents
                .get(i)
                .map_or_else(String::new, |a| format!("{:?}", a.0.firewall().pinholes())),
            Node::Recorder(i) => self.recorders.get(i).map_or_else(String::new, |r| {
                let held: Vec<_> =
                    r.0.recordings()
                        .map(|x| (x.session, x.key_count(), x.packets.len(), x.ended))
                        .collect();
                format!("{held:?}")
            }),
        }
    }

    /// Judges what the target of an injected datagram did with it.
    fn judge_attack(
        &mut self,
        to: Node,
        attack: Injected,
        outcome: &Result<(), ProtocolError>,
        before: &str,
    ) {
        let now = self.now;
        let kind = attack.kind.name();
        let unchanged = self.fingerprint(to) == before;
        match judge(attack.kind, attack.re, outcome) {
            Verdict::Detected(code) => self.ledger.attack_detected(kind, code),
            Verdict::Refused(reason) => self.ledger.attack_refused(kind, reason),
            // A copy of an `ack` of a call established: answered `ok` and
            // nothing changed, as for a duplicate (KW-FRAME-012).
            Verdict::Accepted if attack.re == MsgType::Ack && unchanged => {
                self.ledger.attack_refused(
                    kind,
                    "ack of a call already established: answered ok, nothing changed".into(),
                );
            }
            // A signed command carried out before, as it was: carried out
            // again, idempotently (KW-FW-008), changing nothing.
            Verdict::Accepted if attack.verbatim && unchanged => {
                self.ledger.attack_refused(
                    kind,
                    format!(
                        "{:?} already carried out, as it was: idempotent, nothing changed",
                        attack.re
                    ),
                );
            }
            Verdict::Accepted => {
                self.ledger
                    .attack_accepted(now, kind, format!("{to:?} took a {:?}", attack.re));
                return;
            }
        }
        // KW-ERR-004: a refused request changes nothing.
        if !attack.may_change && !unchanged {
            self.ledger.violation(
                now,
                format!(
                    "{to:?} refused an attack {kind} ({:?}) and changed its state",
                    attack.re
                ),
            );
        }
    }

    /// Makes the forging server forge the edits of some offers and
    /// answers it reads, one in `RATE` each way; whether it did.
    fn arm_forgery(&mut self, to: Node, bytes: &[u8]) -> bool {
        let Some(adversary) = self.adversary.as_mut() else {
            return false;
        };
        let Node::Server(i) = to else { return false };
        if adversary.forger != Some(i) {
            return false;
        }
        if !matches!(
            Message::decode(bytes),
            Ok(Message::Offer(_) | Message::Answer(_))
        ) {
            return false;
        }
        let (forge_edit, reorder_edits) = match adversary.below(super::adversary::RATE) {
            0 => (true, false),
            1 => (false, true),
            _ => return false,
        };
        let tamper = self.cfg.tamper;
        if let Some((server, ..)) = self.servers.get_mut(i) {
            server.inject_faults(Faults {
                tamper_read_only: tamper,
                forge_edit,
                reorder_edits,
            });
        }
        true
    }

    fn disarm_forgery(&mut self) {
        let forger = self.adversary.as_ref().and_then(|a| a.forger);
        let tamper = self.cfg.tamper;
        if let Some((server, ..)) = forger.and_then(|i| self.servers.get_mut(i)) {
            server.inject_faults(Faults {
                tamper_read_only: tamper,
                ..Faults::default()
            });
        }
    }

    /// The address a party receives signalling at.
    fn addr_of(&self, node: Node) -> Option<Addr> {
        match node {
            Node::Server(i) => self.servers.get(i).map(|s| s.2),
            Node::Device(i) => self.devices.get(i).map(|d| d.2),
            Node::Recorder(i) => self.recorders.get(i).map(|r| r.1),
            Node::Agent(i) => self.agents.get(i).map(|a| a.1),
        }
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
        let now = Now::at(self.now);
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
                if let Some((r, _, _, rng)) = self.recorders.get_mut(i) {
                    r.handle_timeout(now, rng);
                }
            }
            Node::Agent(i) => {
                if let Some((a, _, rng)) = self.agents.get_mut(i) {
                    a.handle_timeout(now, rng);
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
        let now = Now::at(self.now);
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
            self.ledger.violation(now.mono, v);
        }
    }

    /// Runs a device's timers once it is back on line (they did not run
    /// while it was off).
    pub(super) fn wake(&mut self, device: usize) {
        let now = Now::at(self.now);
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
