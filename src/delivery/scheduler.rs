//! The in-memory side of the queue: which jobs are due, which are in
//! flight, and which target each waits for. The store stays the durable
//! record; this keeps the hot path off it, so that a delivery costs no store
//! read and the workers never re-scan the store to find work.
//!
//! Every job the daemon knows of has one entry here, from the moment it is
//! written to the store until its completion has been applied to the store
//! ([`Scheduler::forget`]). Refilling from the store skips known ids, so a
//! job that is in flight, or finished but not yet removed from the store, is
//! never taken twice.
//!
//! Memory is bounded: at most `resident_cap` queued jobs are held. Beyond
//! that, jobs stay only in the store (the scheduler *overflows*) and are read
//! back, in due order, once the resident set has drained to half.
//!
//! Per-target limits live here too: a job whose target (a Graph mailbox, an
//! HTTP host) is at its limit waits in that target's line without holding a
//! global slot, so one slow target cannot starve the others.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Job;

/// Where a job goes and how many may go there at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSlot {
    /// `graph:<account>`, `http:<host>`, … (jobs with the same key share the limit).
    pub key: Arc<str>,
    /// Deliveries in flight to it at most.
    pub limit: usize,
}

enum State {
    /// Queued, due at the time in the job; whether the store holds this
    /// version of it (a retry is stored once its attempt's completion is).
    Queued(Job, bool),
    /// Handed to a worker for this attempt, going to this target.
    InFlight(TargetSlot, u32),
    /// This attempt finished; the store holds the job until its completion
    /// is applied.
    Completing(u32),
    /// Handed to a worker for this attempt without a slot of its own: it
    /// rides in the same request as a job in flight (Bing Ads batches).
    Riding(u32),
}

/// The in-memory schedule. Not thread-safe by itself: the daemon keeps it
/// behind one mutex.
pub struct Scheduler {
    jobs: HashMap<u64, State>,
    /// Due jobs in due order.
    ready: VecDeque<u64>,
    /// Jobs not yet moved to `ready`, by due time (ms) and id.
    delayed: BTreeSet<(i64, u64)>,
    /// Due jobs whose target is at its limit, per target.
    blocked: HashMap<Arc<str>, VecDeque<u64>>,
    /// Deliveries in flight per target.
    busy: HashMap<Arc<str>, usize>,
    in_flight: usize,
    /// Jobs handed out by [`Scheduler::take_riders`], not yet finished.
    riding: usize,
    resident: usize,
    resident_cap: usize,
    concurrency: usize,
    overflow: bool,
    /// A refill is reading the store: forgetting waits (see [`Scheduler::forget`]).
    refilling: bool,
    deferred: Vec<(u64, u32)>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("resident", &self.resident)
            .field("in_flight", &self.in_flight)
            .field("overflow", &self.overflow)
            .finish()
    }
}

impl Scheduler {
    /// An empty schedule that holds at most `resident_cap` queued jobs and
    /// hands out at most `concurrency` at once. It starts overflowed: the
    /// store's jobs are read in by the first refill.
    pub fn new(resident_cap: usize, concurrency: usize) -> Scheduler {
        Scheduler {
            jobs: HashMap::new(),
            ready: VecDeque::new(),
            delayed: BTreeSet::new(),
            blocked: HashMap::new(),
            busy: HashMap::new(),
            in_flight: 0,
            riding: 0,
            resident: 0,
            resident_cap: resident_cap.max(1),
            concurrency: concurrency.max(1),
            overflow: true,
            refilling: false,
            deferred: Vec::new(),
        }
    }

    /// Whether the job `id` is known (queued, in flight or completing).
    pub fn knows(&self, id: u64) -> bool {
        self.jobs.contains_key(&id)
    }

