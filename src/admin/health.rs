//! What the probes answer: live while the poll loop turns, the API has not been failing for
//! long and no drain has outlived its deadline; ready once the instance identity is known and
//! the first poll is done, and while the notice source (the queue) can be read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub struct Health {
    /// The loop must complete a poll at least this often to count as alive.
    stall_after: Duration,
    /// API failures for this long make the agent unhealthy (a restart may pick up new
    /// credentials or endpoints).
    api_grace: Duration,
    last_poll: Mutex<Instant>,
    api_failing_since: Mutex<Option<Instant>>,
    ready: AtomicBool,
    /// Since when, and why, the notice source cannot be read (queue mode: receives fail).
    source_failing: Mutex<Option<(Instant, String)>>,
    /// Readiness survives source failures this short (one refused connection is no outage).
    source_grace: Duration,
    /// Running drains by node: when each started and when it must have ended.
    drains: Mutex<HashMap<String, (Instant, Instant)>>,
    /// Where each failed node write is counted (the log says a lasting failure once).
    metrics: Option<std::sync::Arc<sih_report::Metrics>>,
}

/// A drain still running this long after it should have ended is stuck (a restart may help:
/// the next agent resumes it from the node's record).
const STUCK_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Stalled(Duration),
    ApiFailing(Duration),
    /// A drain of this node has outlived its deadline by this much.
    DrainStuck(String, Duration),
}

