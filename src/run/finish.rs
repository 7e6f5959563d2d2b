//! The end of a run: stop the workers, report, and when every chunk is
//! committed, validate -> push to the sinks -> flip -> flip the sinks ->
//! retention. LMDB stays the record of versions; a sink only ever receives a
//! version that passed the gate, and learns of the flip after LMDB made it.

use crate::sched::HostId;
use crate::store::sink::{self, Sink};
use crate::store::{self, Status};

use super::coordinator::{Coordinator, store_err};
use super::event::{Event, HostState, Report};
use super::{Error, report, validation};

impl Coordinator {
    /// Ends the run after its loop stopped with `outcome`: the report, or why
    /// the run failed (exit 1) or its version was refused (exit 3).
    pub fn finish(
        mut self,
        outcome: Result<(), Error>,
        sinks: &mut [Box<dyn Sink>],
    ) -> Result<Report, Error> {
        self.workers.shutdown();
        let duration = self.out.now();
        let snapshot = self.sched.snapshot(duration);
        self.out.send(Event::Progress(snapshot.clone()));
        for host in 0..self.workers.hosts.len() {
            self.out.send(Event::Host {
                host: host as HostId,
                state: HostState::Done,
                backend: None,
                adapter: None,
            });
        }
        let mut report = report::build(&self, &snapshot, duration);
        let duration_s = duration.as_secs_f64();
        let outcome = outcome.and_then(|()| self.gate(&mut report, duration_s));
        let outcome = outcome.and_then(|()| self.publish_version(&mut report, sinks));
        if let Err(e) = &outcome {
            report.error = Some(e.to_string());
            if !matches!(e, Error::Validation(_)) {
                let _ = self
                    .store
                    .update_record(self.version, |r| r.duration_s = Some(duration_s));
            }
        }
        peak_so_far(&mut report);
        self.out.send(Event::Finished(Box::new(report.clone())));
        outcome.map(|()| report)
    }

    /// Validates the version and records the verdict; an error when it failed.
    fn gate(&mut self, report: &mut Report, duration_s: f64) -> Result<(), Error> {
        let version = self.version;
        let spot = tokio::task::block_in_place(|| self.spot.wait())?;
        self.out.log(
            "run",
            format!(
                "spot check: {} rows read and re-scored on the CPU reference in {:.2} s \
                 while the run went on (the gate waited {:.2} s for them)",
                spot.sample.len(),
                spot.took.as_secs_f64(),
                spot.waited.as_secs_f64()
            ),
        );
        let plan = validation::plan(&self.p, spot.sample, self.committer.take_scans());
        let verdict = tokio::task::block_in_place(|| {
            store::validate::validate(&self.store, version, self.live_before, &plan)
        })
        .map_err(store_err)?;
        self.out.send(Event::Validated(verdict.clone()));
        self.out.log(
            "run",
            match verdict.first_failure() {
                None => format!(
                    "version {version} passed validation ({} checks)",
                    verdict.checks.len()
                ),
                Some(c) => format!(
                    "version {version} failed validation: {}: {}",
                    c.name, c.detail
                ),
            },
        );
        report.validation = verdict.clone();
        let committed = self.store.len(version).map_err(store_err)?;
        self.store
            .update_record(version, |r| {
                r.validation = Some(verdict.clone());
                r.duration_s = Some(duration_s);
                r.committed_rows = committed;
                r.status = if verdict.passed {
                    Status::Validated
                } else {
                    Status::Failed
                };
            })
            .map_err(store_err)?;
        if verdict.passed {
            Ok(())
        } else {
            peak_so_far(report);
            Err(Error::Validation(Box::new(report.clone())))
        }
    }

    /// Pushes the validated version to every sink, flips LMDB, then each
    /// sink, and drops versions beyond `keep_versions`. A failed push flips
    /// nothing.
    fn publish_version(
        &self,
        report: &mut Report,
        sinks: &mut [Box<dyn Sink>],
    ) -> Result<(), Error> {
        let version = self.version;
        let sink_err = |e: sink::Error| Error::Failed(e.to_string());
        for s in sinks.iter_mut() {
            let started = std::time::Instant::now();
            let put = tokio::task::block_in_place(|| sink::push(&self.store, version, s.as_mut()))
                .map_err(sink_err)?;
            let seconds = started.elapsed().as_secs_f64();
            self.out.log(
                "run",
                format!(
                    "pushed version {version} to {}: {put} predictions in {seconds:.2} s \
                     ({:.0}/s)",
                    s.name(),
                    put as f64 / seconds.max(1e-9)
                ),
            );
        }
        self.store
            .flip_from(self.live_before, version)
            .map_err(store_err)?;
        report.flipped = true;
        report.live_version = Some(version);
        for s in sinks.iter_mut() {
            tokio::task::block_in_place(|| sink::flip(version, s.as_mut())).map_err(sink_err)?;
        }
        if !sinks.is_empty() {
            // For `herd store flip`, which moves LMDB only, to name them.
            let pointers: Vec<String> = sinks.iter().map(|s| s.pointer()).collect();
            if let Err(e) = self.store.note_sinks(&pointers) {
                self.out.log(
                    "run",
                    format!("warning: cannot note the sinks in the store: {e}"),
                );
            }
        }
        let keep = self.p.job.output.keep_versions as usize;
        let dropped = self.store.gc(keep).map_err(store_err)?;
        if !dropped.is_empty() {
            self.out
                .log("run", format!("retention: dropped versions {dropped:?}"));
            // The version is live by now: a sink that cannot drop old keys
            // is worth a warning, not a failed run.
            for s in sinks.iter_mut() {
                match tokio::task::block_in_place(|| sink::retire(&dropped, s.as_mut())) {
                    Ok(n) => self.out.log(
                        "run",
                        format!("retention: {} dropped {n} entries of {dropped:?}", s.name()),
                    ),
                    Err(e) => self.out.log("run", format!("warning: retention: {e}")),
                }
            }
        }
        let before = self
            .live_before
            .map(|v| format!("version {v}"))
            .unwrap_or_else(|| "nothing".into());
        self.out.log(
            "run",
            format!(
                "flipped readers of {} from {before} to version {version}",
                self.p.job.output.store.display()
            ),
        );
        Ok(())
    }
}

/// The coordinator's peak memory read again: the report is built before the
/// gate, whose pass over the version (through LMDB's map) and the flip
/// come after it, and its peak covers them too.
fn peak_so_far(report: &mut Report) {
    report.peak_rss_bytes = report.peak_rss_bytes.max(crate::worker::peak_rss_bytes());
}
