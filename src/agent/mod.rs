//! The per-node agent: one poll loop over a notice source (a cloud's metadata service),
//! handing each poll's observation to the responder, which takes it to the node, and making
//! the acknowledgements the source asks for (Azure's), each once its notice's action is done. The loop
//! never waits for Kubernetes: detection, logs and webhooks go on while the API server is down
//! or hanging, and the responder retries its writes on its own.
//!
//! Start-up does two things at once: the responder reads the node's record and resumes what it
//! carries as soon as the API answers, and the loop polls the source as soon as it answers.

pub mod source;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use sih_core::Backoff;
use sih_report::{Metrics, SharedFacts};

use crate::admin::health::Health;
use crate::responder::{Responder, Settled};
use source::{Ack, Identity, NoticeSource};

/// The least time between the starts of two long polls.
const LONG_POLL_GAP: Duration = Duration::from_secs(1);

/// The acknowledgements of this process: under way, and accepted by the cloud (never sent
/// again).
#[derive(Default)]
struct Acks {
    in_flight: HashSet<String>,
    sent: HashSet<String>,
}

pub struct AgentConfig {
    pub node: String,
    pub poll_interval: Duration,
    pub dry_run: bool,
}

pub struct Agent<S> {
    pub cfg: AgentConfig,
    pub source: S,
    pub responder: Responder,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    /// Webhook fields from the instance's identity, filled in once it is known.
    pub facts: SharedFacts,
}

/// Reads the instance identity, retrying until it works or `stop` completes (`None`). The
/// retries are paced like the polls (never further apart than `poll_interval`): no notice can
/// be read before the identity, and the metadata service is local and cheap to ask.
async fn wait_for_identity<S: NoticeSource>(
    source: &S,
    health: &Health,
    poll_interval: Duration,
    stop: &mut (impl Future<Output = ()> + Unpin),
) -> Option<Identity> {
    let first = Duration::from_millis(200).min(poll_interval);
    let mut retry = Backoff::new(first, poll_interval);
    let mut said = false;
    loop {
        tokio::select! {
            _ = &mut *stop => return None,
            got = source.identity() => match got {
                Ok(id) => return Some(id),
                Err(e) => {
                    if !said {
                        tracing::warn!(error = %e, "cannot read the instance identity yet; retrying");
                        said = true;
                    }
                }
            },
        }
        health.polled();
        tokio::select! {
            _ = &mut *stop => return None,
            _ = tokio::time::sleep(retry.wait()) => {}
        }
    }
}

impl<S: NoticeSource> Agent<S> {
    /// Polls until `stop` completes, then stops the responder (the node's record lets the next
    /// agent resume any drain) within about a second, whatever hangs.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut stop = std::pin::pin!(stop);
        self.responder.watch(&self.cfg.node);
        let started = tokio::time::Instant::now();
        let Some(identity) = wait_for_identity(
            &self.source,
            &self.health,
            self.cfg.poll_interval,
            &mut stop,
        )
        .await
        else {
            self.stop().await;
            return Ok(());
        };
        self.facts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remember(&identity.instance_id, identity.facts.clone());
        tracing::info!(node = %self.cfg.node, instance_id = %identity.instance_id,
            took_ms = started.elapsed().as_millis() as u64,
            poll_interval_ms = self.cfg.poll_interval.as_millis() as u64,
            dry_run = self.cfg.dry_run, "watching for interruption notices");
        let mut tick = tokio::time::interval(self.cfg.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let long_polls = self.source.long_polls();
        let mut last_problems = String::new();
        let acking: Arc<Mutex<Acks>> = Arc::default();
        let mut last_start: Option<tokio::time::Instant> = None;
        loop {
            // A long-polling source waits for changes itself; after a poll with problems it
            // waits the poll interval like any other, so a failing service is not hammered.
            if !long_polls || !last_problems.is_empty() {
                tokio::select! {
                    biased;
                    _ = &mut stop => break,
                    _ = tick.tick() => {}
                }
            } else if let Some(at) = last_start {
                // And whatever the service does (a server that answers a long poll at once, or
                // sends no ETag to wait on), polls start at most once a second (or once per
                // poll interval, if shorter): a change is still seen within that second.
                let gap = self.cfg.poll_interval.min(LONG_POLL_GAP);
                tokio::select! {
                    biased;
                    _ = &mut stop => break,
                    _ = tokio::time::sleep_until(at + gap) => {}
                }
            }
            last_start = Some(tokio::time::Instant::now());
            let poll = tokio::select! {
                biased;
                _ = &mut stop => break,
                p = self.source.poll(&identity, &self.cfg.node, Timestamp::now()) => p,
            };
            self.health.polled();
            self.metrics.polls.inc();
            self.metrics
                .last_poll_seconds
                .set(Timestamp::now().as_millisecond() as f64 / 1000.0);
            let mut problems = String::new();
            for (item, what) in &poll.problems {
                self.metrics.imds_error(item);
                problems.push_str(&format!("{item}: {what}; "));
            }
            // A condition that does not change is said once, then when it changes.
            if problems != last_problems {
                if problems.is_empty() {
                    tracing::info!("metadata reads work again");
                } else {
                    tracing::warn!(errors = %problems.trim_end_matches("; "),
                        "metadata items could not be read as they should; the notices already seen stand");
                }
                last_problems = problems;
            }
            if poll.observation.notices.is_empty() {
                tracing::debug!("quiet poll");
            }
            self.responder.observe(&self.cfg.node, poll.observation);
            for ack in poll.acks {
                self.acknowledge(ack, &acking);
            }
            self.health.set_ready();
        }
        self.stop().await;
        Ok(())
    }

