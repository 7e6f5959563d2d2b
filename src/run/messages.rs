//! The coordinator's handling of its workers' messages and exits: each
//! message is routed to the attempt it names (only an attempt running on the
//! sending slot is taken; anything else is a protocol violation that ends
//! that worker), checked, and turned into an input of the scheduler.

use std::sync::atomic::Ordering;

use crate::fleet::FleetEvent;
use crate::model::Predictions;
use crate::proto::{self, FromWorker};
use crate::sched::{AttemptId, Input, SlotId};

use super::Prepared;
use super::coordinator::{AttemptRt, AttemptState, Coordinator};
use super::event::{Event, HostState};

/// A worker that sends this many malformed results is stopped (and not
/// replaced), as for a protocol violation: one bad result fails only its
/// attempt, but a worker that keeps sending them would burn every retry of
/// the chunks it pulls.
pub const MAX_MALFORMED_RESULTS: u32 = 2;

impl Coordinator {
    /// One event of a worker.
    pub fn on_fleet_event(&mut self, ev: FleetEvent) {
        match ev {
            FleetEvent::Message { slot, msg } => self.on_worker_message(slot, msg),
            FleetEvent::Stderr { slot, line } => {
                self.out.log(&self.workers.slot_name(slot), line);
            }
            FleetEvent::Exited { slot, reason } => self.on_worker_exit(slot, reason),
        }
    }

    /// A message from the worker of `slot`. Only a message about an attempt
    /// running on that slot is taken; anything else is a protocol violation
    /// that ends the slot's worker (its attempts are retried elsewhere).
    fn on_worker_message(&mut self, slot: SlotId, msg: FromWorker) {
        let Some(rt) = self.workers.slots.get(&slot) else {
            return;
        };
        if rt.down || rt.violated {
            return; // a late message of a worker gone, or being stopped
        }
        let (said_hello, up) = (rt.hello, rt.up);
        if let Some(attempt) = msg_attempt(&msg) {
            match self.route(slot, attempt, &msg) {
                Route::Take => {}
                Route::Ignore => return,
                Route::Violation(why) => return self.violation(slot, why),
            }
        }
        let now = self.out.now();
        match msg {
            FromWorker::Hello { .. } if said_hello => self.violation(slot, "a second Hello".into()),
            FromWorker::Hello { .. } => {
                self.workers.slots.get_mut(&slot).expect("known slot").hello = true;
                self.on_hello(slot, &msg)
            }
            FromWorker::Loaded { .. } if up => {
                self.violation(slot, "Loaded from a worker already loaded".into())
            }
            FromWorker::Loaded {
                backend, adapter, ..
            } => self.on_loaded(slot, backend, adapter),
            FromWorker::Progress { attempt, rows_done } => {
                self.sched
                    .handle(now, Input::Progress { attempt, rows_done });
            }
            FromWorker::Result {
                attempt,
                predictions,
                input_bytes,
                read_ahead,
                peak_rss_bytes,
            } => {
                let host = self.workers.host_of(slot) as usize;
                let h = &mut self.workers.hosts[host];
                h.input_bytes += input_bytes;
                h.attempts_read_ahead += u64::from(read_ahead);
                h.peak_rss_bytes = h.peak_rss_bytes.max(peak_rss_bytes);
                self.on_result(slot, attempt, predictions);
            }
            FromWorker::InvalidInput { attempt, row } => self.on_invalid_input(slot, attempt, row),
            FromWorker::Error {
                attempt: Some(attempt),
                message,
            } => {
                if let Some(a) = self.attempts.get_mut(&attempt) {
                    a.state = AttemptState::Over;
                }
                let source = self.workers.slot_name(slot);
                self.out
                    .log(&source, format!("attempt {attempt} failed: {message}"));
                self.attempt_failed(slot, attempt, message);
            }
            FromWorker::Error {
                attempt: None,
                message,
            } => {
                let source = self.workers.slot_name(slot);
                self.out
                    .log(&source, format!("worker cannot run: {message}"));
                self.host_error(slot, message);
                self.workers.kill(slot);
            }
        }
    }