impl Health {
    pub fn new(poll_interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            stall_after: (poll_interval * 10).max(Duration::from_secs(30)),
            api_grace: Duration::from_secs(120),
            last_poll: Mutex::new(now),
            api_failing_since: Mutex::new(None),
            ready: AtomicBool::new(false),
            source_failing: Mutex::new(None),
            source_grace: Duration::from_secs(5),
            drains: Mutex::new(HashMap::new()),
            metrics: None,
        }
    }

    /// Failed node writes are counted in these metrics.
    pub fn counting(mut self, metrics: std::sync::Arc<sih_report::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One failed write of a node: `not_found` or `api_error`.
    pub fn node_write_failed(&self, result: &'static str) {
        if let Some(m) = &self.metrics {
            m.node_write_failure(result);
        }
    }

    /// Liveness fails when no poll (receive) completes for this long.
    pub fn stalls_after(mut self, d: Duration) -> Self {
        self.stall_after = d;
        self
    }

    /// The notice source could not be read: readiness fails once this has lasted the grace.
    pub fn source_failed(&self, why: &str) {
        self.source_failed_at(Instant::now(), why);
    }

    fn source_failed_at(&self, now: Instant, why: &str) {
        let mut f = self
            .source_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match &mut *f {
            Some((_, reason)) => why.clone_into(reason),
            None => *f = Some((now, why.to_owned())),
        }
    }

    pub fn source_ok(&self) {
        *self
            .source_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `Ok` when ready; else why not.
    pub fn readiness(&self) -> Result<(), String> {
        self.readiness_at(Instant::now())
    }

    fn readiness_at(&self, now: Instant) -> Result<(), String> {
        // The source's trouble first: a queue that cannot be read from the start says why.
        let failing = self
            .source_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((since, why)) = failing {
            let failing_for = now.saturating_duration_since(since);
            if failing_for >= self.source_grace {
                return Err(format!(
                    "the queue cannot be read (for {:.0}s): {why}",
                    failing_for.as_secs_f64()
                ));
            }
        }
        if !self.is_ready() {
            return Err("starting".into());
        }
        Ok(())
    }

    fn drains(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Instant)>> {
        self.drains.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A drain of `node` runs and must end by `must_end` (called again when its target moves).
    pub fn drain_running(&self, node: &str, must_end: Instant) {
        let now = Instant::now();
        self.drains()
            .entry(node.to_owned())
            .and_modify(|e| e.1 = must_end)
            .or_insert((now, must_end));
    }

    pub fn drain_over(&self, node: &str) {
        self.drains().remove(node);
    }

    /// How long the oldest running drain has run.
    pub fn oldest_drain(&self) -> Duration {
        let now = Instant::now();
        self.drains()
            .values()
            .map(|(started, _)| now.saturating_duration_since(*started))
            .max()
            .unwrap_or_default()
    }

    /// Also called while start-up retries, which is progress too.
    pub fn polled(&self) {
        self.polled_at(Instant::now());
    }

    fn polled_at(&self, now: Instant) {
        *self.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn api_ok(&self) {
        *self
            .api_failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn api_failed(&self) {
        self.api_failed_at(Instant::now());
    }

    fn api_failed_at(&self, now: Instant) {
        self.api_failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(now);
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict_at(Instant::now())
    }

    fn verdict_at(&self, now: Instant) -> Verdict {
        if let Some((node, past)) = self
            .drains()
            .iter()
            .map(|(n, (_, end))| (n.clone(), now.saturating_duration_since(*end)))
            .filter(|(_, past)| *past > STUCK_AFTER)
            .max_by_key(|(_, past)| *past)
        {
            return Verdict::DrainStuck(node, past);
        }
        let last = *self.last_poll.lock().unwrap_or_else(|e| e.into_inner());
        let since_poll = now.saturating_duration_since(last);
        if since_poll > self.stall_after {
            return Verdict::Stalled(since_poll);
        }
        let failing = *self
            .api_failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match failing.map(|t| now.saturating_duration_since(t)) {
            Some(d) if d > self.api_grace => Verdict::ApiFailing(d),
            _ => Verdict::Ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_loop_or_a_long_api_outage_is_unhealthy() {
        let h = Health::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        h.polled_at(t0);
        assert_eq!(h.verdict_at(t0), Verdict::Ok);
        assert!(matches!(h.verdict_at(at(31)), Verdict::Stalled(_)));
        h.polled_at(at(31));
        assert_eq!(h.verdict_at(at(31)), Verdict::Ok);
        h.api_failed_at(at(31));
        h.polled_at(at(51));
        h.api_failed_at(at(51));
        assert_eq!(
            h.verdict_at(at(51)),
            Verdict::Ok,
            "a short outage is tolerated"
        );
        h.polled_at(at(160));
        assert!(matches!(h.verdict_at(at(160)), Verdict::ApiFailing(_)));
        h.api_ok();
        assert_eq!(h.verdict_at(at(160)), Verdict::Ok);
        assert!(!h.is_ready());
        h.set_ready();
        assert!(h.is_ready());
    }

    #[test]
    fn readiness_fails_while_the_source_fails_past_the_grace_and_says_why() {
        let h = Health::new(Duration::from_secs(1)).stalls_after(Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(h.readiness_at(t0), Err("starting".into()));
        h.set_ready();
        assert_eq!(h.readiness_at(t0), Ok(()));
        h.source_failed_at(t0, "first");
        h.source_failed_at(at(3), "QueueDoesNotExist");
        assert_eq!(h.readiness_at(at(3)), Ok(()), "within the grace");
        let why = h.readiness_at(at(6)).unwrap_err();
        assert!(
            why.contains("QueueDoesNotExist") && why.contains("6s"),
            "{why}"
        );
        h.source_ok();
        assert_eq!(h.readiness_at(at(7)), Ok(()));
        // Liveness follows the receive loop's own stall time.
        h.polled_at(t0);
        assert_eq!(h.verdict_at(at(59)), Verdict::Ok);
        assert!(matches!(h.verdict_at(at(61)), Verdict::Stalled(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_past_its_deadline_is_stuck_and_the_oldest_is_measured() {
        let h = Health::new(Duration::from_secs(1));
        let t0 = Instant::now();
        h.drain_running("n1", t0 + Duration::from_secs(120));
        tokio::time::advance(Duration::from_secs(100)).await;
        h.polled();
        assert_eq!(h.verdict(), Verdict::Ok);
        assert_eq!(h.oldest_drain(), Duration::from_secs(100));
        // The target tightened: the same drain must now end sooner.
        h.drain_running("n1", t0 + Duration::from_secs(60));
        assert!(matches!(h.verdict(), Verdict::DrainStuck(n, _) if n == "n1"));
        h.drain_over("n1");
        assert_eq!(h.verdict(), Verdict::Ok);
        assert_eq!(h.oldest_drain(), Duration::ZERO);
    }
}