    /// Makes one acknowledgement apart from the loop, once its notice's action is done when it
    /// must wait for that; one per event at a time (the next poll asks again if it failed), and
    /// never again once the cloud accepted it (an event may stay `Scheduled` a while after).
    fn acknowledge(&self, ack: Ack, acks: &Arc<Mutex<Acks>>) {
        if self.cfg.dry_run {
            return;
        }
        let lock = |a: &Mutex<Acks>| {
            let mut a = a.lock().unwrap_or_else(|p| p.into_inner());
            !a.sent.contains(&ack.event_id) && a.in_flight.insert(ack.event_id.clone())
        };
        if !lock(acks) {
            return;
        }
        let done = ack
            .after_done
            .then(|| self.responder.done(&self.cfg.node, &ack.notice_id));
        let send = self.source.acknowledge(vec![ack.event_id.clone()]);
        let acks = acks.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let go = match done {
                None => Ok(()),
                Some(rx) => match rx.await {
                    Ok(Settled::Done) => Ok(()),
                    Ok(Settled::Failed(why)) => Err(why),
                    Ok(Settled::Withdrawn) => {
                        Err("its notice was withdrawn before its action finished".to_owned())
                    }
                    Err(_) => Err("the responder stopped".to_owned()),
                },
            };
            let mut sent = false;
            match go {
                Ok(()) => match send.await {
                    Ok(true) => {
                        sent = true;
                        metrics.acknowledged("ok");
                        tracing::info!(event = %ack.event_id, notice = %ack.notice_id,
                            "acknowledged: the cloud may go ahead now")
                    }
                    Ok(false) => tracing::info!(event = %ack.event_id, notice = %ack.notice_id,
                        "not acknowledged: the event was cancelled or started meanwhile"),
                    Err(e) => {
                        metrics.acknowledged("error");
                        tracing::warn!(event = %ack.event_id, error = %e,
                            "acknowledgement failed; the next poll tries again")
                    }
                },
                Err(why) => tracing::warn!(event = %ack.event_id, %why,
                    "not acknowledged: its action did not finish; the cloud goes ahead at its time"),
            }
            let mut a = acks.lock().unwrap_or_else(|p| p.into_inner());
            a.in_flight.remove(&ack.event_id);
            if sent {
                a.sent.insert(ack.event_id.clone());
            }
        });
    }

    async fn stop(&self) {
        // SIGTERM is honoured within a second: a responder stuck behind a hung call is left.
        if tokio::time::timeout(Duration::from_millis(800), self.responder.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("the responder did not stop in time; leaving it");
        }
        tracing::info!("agent stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use source::Poll;

    /// Fails its first `fails` identity reads, noting when each read was asked for.
    struct Flaky {
        fails: usize,
        asked: Mutex<Vec<tokio::time::Instant>>,
    }

    impl NoticeSource for Flaky {
        async fn identity(&self) -> Result<Identity, source::SourceError> {
            let mut asked = self.asked.lock().unwrap();
            asked.push(tokio::time::Instant::now());
            if asked.len() <= self.fails {
                return Err(source::SourceError::new("500", true));
            }
            Ok(Identity {
                instance_id: "i-1".into(),
                facts: Default::default(),
                node_names: Vec::new(),
                provider_id: None,
            })
        }

        async fn poll(&self, _: &Identity, _: &str, _: Timestamp) -> Poll {
            Poll::default()
        }
    }

    /// No notice can be read before the identity: its retries are never further apart than
    /// a poll (they were up to 5 s: soak seed 61317 saw a restarted agent read its first
    /// notice 4.2 s late).
    #[tokio::test(start_paused = true)]
    async fn the_identity_is_retried_at_least_once_a_poll() {
        let poll = Duration::from_millis(500);
        let source = Flaky {
            fails: 8,
            asked: Mutex::default(),
        };
        let health = Health::new(poll);
        let start = tokio::time::Instant::now();
        let mut stop = std::pin::pin!(std::future::pending::<()>());
        let id = wait_for_identity(&source, &health, poll, &mut stop).await;
        assert_eq!(id.map(|i| i.instance_id).as_deref(), Some("i-1"));
        let asked = source.asked.lock().unwrap();
        assert_eq!(asked.len(), 9);
        let gaps: Vec<Duration> = asked.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[0], Duration::from_millis(200), "{gaps:?}");
        assert!(gaps.iter().all(|g| *g <= poll), "{gaps:?}");
        assert!(
            start.elapsed() <= Duration::from_millis(200 + 400 + 6 * 500),
            "{:?}",
            start.elapsed()
        );
    }
}
