//! Kubernetes Events are written by a task of their own, from a bounded queue: a slow or hung
//! Event write never holds back a log line, a metric, a webhook or an action. When the queue
//! is full the oldest Event is dropped (and counted): recent ones say more.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::kube_events::record_event;
use crate::update::Update;
use crate::{EventReporter, Metrics};

/// Events waiting to be written, at most.
pub const EVENT_QUEUE: usize = 1024;

struct State {
    items: VecDeque<Update>,
    closed: bool,
}

pub struct EventQueue {
    state: Mutex<State>,
    ready: Notify,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl EventQueue {
    /// Starts the writer; close the queue to let it finish what is queued.
    pub fn spawn(
        reporter: EventReporter,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let q = Arc::new(Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
            metrics,
        });
        let writer = q.clone();
        let task = tokio::spawn(async move {
            while let Some(u) = writer.pop().await {
                if !record_event(&reporter, &u).await {
                    writer.metrics.events_failed.inc();
                }
            }
        });
        (q, task)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an update for its Events; never waits.
    pub fn push(&self, u: Update) {
        let mut s = self.lock();
        if s.items.len() >= self.capacity {
            s.items.pop_front();
            self.metrics.events_dropped.inc();
        }
        s.items.push_back(u);
        drop(s);
        self.ready.notify_one();
    }

    /// No more updates: the writer ends once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    async fn pop(&self) -> Option<Update> {
        loop {
            {
                let mut s = self.lock();
                if let Some(u) = s.items.pop_front() {
                    return Some(u);
                }
                if s.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sih_core::{Notice, Source};

    fn update(i: i64) -> Update {
        let t = jiff::Timestamp::from_second(1_800_000_000 + i).unwrap();
        Update::Detected {
            notice: Notice::spot_interruption(&format!("i-{i}"), "n1", t, t, Source::Agent),
            action: sih_core::Action::Drain,
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts_them() {
        let metrics = Arc::new(Metrics::new());
        let q = EventQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            capacity: 3,
            metrics: metrics.clone(),
        };
        for i in 0..5 {
            q.push(update(i));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(metrics.events_dropped.get(), 2);
        let first = q.pop().await.unwrap();
        match first {
            Update::Detected { notice, .. } => {
                assert_eq!(notice.instance_id.as_deref(), Some("i-2"))
            }
            other => panic!("{other:?}"),
        }
        q.close();
        assert!(q.pop().await.is_some());
        assert!(q.pop().await.is_some());
        assert!(q.pop().await.is_none(), "closed and empty");
    }
}