    /// The worker of `slot` loaded the model: the slot joins the scheduler,
    /// and its host's first such message names its backend.
    fn on_loaded(&mut self, slot: SlotId, backend: String, adapter: String) {
        let host = self.workers.host_of(slot);
        self.workers.slots.get_mut(&slot).expect("known slot").up = true;
        let h = &mut self.workers.hosts[host as usize];
        if h.backend.is_empty() {
            h.backend = backend;
            h.adapter = adapter;
        }
        // The first worker up, or the first since the host waited in a
        // batch queue again or was lost, shows the host running.
        if !h.shown_running.swap(true, Ordering::SeqCst) {
            self.out.send(Event::Host {
                host,
                state: HostState::Running,
                backend: Some(h.backend.clone()),
                adapter: Some(h.adapter.clone()),
            });
        }
        self.sched
            .handle(self.out.now(), Input::SlotUp { slot, host });
    }

    /// The predictions of a routed attempt: kept for its commit when they
    /// fit the attempt, else the attempt fails, and a worker that keeps
    /// sending malformed results is stopped.
    fn on_result(&mut self, slot: SlotId, attempt: AttemptId, predictions: Predictions) {
        let a = self.attempts.get_mut(&attempt).expect("routed attempt");
        a.state = AttemptState::Over;
        let chunk = a.chunk;
        let error = match check_result(a, &predictions, &self.expect) {
            Ok(()) => {
                self.results.insert(attempt, predictions);
                let now = self.out.now();
                return self.sched.handle(now, Input::Finished { attempt });
            }
            Err(error) => error,
        };
        let source = self.workers.slot_name(slot);
        self.out.log(
            &source,
            format!("attempt {attempt} of chunk {chunk}: malformed result: {error}"),
        );
        self.attempt_failed(slot, attempt, error.clone());
        let rt = self.workers.slots.get_mut(&slot).expect("known slot");
        rt.malformed += 1;
        if rt.malformed >= MAX_MALFORMED_RESULTS {
            self.violation(
                slot,
                format!("{MAX_MALFORMED_RESULTS} malformed results (the last: {error})"),
            );
        }
    }

    /// The worker says row `row` of the attempt holds an invalid feature
    /// (`on_invalid = "error"`). The row is read here first: if it does,
    /// the run stops (exit 2, naming file, column and row); if it does not,
    /// the worker lied, a protocol violation.
    fn on_invalid_input(&mut self, slot: SlotId, attempt: AttemptId, row: u64) {
        let a = self.attempts.get_mut(&attempt).expect("routed attempt");
        a.state = AttemptState::Over;
        let input_row = a.rows.start.saturating_add(row);
        if input_row >= a.rows.end {
            let why = format!(
                "invalid input claimed at row {row} of attempt {attempt}, which has {} rows",
                a.rows.end - a.rows.start
            );
            return self.violation(slot, why);
        }
        let read = tokio::task::block_in_place(|| self.p.dataset.read_rows_at(&[input_row]));
        match read {
            Err(e) if e.invalid_feature().is_some() => self.refuse_input(&e),
            Err(e) => {
                let error = format!("cannot check input row {input_row}: {e}");
                self.attempt_failed(slot, attempt, error);
            }
            Ok(_) => self.violation(
                slot,
                format!(
                    "attempt {attempt} claimed input row {input_row} holds an invalid feature; it does not"
                ),
            ),
        }
    }

    /// The attempt failed on `slot` with `error`: noted on its host, counted
    /// as a retry, and told to the scheduler.
    fn attempt_failed(&mut self, slot: SlotId, attempt: AttemptId, error: String) {
        self.host_error(slot, error.clone());
        self.retries += 1;
        let now = self.out.now();
        self.sched.handle(now, Input::Failed { attempt, error });
    }