    /// Adds jobs just made durable (or read from the store). Known ids are
    /// skipped. At the resident cap, a job due earlier than the latest
    /// waiting one takes its place (that one stays in the store only);
    /// otherwise the new job does. Either way the schedule overflows.
    /// Returns how many were added.
    pub fn add(&mut self, jobs: impl IntoIterator<Item = Job>) -> usize {
        let mut added = 0;
        for job in jobs {
            if self.jobs.contains_key(&job.id) {
                continue;
            }
            if self.resident >= self.resident_cap {
                self.overflow = true;
                let due = job.due_at.timestamp_millis();
                let latest = self.delayed.last().copied();
                let stored = |id: &u64| matches!(self.jobs.get(id), Some(State::Queued(_, true)));
                match latest {
                    // Jobs due later must not keep a due one out of memory
                    // (only one the store holds as it is can leave).
                    Some(latest) if latest > (due, job.id) && stored(&latest.1) => {
                        self.delayed.remove(&latest);
                        self.jobs.remove(&latest.1);
                        self.resident -= 1;
                    }
                    _ => continue,
                }
            }
            self.insert_queued(job, true);
            added += 1;
        }
        added
    }

    fn insert_queued(&mut self, job: Job, stored: bool) {
        let id = job.id;
        self.delayed.insert((job.due_at.timestamp_millis(), id));
        self.jobs.insert(id, State::Queued(job, stored));
        self.resident += 1;
    }

    /// Records that some jobs may be in the store only (a write whose
    /// outcome is unknown, a request abandoned mid-way): the next refill
    /// reads the store.
    pub fn mark_overflow(&mut self) {
        self.overflow = true;
    }

    /// Whether jobs wait in the store only and there is room to read them.
    pub fn wants_refill(&self) -> bool {
        self.overflow && self.resident <= self.resident_cap / 2
    }

    /// Room for this many more resident jobs.
    pub fn room(&self) -> usize {
        self.resident_cap.saturating_sub(self.resident)
    }

    /// A refill begins reading the store. Until [`Scheduler::end_refill`],
    /// finished jobs are not forgotten: the refill may have read one before
    /// its completion reached the store, and must still see it as known.
    pub fn begin_refill(&mut self) {
        self.refilling = true;
        self.overflow = false;
    }

    /// The refill is over; `complete` if it read the store to its end
    /// (every queued job is resident again, unless the cap was reached).
    pub fn end_refill(&mut self, complete: bool) {
        self.refilling = false;
        if !complete {
            self.overflow = true;
        }
        let deferred = std::mem::take(&mut self.deferred);
        self.forget(deferred);
    }

    /// Whether some jobs are in the store only.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// The next job to deliver at `now`, if a global slot is free and a due
    /// job's target has room; `target_of` says where a job goes. The job is
    /// in flight until [`Scheduler::finished`].
    pub fn next(
        &mut self,
        now: DateTime<Utc>,
        mut target_of: impl FnMut(&Job) -> TargetSlot,
    ) -> Option<Job> {
        if self.in_flight >= self.concurrency {
            return None;
        }
        let now_ms = now.timestamp_millis();
        while let Some((due, id)) = self.delayed.first().copied() {
            if due > now_ms {
                break;
            }
            self.delayed.pop_first();
            self.ready.push_back(id);
        }
        while let Some(id) = self.ready.pop_front() {
            let Some(State::Queued(job, _)) = self.jobs.get(&id) else {
                continue;
            };
            let slot = target_of(job);
            let busy = self.busy.entry(slot.key.clone()).or_insert(0);
            if *busy >= slot.limit.max(1) {
                self.blocked.entry(slot.key).or_default().push_back(id);
                continue;
            }
            *busy += 1;
            self.in_flight += 1;
            self.resident -= 1;
            let attempt = job.attempt;
            let state = self
                .jobs
                .insert(id, State::InFlight(slot, attempt))
                .expect("the job is known");
            let State::Queued(job, _) = state else {
                unreachable!("checked above")
            };
            return Some(job);
        }
        None
    }

