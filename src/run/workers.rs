//! The run's side of the fleet: every host started through its
//! [`HostLink`], every slot's worker, and the replacement of a worker that
//! died after it came up. What workers *did* (rows, chunks, failures) is
//! counted by the scheduler, not here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::config::{self, Fleet, Job, ReadMode, Transport};
use crate::fleet::{self, FleetEvent, HostLink, ModelFile, Spawned, WorkerLink};
use crate::model::ModelSpec;
use crate::proto::{self, ToWorker};
use crate::sched::{HostId, SlotId};

use super::event::{Event, HostState};
use super::publish::Publisher;

/// A worker that dies after loading the model is replaced (on a new slot of
/// the same host) at most this many times per original slot; one that never
/// came up is not, since it would fail the same way again.
pub const MAX_WORKER_RESTARTS: u32 = 3;

pub(super) struct SlotRt {
    pub host: HostId,
    link: Option<WorkerLink>,
    /// Said hello.
    pub hello: bool,
    /// Was sent its `Load` before it said hello ([`Prestarted::load`]).
    pub load_sent: bool,
    /// Came up (model loaded) and told to the scheduler.
    pub up: bool,
    /// Broke the protocol: its messages are dropped, and it is never replaced.
    pub violated: bool,
    /// Malformed results it sent.
    pub malformed: u32,
    /// Gone for good.
    pub down: bool,
    /// Workers this slot's line has lost and replaced so far.
    restarts: u32,
    /// What the worker was started with (test-only settings).
    env: Vec<(String, String)>,
}

pub(super) struct HostRt {
    pub cfg: config::Host,
    /// The host, or why it could not be started at all.
    pub link: Result<Arc<dyn HostLink>, String>,
    pub backend: String,
    pub adapter: String,
    pub last_error: Option<String>,
    /// Whether the host's row last showed it running: set when a worker
    /// loads the model, cleared when the host waits in a batch queue again
    /// (a requeued allocation) or is lost, so the next worker that loads
    /// shows it running again.
    pub shown_running: Arc<AtomicBool>,
    /// Its first slot (slots are named by their number after it) and how
    /// many of its slots are not down: kept so that no event scans slots.
    first_slot: Option<u32>,
    live: u32,
    /// Whether this host's workers read their own rows (`[input] read`).
    pub reads_input: bool,
    /// Input bytes its workers read, and their largest peak memory.
    pub input_bytes: u64,
    pub peak_rss_bytes: u64,
    /// Its attempts whose rows were read ahead on a hint.
    pub attempts_read_ahead: u64,
}

/// What every worker's `Load` carries but its host's settings: known as
/// soon as the model is loaded and hashed, before the input's index is
/// read ([`Prestarted::load`]).
#[derive(Clone, Debug)]
pub struct LoadPlan {
    spec: ModelSpec,
    sha256: String,
    /// The job's weights file (a host that ships the model names its copy).
    weights: String,
    num_features: usize,
    /// The job's input as a worker that reads its own rows gets it.
    input: config::Input,
}

impl LoadPlan {
    /// For `job`, whose input is read as `input` says (its `on_invalid` as
    /// the model leaves it), with the model's hash and the input's
    /// features.
    pub fn new(job: &Job, input: config::Input, sha256: &str, num_features: usize) -> LoadPlan {
        LoadPlan {
            spec: job.model.spec.clone(),
            sha256: sha256.to_string(),
            weights: job.model.weights.display().to_string(),
            num_features,
            input,
        }
    }

    /// The `Load` of a worker of host `cfg`, which reads the weights at
    /// `model_path` (`None`: the job's own file).
    pub(super) fn message(&self, cfg: &config::Host, model_path: Option<String>) -> ToWorker {
        ToWorker::Load {
            spec: self.spec.clone(),
            sha256: self.sha256.clone(),
            path: model_path.unwrap_or_else(|| self.weights.clone()),
            num_features: self.num_features,
            device: cfg.device,
            threads: cfg.threads.unwrap_or_else(|| local_threads(cfg.slots)),
            input: worker_reads(self.input.read, &self.input.path, cfg)
                .then(|| Box::new(self.input.clone())),
            needs_history: self.spec.reads_history(),
        }
    }
}

/// Threads per local worker when the host does not say: cores / slots.
fn local_threads(slots: u32) -> u32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    (cores / slots.max(1)).max(1)
}

