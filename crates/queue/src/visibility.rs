//! Keeps every message this replica holds hidden from other consumers until it is deleted or
//! let go: one task extends them all every half visibility timeout, ten per call. During a
//! mass reclaim hundreds of messages wait for a drain worker at once; one call per message
//! per tick would crowd out the receives that bring the next warnings.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sqs::Queue;

#[derive(Clone)]
pub struct Keeper {
    held: Arc<Mutex<HashSet<String>>>,
}

impl Keeper {
    /// Starts the extending task (it ends with the runtime).
    pub fn spawn(queue: Queue, visibility: Duration) -> Self {
        let held = Arc::new(Mutex::new(HashSet::new()));
        tokio::spawn(extend_all(queue, visibility, held.clone()));
        Self { held }
    }

    /// Keeps `receipt`'s message hidden until `release`.
    pub fn hold(&self, receipt: &str) {
        self.lock().insert(receipt.to_owned());
    }

    pub fn release(&self, receipt: &str) {
        self.lock().remove(receipt);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn extend_all(queue: Queue, visibility: Duration, held: Arc<Mutex<HashSet<String>>>) {
    // Messages are received hidden for `visibility`; extending at half of it leaves the
    // other half for a slow call.
    let every = (visibility / 2).max(Duration::from_millis(500));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let receipts: Vec<String> = held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for chunk in receipts.chunks(10) {
            match queue.extend_batch(chunk, visibility).await {
                Ok(refused) if !refused.is_empty() => {
                    tracing::debug!(count = refused.len(), "messages no longer held here");
                    let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                    for r in refused {
                        held.remove(&r);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not extend the visibility of held messages")
                }
            }
        }
    }
}