    /// When the earliest job not yet due comes due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.delayed
            .first()
            .and_then(|(due, _)| DateTime::from_timestamp_millis(*due))
    }

    /// A delivery of job `id` ended. `retry` is the job to try again (its
    /// next due time set); otherwise the job waits for [`Scheduler::forget`]
    /// once its completion is in the store. Frees its slots.
    pub fn finished(&mut self, id: u64, retry: Option<Job>) {
        let (target, attempt) = match self.jobs.remove(&id) {
            Some(State::InFlight(target, attempt)) => (target, attempt),
            Some(State::Riding(attempt)) => {
                self.riding -= 1;
                return self.after_attempt(id, attempt, retry);
            }
            _ => return,
        };
        self.in_flight -= 1;
        let busy = match self.busy.get_mut(&target.key) {
            Some(busy) => {
                *busy = busy.saturating_sub(1);
                *busy
            }
            None => 0,
        };
        if busy == 0 {
            self.busy.remove(&target.key);
        }
        if let Some(mut line) = self.blocked.remove(&target.key) {
            // Wake as many as the target has room for; with nothing left in
            // flight, wake all (a reload may have moved them elsewhere, and
            // no later finish would come for this target).
            let wake = if busy == 0 {
                line.len()
            } else {
                target.limit.saturating_sub(busy).min(line.len())
            };
            for waiting in line.drain(..wake).rev() {
                self.ready.push_front(waiting);
            }
            if !line.is_empty() {
                self.blocked.insert(target.key, line);
            }
        }
        self.after_attempt(id, attempt, retry);
    }

    fn after_attempt(&mut self, id: u64, attempt: u32, retry: Option<Job>) {
        match retry {
            Some(job) => self.insert_queued(job, false),
            None => {
                self.jobs.insert(id, State::Completing(attempt));
            }
        }
    }

    /// Takes up to `max` due jobs for which `fits` holds, to go out in the
    /// same request as a job just taken by [`Scheduler::next`] (a Bing Ads
    /// batch carries up to 1,000 conversions in one call). They take no
    /// global or target slot: the request they ride in holds one. Each ends
    /// with [`Scheduler::finished`] like any other; until then it counts in
    /// [`Scheduler::in_flight`].
    pub fn take_riders(
        &mut self,
        now: DateTime<Utc>,
        max: usize,
        mut fits: impl FnMut(&Job) -> bool,
    ) -> Vec<Job> {
        let mut riders = Vec::new();
        if max == 0 {
            return riders;
        }
        let now_ms = now.timestamp_millis();
        while let Some((due, id)) = self.delayed.first().copied() {
            if due > now_ms {
                break;
            }
            self.delayed.pop_first();
            self.ready.push_back(id);
        }
        let mut take = |jobs: &mut HashMap<u64, State>, line: &mut VecDeque<u64>| {
            line.retain(|id| {
                if riders.len() >= max {
                    return true;
                }
                match jobs.get(id) {
                    Some(State::Queued(job, _)) if fits(job) => {}
                    // Stale entries (taken meanwhile) are dropped as `next` would.
                    Some(State::Queued(..)) => return true,
                    _ => return false,
                }
                let attempt = match jobs.get(id) {
                    Some(State::Queued(job, _)) => job.attempt,
                    _ => unreachable!("checked above"),
                };
                if let Some(State::Queued(job, _)) = jobs.insert(*id, State::Riding(attempt)) {
                    riders.push(job);
                }
                false
            });
        };
        // Jobs waiting for their target first: they came due earlier.
        for line in self.blocked.values_mut() {
            take(&mut self.jobs, line);
        }
        take(&mut self.jobs, &mut self.ready);
        self.blocked.retain(|_, line| !line.is_empty());
        self.riding += riders.len();
        self.resident -= riders.len();
        riders
    }

    /// Hands a job taken by [`Scheduler::next`] back unchanged (shutdown
    /// began before it started).
    pub fn put_back(&mut self, job: Job) {
        let id = job.id;
        self.finished(id, Some(job));
        if let Some(State::Queued(_, stored)) = self.jobs.get_mut(&id) {
            *stored = true;
        }
    }

    /// The completions of these attempts (job id, attempt) are in the
    /// store: forget the jobs, unless a later attempt is on its way (after
    /// a refill in progress).
    pub fn forget(&mut self, attempts: impl IntoIterator<Item = (u64, u32)>) {
        if self.refilling {
            self.deferred.extend(attempts);
            return;
        }
        for (id, attempt) in attempts {
            match self.jobs.get_mut(&id) {
                Some(State::Completing(a)) if *a == attempt => {
                    self.jobs.remove(&id);
                }
                // Its retry is now the version in the store.
                Some(State::Queued(job, stored)) if job.attempt == attempt + 1 => *stored = true,
                _ => {}
            }
        }
    }

    /// Deliveries in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight + self.riding
    }

    /// Queued jobs held in memory.
    pub fn resident(&self) -> usize {
        self.resident
    }
}

#[cfg(test)]
mod tests;