/// Whether the workers of `host` read their own rows: `auto` says yes for
/// local hosts (same machine, same path) and for URL inputs (any machine
/// reaches the store), no for other hosts of a local input, whose machine
/// may not have the path.
pub(super) fn worker_reads(mode: ReadMode, input: &config::Location, host: &config::Host) -> bool {
    match mode {
        ReadMode::Coordinator => false,
        ReadMode::Workers => true,
        ReadMode::Auto => {
            matches!(input, config::Location::Url(_)) || matches!(host.transport, Transport::Local)
        }
    }
}

/// Workers of the fleet's local hosts started before the run is prepared,
/// by slot: their processes start and say hello while the coordinator reads
/// the input's index, and [`Workers::start`] takes them for their slots.
pub struct Prestarted(BTreeMap<u32, Early>);

/// A worker started before the run was prepared.
struct Early {
    spawned: Spawned,
    /// Its host (index in the fleet).
    host: usize,
    /// Its `Load` was written to it.
    load_sent: bool,
}

impl Prestarted {
    /// A worker for each slot of `fleet`'s local hosts, the slots numbered
    /// as [`Workers::start`] numbers them. A worker that cannot start is
    /// left out: [`Workers::start`] starts its slot's worker and reports
    /// why it cannot.
    pub fn start(fleet: &Fleet) -> Prestarted {
        let mut started = BTreeMap::new();
        let mut slot = 0u32;
        for (host, h) in fleet.hosts.iter().enumerate() {
            for _ in 0..h.slots {
                if h.transport == config::Transport::Local
                    && let Ok(spawned) = fleet::local::spawn(&crate::test_hooks::worker_env(slot))
                {
                    let load_sent = false;
                    started.insert(
                        slot,
                        Early {
                            spawned,
                            host,
                            load_sent,
                        },
                    );
                }
                slot += 1;
            }
        }
        Prestarted(started)
    }

    /// Writes each worker its `Load` (`fleet` is the fleet they were
    /// started for): the model loads and the input's part files are opened
    /// while the coordinator still reads the input's index, instead of
    /// after. A worker that cannot be written to is sent its `Load` again
    /// when it says hello (and fails then as it would have).
    pub async fn load(mut self, fleet: &Fleet, plan: &LoadPlan) -> Prestarted {
        use tokio::io::AsyncWriteExt;
        for early in self.0.values_mut() {
            let Some(cfg) = fleet.hosts.get(early.host) else {
                continue;
            };
            let Ok(frame) = proto::encode(&plan.message(cfg, None)) else {
                continue;
            };
            let stdin = &mut early.spawned.stdin;
            early.load_sent = stdin.write_all(&frame).await.is_ok() && stdin.flush().await.is_ok();
        }
        self
    }
}

/// Every host and slot of the run.
pub(super) struct Workers {
    pub hosts: Vec<HostRt>,
    pub slots: BTreeMap<SlotId, SlotRt>,
    next_slot: u32,
    /// Slots not down, of every host.
    live: u32,
    /// Where every worker's events go (replacements too).
    events: mpsc::UnboundedSender<FleetEvent>,
}

impl Workers {
    /// Starts every host of `fleet` (hosts that need setting up do so in the
    /// background, all at once) and a worker on each of their slots.
    pub fn start(
        fleet: &Fleet,
        model: &ModelFile,
        events: mpsc::UnboundedSender<FleetEvent>,
        out: &Publisher,
        mut prestarted: Prestarted,
    ) -> Workers {
        let mut w = Workers {
            hosts: Vec::with_capacity(fleet.hosts.len()),
            slots: BTreeMap::new(),
            next_slot: 0,
            live: 0,
            events,
        };
        for (hi, h) in fleet.hosts.iter().enumerate() {
            let link = fleet::start(h, Some(model.clone()));
            let shown_running = Arc::new(AtomicBool::new(false));
            if let Ok(link) = &link {
                announce_when_ready(link.clone(), h.name.clone(), out.clone());
                let shown = shown_running.clone();
                forward_pending(link.as_ref(), hi as HostId, shown, out.clone());
            }
            w.hosts.push(HostRt {
                cfg: h.clone(),
                link,
                backend: String::new(),
                adapter: String::new(),
                last_error: None,
                shown_running,
                first_slot: None,
                live: 0,
                reads_input: false,
                input_bytes: 0,
                attempts_read_ahead: 0,
                peak_rss_bytes: 0,
            });
            out.send(Event::Host {
                host: hi as HostId,
                state: HostState::Connecting,
                backend: None,
                adapter: None,
            });
            for _ in 0..h.slots {
                let env = crate::test_hooks::worker_env(w.next_slot);
                let early = prestarted
                    .0
                    .remove(&w.next_slot)
                    .map(|e| (e.spawned, e.load_sent));
                // A worker that cannot start is logged and its slot stays down.
                let _ = w.add_slot(hi as HostId, env, 0, out, early);
            }
        }
        w
    }

