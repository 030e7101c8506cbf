//! Instance lookups batched and cached: a burst of interruptions (a whole pool reclaimed at
//! once) asks about hundreds of instances within milliseconds; they go to EC2 as a few calls
//! of up to 200 ids, and each answer is kept for a while (an instance's name and zone never
//! change; its tags rarely do).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::ec2::{Ec2, Ec2Error, Instance, MAX_IDS_PER_CALL};

/// Where answers come from: EC2, or a fake in tests.
pub trait Describe: Send + Sync + 'static {
    fn describe(
        &self,
        ids: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Instance>, Ec2Error>> + Send;
}

impl Describe for Ec2 {
    async fn describe(&self, ids: Vec<String>) -> Result<Vec<Instance>, Ec2Error> {
        Ec2::describe(self, &ids).await
    }
}

type Answer = Result<Option<Arc<Instance>>, Ec2Error>;

/// Found instances and when they were asked about.
type Cache = Arc<Mutex<HashMap<String, (Instant, Arc<Instance>)>>>;

struct Request {
    id: String,
    reply: oneshot::Sender<Answer>,
}

/// How long lookups arriving together are gathered into one call.
const GATHER: Duration = Duration::from_millis(10);

#[derive(Clone)]
pub struct Directory {
    requests: mpsc::UnboundedSender<Request>,
    cache: Cache,
    ttl: Duration,
}

impl Directory {
    /// Starts the batching task; it ends when every `Directory` clone is dropped.
    pub fn spawn<D: Describe>(source: D, ttl: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let cache = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(batcher(source, rx, cache.clone(), ttl));
        Self {
            requests: tx,
            cache,
            ttl,
        }
    }

    /// The instance, `None` when EC2 does not know it (not ours, or long gone).
    pub async fn lookup(&self, id: &str) -> Answer {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(id) {
                Some((at, i)) if at.elapsed() < self.ttl => return Ok(Some(i.clone())),
                Some(_) => {
                    cache.remove(id);
                }
                None => {}
            }
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                id: id.to_owned(),
                reply,
            })
            .map_err(|_| Ec2Error {
                message: "instance lookups stopped".into(),
                retryable: false,
            })?;
        answer.await.unwrap_or_else(|_| {
            Err(Ec2Error {
                message: "instance lookup dropped".into(),
                retryable: true,
            })
        })
    }
}

async fn batcher<D: Describe>(
    source: D,
    mut rx: mpsc::UnboundedReceiver<Request>,
    cache: Cache,
    ttl: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        tokio::time::sleep(GATHER).await;
        while batch.len() < MAX_IDS_PER_CALL {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        ids.dedup();
        let answer = source.describe(ids).await;
        let found: HashMap<String, Arc<Instance>> = match &answer {
            Ok(list) => list
                .iter()
                .map(|i| (i.id.clone(), Arc::new(i.clone())))
                .collect(),
            Err(_) => HashMap::new(),
        };
        {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            // Instances come and go: what was not asked about again within the TTL goes, so
            // the cache stays the size of the recent past.
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            let now = Instant::now();
            for (id, i) in &found {
                cache.insert(id.clone(), (now, i.clone()));
            }
        }
        for r in batch {
            let reply = match &answer {
                Ok(_) => Ok(found.get(&r.id).cloned()),
                Err(e) => Err(e.clone()),
            };
            let _ = r.reply.send(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Knows instances `i-0`…`i-999`; records every call; fails while `fail` is set.
    #[derive(Clone, Default)]
    struct Fake {
        calls: Arc<Mutex<Vec<Vec<String>>>>,
        fail: Arc<AtomicUsize>,
    }

    impl Describe for Fake {
        async fn describe(&self, ids: Vec<String>) -> Result<Vec<Instance>, Ec2Error> {
            self.calls.lock().unwrap().push(ids.clone());
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.fail.load(Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, Ordering::SeqCst);
                return Err(Ec2Error {
                    message: "HTTP 503".into(),
                    retryable: true,
                });
            }
            Ok(ids
                .into_iter()
                .filter(|id| {
                    id.trim_start_matches("i-")
                        .parse::<u32>()
                        .is_ok_and(|n| n < 1000)
                })
                .map(|id| Instance {
                    private_dns_name: Some(format!("ip-{id}.ec2.internal")),
                    id,
                    ..Default::default()
                })
                .collect())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_becomes_few_calls_and_repeats_come_from_the_cache() {
        let fake = Fake::default();
        let dir = Directory::spawn(fake.clone(), Duration::from_secs(600));
        let lookups: Vec<_> = (0..450)
            .map(|n| {
                let dir = dir.clone();
                tokio::spawn(async move { dir.lookup(&format!("i-{}", n % 300)).await })
            })
            .collect();
        for (n, l) in lookups.into_iter().enumerate() {
            let i = l.await.unwrap().unwrap().unwrap();
            assert_eq!(i.id, format!("i-{}", n % 300));
        }
        let calls = fake.calls.lock().unwrap().clone();
        assert!(calls.len() <= 3, "{} calls", calls.len());
        assert!(calls.iter().all(|c| c.len() <= MAX_IDS_PER_CALL));
        // Asked again within the TTL: no call.
        dir.lookup("i-7").await.unwrap().unwrap();
        assert_eq!(fake.calls.lock().unwrap().len(), calls.len());
        // After it: asked again.
        tokio::time::sleep(Duration::from_secs(601)).await;
        dir.lookup("i-7").await.unwrap().unwrap();
        assert_eq!(fake.calls.lock().unwrap().len(), calls.len() + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_instances_are_none_and_errors_reach_every_waiter_uncached() {
        let fake = Fake::default();
        let dir = Directory::spawn(fake.clone(), Duration::from_secs(600));
        assert!(dir.lookup("i-5000").await.unwrap().is_none());
        // Unknown answers are not cached: an instance may appear (a launch) a moment later.
        assert!(dir.lookup("i-5000").await.unwrap().is_none());
        assert_eq!(fake.calls.lock().unwrap().len(), 2);

        fake.fail.store(1, Ordering::SeqCst);
        let (a, b) = tokio::join!(dir.lookup("i-1"), dir.lookup("i-2"));
        assert!(a.unwrap_err().retryable && b.unwrap_err().retryable);
        assert_eq!(
            dir.lookup("i-1").await.unwrap().unwrap().id,
            "i-1",
            "the failure was not remembered"
        );
    }
}
