//! Azure's Scheduled Events. Each poll reads the document; events naming this VM become
//! notices, and the events to acknowledge are handed to the agent with when to do it.
//!
//! The first Scheduled Events call enables the service and may take two minutes: it is made
//! apart (`warm_up`) as the agent starts, while polls go on with their own short timeout.
//! Before an acknowledgement the document is read again: an event cancelled or started
//! meanwhile is not acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use sih_clouds::azure::notices::{
    AckRules, AckWhen, Reading, Seen, Vm, acks, observation, remember,
};
use sih_clouds::azure::{AzureClient, AzureIdentity, EventStatus};
use sih_core::ActionPolicy;
use sih_report::webhook::InstanceFacts;

use super::{Ack, Identity, NoticeSource, Poll, SourceError};

pub struct Azure {
    client: Arc<AzureClient>,
    policy: ActionPolicy,
    rules: AckRules,
    warmed: AtomicBool,
    /// The VM's name (what events list in `Resources`), once known.
    name: Mutex<String>,
    /// What earlier polls saw of each listed event.
    known: Mutex<HashMap<String, Seen>>,
    /// The last incarnation read and the events missing from the latest looks: no single
    /// stale answer withdraws a notice.
    reading: Mutex<Reading>,
}

impl Azure {
    pub fn new(client: AzureClient, policy: ActionPolicy, rules: AckRules) -> Self {
        Self {
            client: Arc::new(client),
            policy,
            rules,
            warmed: AtomicBool::new(false),
            name: Mutex::new(String::new()),
            known: Mutex::new(HashMap::new()),
            reading: Mutex::new(Reading::default()),
        }
    }

    fn warm_up(&self) {
        if self.warmed.swap(true, Ordering::Relaxed) {
            return;
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            match client.warm_up().await {
                Ok(()) => tracing::info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "Azure Scheduled Events answers"
                ),
                Err(e) => tracing::warn!(error = %e,
                    "Azure Scheduled Events did not answer its first call; polls go on"),
            }
        });
    }
}

/// What webhook messages say of this VM.
pub fn facts_of(id: &AzureIdentity) -> InstanceFacts {
    InstanceFacts {
        cloud: "azure".into(),
        instance_name: id.name.clone(),
        project_id: id.subscription_id.clone(),
        resource_group: id.resource_group_name.clone(),
        instance_type: id.vm_size.clone(),
        availability_zone: id.zone.clone(),
        region: id.location.clone(),
        instance_life_cycle: if id.priority.eq_ignore_ascii_case("spot") {
            "spot"
        } else {
            "on-demand"
        }
        .into(),
        auto_scaling_group_name: id.vm_scale_set_name.clone(),
        ..InstanceFacts::default()
    }
}

impl NoticeSource for Azure {
    async fn identity(&self) -> Result<Identity, SourceError> {
        // The service starts on its first call: that call goes out now, whatever comes next.
        self.warm_up();
        let id = self.client.identity().await?;
        tracing::info!(vm = %id.name, vm_id = %id.vm_id, priority = %id.priority,
            scale_set = %id.vm_scale_set_name, "Azure VM");
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = id.name.clone();
        Ok(Identity {
            instance_id: id.vm_id.clone(),
            facts: facts_of(&id),
            // AKS names a node as the VM's computer name.
            node_names: vec![id.os_profile.computer_name.clone(), id.name.clone()],
            provider_id: Some(id.provider_id()),
        })
    }

    async fn poll(&self, identity: &Identity, node: &str, now: Timestamp) -> Poll {
        let doc = match self.client.events().await {
            Ok(doc) => doc,
            Err(e) => {
                return Poll {
                    problems: vec![("scheduled-events", e.to_string())],
                    ..Poll::default()
                };
            }
        };
        let name = self.name.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let vm = Vm {
            name: &name,
            id: &identity.instance_id,
        };
        // An older document than one already read is a stale answer: nothing in it counts.
        if let Err(why) = self
            .reading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fresh(&doc)
        {
            return Poll {
                problems: vec![("scheduled-events", why)],
                ..Poll::default()
            };
        }
        // Read under the lock once per poll, without copying what earlier polls saw.
        let mut seen = {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            remember(&mut known, &doc, now);
            observation(&doc, vm, node, &known, now)
        };
        self.reading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hold_vanished(&mut seen);
        let mut problems: Vec<(&'static str, String)> = doc
            .malformed
            .iter()
            .map(|(id, why)| {
                (
                    "scheduled-events",
                    format!(
                        "event {}: {why} (the other events stand)",
                        id.as_deref().unwrap_or("without an EventId")
                    ),
                )
            })
            .collect();
        for e in doc.events.iter().filter(|e| e.names(vm.name)) {
            if let Some(doubts) = e.doubts() {
                problems.push(("scheduled-events", format!("event {}: {doubts}", e.id)));
            }
        }
        let acks = acks(&doc, vm, &self.policy, self.rules)
            .into_iter()
            .map(|a| Ack {
                event_id: a.event_id,
                notice_id: a.notice_id,
                after_done: a.when == AckWhen::WhenDone,
            })
            .collect();
        Poll {
            observation: seen,
            problems,
            acks,
        }
    }

    fn acknowledge(
        &self,
        event_ids: Vec<String>,
    ) -> impl std::future::Future<Output = Result<bool, SourceError>> + Send + 'static {
        let client = self.client.clone();
        async move {
            // Only what is still waiting: a cancelled or started event is left alone.
            let doc = client.events().await?;
            let due: Vec<String> = event_ids
                .into_iter()
                .filter(|id| {
                    doc.events
                        .iter()
                        .any(|e| e.id == *id && e.status == EventStatus::Scheduled)
                })
                .collect();
            if due.is_empty() {
                return Ok(false);
            }
            client
                .acknowledge(&due)
                .await
                .map(|()| true)
                .map_err(SourceError::from)
        }
    }
}