    /// Every slot of `fleet` linked in memory: frames for any worker go to
    /// `frames`, and no process starts (benchmarks play the workers).
    pub fn in_memory(fleet: &Fleet, frames: mpsc::UnboundedSender<Vec<u8>>) -> Workers {
        let (events, _) = mpsc::unbounded_channel();
        let mut w = Workers {
            hosts: Vec::with_capacity(fleet.hosts.len()),
            slots: BTreeMap::new(),
            next_slot: 0,
            live: 0,
            events,
        };
        for (hi, h) in fleet.hosts.iter().enumerate() {
            w.hosts.push(HostRt {
                cfg: h.clone(),
                link: Err("in memory: no host to start workers on".to_string()),
                backend: String::new(),
                adapter: String::new(),
                last_error: None,
                shown_running: Arc::default(),
                first_slot: None,
                live: 0,
                reads_input: false,
                input_bytes: 0,
                attempts_read_ahead: 0,
                peak_rss_bytes: 0,
            });
            for _ in 0..h.slots {
                let slot = SlotId(w.next_slot);
                w.next_slot += 1;
                let host = &mut w.hosts[hi];
                host.first_slot.get_or_insert(slot.0);
                host.live += 1;
                w.live += 1;
                let rt = SlotRt {
                    host: hi as HostId,
                    link: Some(WorkerLink::in_memory(slot, frames.clone())),
                    hello: false,
                    load_sent: false,
                    up: false,
                    violated: false,
                    malformed: 0,
                    down: false,
                    restarts: 0,
                    env: Vec::new(),
                };
                w.slots.insert(slot, rt);
            }
        }
        w
    }

    /// Starts a worker on a new slot of `host` (or takes `early`, its
    /// worker started before the run was prepared).
    fn add_slot(
        &mut self,
        host: HostId,
        env: Vec<(String, String)>,
        restarts: u32,
        out: &Publisher,
        early: Option<(Spawned, bool)>,
    ) -> Result<SlotId, String> {
        let slot = SlotId(self.next_slot);
        self.next_slot += 1;
        let h = &mut self.hosts[host as usize];
        h.first_slot.get_or_insert(slot.0);
        let load_sent = matches!((&early, &h.link), (Some((_, true)), Ok(_)));
        let started = match (early, &h.link) {
            (Some((early, _)), Ok(_)) => Ok(early),
            (_, Ok(link)) => link.start_worker(&env),
            (_, Err(e)) => Err(e.clone()),
        };
        let mut rt = SlotRt {
            host,
            link: None,
            hello: false,
            load_sent,
            up: false,
            violated: false,
            malformed: 0,
            down: false,
            restarts,
            env,
        };
        let outcome = match started {
            Ok(spawned) => {
                rt.link = Some(fleet::attach(slot, spawned, self.events.clone()));
                h.live += 1;
                self.live += 1;
                Ok(slot)
            }
            Err(e) => {
                rt.down = true;
                h.last_error = Some(e.clone());
                out.log(&h.cfg.name, e.clone());
                Err(e)
            }
        };
        self.slots.insert(slot, rt);
        outcome
    }

    /// Replaces the dead worker of `slot` on a new slot of its host, when it
    /// had come up and its line has restarts left; says what it did.
    pub fn replace(&mut self, slot: SlotId, out: &Publisher) -> Option<String> {
        let rt = &self.slots[&slot];
        if !rt.up || rt.violated || rt.restarts >= MAX_WORKER_RESTARTS {
            return None;
        }
        let (host, restarts, env) = (rt.host, rt.restarts + 1, rt.env.clone());
        Some(match self.add_slot(host, env, restarts, out, None) {
            Ok(new) => format!(
                "restarting the worker as {} (restart {restarts} of {MAX_WORKER_RESTARTS})",
                self.slot_name(new)
            ),
            Err(e) => format!("cannot restart the worker: {e}"),
        })
    }