    /// Whether a message about `attempt` from the worker of `slot` is taken.
    fn route(&self, slot: SlotId, attempt: AttemptId, msg: &FromWorker) -> Route {
        let Some(a) = self.attempts.get(&attempt) else {
            return Route::Violation(format!(
                "{} for attempt {attempt}, which was never sent to any worker",
                msg_name(msg)
            ));
        };
        if a.slot != slot {
            return Route::Violation(format!(
                "{} for attempt {attempt}, which runs on {}",
                msg_name(msg),
                self.workers.slot_name(a.slot)
            ));
        }
        if !a.sent {
            return Route::Violation(format!(
                "{} for attempt {attempt}, whose rows were not sent yet",
                msg_name(msg)
            ));
        }
        match a.state {
            AttemptState::Running => {}
            AttemptState::Cancelled => return Route::Ignore,
            AttemptState::Over => {
                return Route::Violation(format!(
                    "{} for attempt {attempt} after its result or error",
                    msg_name(msg)
                ));
            }
        }
        if let FromWorker::Progress { rows_done, .. } = msg
            && *rows_done > a.rows.end - a.rows.start
        {
            return Route::Violation(format!(
                "progress of {rows_done} rows for attempt {attempt}, which has {} rows",
                a.rows.end - a.rows.start
            ));
        }
        Route::Take
    }

    /// The worker of `slot` broke the protocol: logged, and the worker ended
    /// (its exit fails its running attempt over, as for a crash).
    fn violation(&mut self, slot: SlotId, why: String) {
        let source = self.workers.slot_name(slot);
        let msg = format!("protocol violation, stopping this worker: {why}");
        self.out.log(&source, msg.clone());
        self.host_error(slot, msg);
        self.workers
            .slots
            .get_mut(&slot)
            .expect("known slot")
            .violated = true;
        self.workers.kill(slot);
    }

    /// A worker said hello: checks its protocol version and sends it the
    /// model to load.
    fn on_hello(&mut self, slot: SlotId, hello: &FromWorker) {
        if let Err(e) = proto::check_hello(hello) {
            self.host_error(slot, e);
            self.workers.kill(slot);
            return;
        }
        if self.workers.slots[&slot].load_sent {
            return; // a worker started early was sent it already
        }
        let host = &self.workers.hosts[self.workers.host_of(slot) as usize];
        let path = host.link.as_ref().ok().and_then(|l| l.model_path());
        let load = self.p.load.message(&host.cfg, path);
        let _ = self.workers.send(slot, &load);
    }

    fn host_error(&mut self, slot: SlotId, message: String) {
        let host = self.workers.host_of(slot);
        self.workers.hosts[host as usize].last_error = Some(message);
    }

    /// The worker of `slot` is gone: its running attempt fails over, and a
    /// worker that had come up is replaced.
    fn on_worker_exit(&mut self, slot: SlotId, reason: String) {
        if !self.workers.mark_down(slot) {
            return;
        }
        self.hints.remove(&slot);
        let source = self.workers.slot_name(slot);
        let host = self.workers.host_of(slot);
        let why = format!("worker {reason}");
        let h = &mut self.workers.hosts[host as usize];
        h.last_error.get_or_insert_with(|| why.clone());
        self.out.log(&source, why.clone());
        if self.workers.slots[&slot].up {
            let now = self.out.now();
            self.sched
                .handle(now, Input::SlotDown { slot, reason: why });
        }
        // The replacement gets a slot of its own: late events of the dead
        // worker then find their old slot down and are ignored.
        if let Some(note) = self.workers.replace(slot, &self.out) {
            self.out.log(&source, note);
        }
        if self.workers.host_down(host) {
            self.workers.hosts[host as usize]
                .shown_running
                .store(false, Ordering::SeqCst);
            self.out.send(Event::Host {
                host,
                state: HostState::Lost(reason),
                backend: None,
                adapter: None,
            });
        }
    }
}

/// What [`Coordinator::route`] decided about a worker message.
enum Route {
    Take,
    /// About an attempt that was cancelled: expected, dropped.
    Ignore,
    Violation(String),
}