    /// `host#N`: the slot's name, numbered within its host.
    pub fn slot_name(&self, slot: SlotId) -> String {
        let hi = self.slots[&slot].host;
        let first = self.hosts[hi as usize].first_slot.unwrap_or(slot.0);
        format!("{}#{}", self.hosts[hi as usize].cfg.name, slot.0 - first)
    }

    pub fn host_of(&self, slot: SlotId) -> HostId {
        self.slots[&slot].host
    }

    /// Queues `msg` for the worker of `slot`; an error means it is gone.
    pub fn send(&self, slot: SlotId, msg: &ToWorker) -> Result<(), String> {
        match self.slots.get(&slot).and_then(|s| s.link.as_ref()) {
            Some(link) => link.send(msg),
            None => Err("worker gone".to_string()),
        }
    }

    /// Queues an encoded frame for the worker of `slot`.
    pub fn send_frame(&self, slot: SlotId, frame: Vec<u8>) -> Result<(), String> {
        match self.slots.get(&slot).and_then(|s| s.link.as_ref()) {
            Some(link) => link.send_frame(frame),
            None => Err("worker gone".to_string()),
        }
    }

    /// Kills the worker of `slot` (its exit event follows).
    pub fn kill(&mut self, slot: SlotId) {
        if let Some(link) = self.slots.get_mut(&slot).and_then(|s| s.link.as_mut()) {
            link.kill();
        }
    }

    /// Marks `slot` gone for good; false when it already was.
    pub fn mark_down(&mut self, slot: SlotId) -> bool {
        let rt = self.slots.get_mut(&slot).expect("known slot");
        if rt.down {
            return false;
        }
        rt.down = true;
        rt.link = None;
        self.hosts[rt.host as usize].live -= 1;
        self.live -= 1;
        true
    }

    /// Every worker of `host` is gone.
    pub fn host_down(&self, host: HostId) -> bool {
        self.hosts[host as usize].live == 0
    }

    /// Every worker of every host is gone.
    pub fn all_down(&self) -> bool {
        self.live == 0
    }

    /// `host: last error` for each host that had one.
    pub fn host_errors(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter_map(|h| {
                h.last_error
                    .as_ref()
                    .map(|e| format!("{}: {e}", h.cfg.name))
            })
            .collect()
    }

    /// Asks every worker to shut down; links dropped later kill any that do
    /// not listen. Then every host gives back what it holds outside this
    /// process (a batch allocation).
    pub fn shutdown(&self) {
        for rt in self.slots.values() {
            if let Some(l) = rt.link.as_ref() {
                let _ = l.send(&ToWorker::Shutdown);
            }
        }
        self.close_hosts();
    }

    fn close_hosts(&self) {
        for h in &self.hosts {
            if let Ok(link) = &h.link {
                link.close();
            }
        }
    }
}

impl Drop for Workers {
    /// However the run ends (an error before `finish` too), no host keeps
    /// an allocation.
    fn drop(&mut self) {
        self.close_hosts();
    }
}

/// Shows a host waiting in a batch queue as such, with the queue's reason,
/// until its setup goes on (then it is connecting again, until a worker
/// loads the model: `shown_running` is cleared for that).
fn forward_pending(
    link: &dyn HostLink,
    host: HostId,
    shown_running: Arc<AtomicBool>,
    out: Publisher,
) {
    let Some(mut rx) = link.pending() else {
        return;
    };
    tokio::spawn(async move {
        let mut shown = false;
        while rx.changed().await.is_ok() {
            let reason = rx.borrow_and_update().clone();
            let state = match reason {
                Some(why) => HostState::Pending(why),
                None if shown => HostState::Connecting,
                None => continue,
            };
            shown = matches!(state, HostState::Pending(_));
            shown_running.store(false, Ordering::SeqCst);
            out.send(Event::Host {
                host,
                state,
                backend: None,
                adapter: None,
            });
        }
    });
}

/// Logs how a host's setup went once it is ready (nothing for hosts with no
/// setup; a failure shows up as its workers' exits).
fn announce_when_ready(link: Arc<dyn HostLink>, name: String, out: Publisher) {
    tokio::spawn(async move {
        if let Ok(Some(line)) = link.ready().await {
            out.log(&name, line);
        }
    });
}