/// The attempt a worker message is about, if any.
fn msg_attempt(msg: &FromWorker) -> Option<AttemptId> {
    match msg {
        FromWorker::Progress { attempt, .. }
        | FromWorker::Result { attempt, .. }
        | FromWorker::InvalidInput { attempt, .. } => Some(*attempt),
        FromWorker::Error { attempt, .. } => *attempt,
        FromWorker::Hello { .. } | FromWorker::Loaded { .. } => None,
    }
}

fn msg_name(msg: &FromWorker) -> &'static str {
    match msg {
        FromWorker::Hello { .. } => "Hello",
        FromWorker::Loaded { .. } => "Loaded",
        FromWorker::Progress { .. } => "Progress",
        FromWorker::Result { .. } => "Result",
        FromWorker::InvalidInput { .. } => "InvalidInput",
        FromWorker::Error { .. } => "Error",
    }
}

/// What every result of this run must look like.
pub(super) struct Expect {
    /// K of a top-K model; `None`: scores.
    pub top_k: Option<usize>,
    /// Scores per row of a scoring model.
    pub width: usize,
}

impl Expect {
    pub fn of(p: &Prepared) -> Expect {
        let empty = crate::model::Rows {
            ids: crate::model::EntityIds::Int(Vec::new()),
            num_features: p.dataset.num_features(),
            features: Vec::new(),
            history_offsets: if p.dataset.has_history() {
                vec![0]
            } else {
                Vec::new()
            },
            history_items: Vec::new(),
        };
        let width = match p.model.predict_reference(&empty) {
            Ok(Predictions::Scores { width, .. }) => width,
            Ok(Predictions::TopK { .. }) | Err(_) => 0,
        };
        Expect {
            top_k: p.job.model.spec.top_k(),
            width,
        }
    }
}

/// Checks a result against its attempt: the row count (exact, or from the
/// stop row up to all rows when the worker was told to stop early), and the
/// kind and shape of the values. Non-finite scores are the model's, not a
/// malformed result: they are committed and the gate's `finite` check
/// (`[validate] max_non_finite`) judges the version.
fn check_result(a: &AttemptRt, preds: &Predictions, expect: &Expect) -> Result<(), String> {
    let sent = a.rows.end - a.rows.start;
    let n = preds.len() as u64;
    let least = a.stop_at.map_or(sent, |s| s.min(sent));
    match preds {
        Predictions::Scores { width, values } => {
            if expect.top_k.is_some() {
                return Err("scores where top-K lists were expected".into());
            }
            if *width != expect.width || values.len() % width.max(&1) != 0 {
                return Err(format!(
                    "{} values of width {width}, expected rows of {} scores",
                    values.len(),
                    expect.width
                ));
            }
        }
        Predictions::TopK {
            offsets,
            items,
            scores,
        } => {
            let Some(k) = expect.top_k else {
                return Err("top-K lists where scores were expected".into());
            };
            if offsets.first() != Some(&0)
                || offsets.windows(2).any(|w| w[0] > w[1])
                || offsets.last().map(|&o| o as usize) != Some(items.len())
                || items.len() != scores.len()
            {
                return Err(format!(
                    "inconsistent top-K lists ({} offsets, {} items, {} scores)",
                    offsets.len(),
                    items.len(),
                    scores.len()
                ));
            }
            if let Some(i) = offsets.windows(2).position(|w| (w[1] - w[0]) as usize > k) {
                return Err(format!(
                    "row {i} has {} pairs, more than K = {k}",
                    offsets[i + 1] - offsets[i]
                ));
            }
        }
    }
    if n < least || n > sent {
        let want = match least == sent {
            true => format!("{sent}"),
            false => format!("{least} to {sent}"),
        };
        return Err(format!(
            "worker returned {n} predictions for rows {}..{} ({want} expected)",
            a.rows.start, a.rows.end
        ));
    }
    Ok(())
}
