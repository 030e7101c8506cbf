//! Google Compute Engine's metadata server: `instance/preempted` and
//! `instance/maintenance-event` watched with long polls.
//!
//! Each poll first reads plainly any item whose ETag it does not hold (at start, and after a
//! failed read: GCE only warns about maintenance clients that have read the item), then
//! watches both at once and returns as soon as either changes, or when the watch times out.
//! An answer that is in is always taken (both often end together); a watch that did not
//! answer is dropped and started again by the next poll with the same ETag: a change in
//! between is answered at once, so none is missed. The agent starts polls at most once per
//! poll interval, whatever the server answers.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use sih_clouds::CloudError;
use sih_clouds::gce::notices::{Timing, Watched, observation};
use sih_clouds::gce::{GceClient, MAINTENANCE_EVENT, Maintenance, PREEMPTED, Value, items};
use sih_report::webhook::InstanceFacts;

use super::{Identity, NoticeSource, Poll, SourceError};

pub struct Gce {
    client: Arc<GceClient>,
    timing: Timing,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    watched: Watched,
    preempted_etag: Option<String>,
    maintenance_etag: Option<String>,
}

impl Gce {
    pub fn new(client: GceClient, timing: Timing) -> Self {
        Self {
            client: Arc::new(client),
            timing,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one read of `item` into the state; a failed one is said and its ETag dropped
    /// (the next poll reads it plainly), the last value standing.
    fn take(
        &self,
        item: &'static str,
        got: Result<Value, CloudError>,
        now: Timestamp,
        problems: &mut Vec<(&'static str, String)>,
    ) {
        let mut s = self.state();
        let name = item.trim_start_matches("instance/");
        match got {
            Ok(v) => {
                let etag = v.etag.clone();
                if item == PREEMPTED {
                    match items::parse_preempted(&v.body) {
                        Ok(p) => {
                            s.watched.saw_preempted(p, now);
                            s.preempted_etag = etag;
                        }
                        Err(e) => {
                            problems.push((name, e));
                            // Watched from this value on: a good one answers at once.
                            s.preempted_etag = etag;
                        }
                    }
                } else {
                    let m = Maintenance::parse(&v.body);
                    if let Maintenance::Unknown(u) = &m {
                        problems
                            .push((name, format!("unknown value {u:?}, taken as a termination")));
                    }
                    s.watched.saw_maintenance(m, now);
                    s.maintenance_etag = etag;
                }
            }
            Err(e) => {
                problems.push((name, e.to_string()));
                if item == PREEMPTED {
                    s.preempted_etag = None;
                } else {
                    s.maintenance_etag = None;
                }
            }
        }
    }
}

/// What webhook messages say of this instance.
pub fn facts_of(id: &items::GceIdentity) -> InstanceFacts {
    InstanceFacts {
        cloud: "gce".into(),
        instance_name: id.name.clone(),
        project_id: id.project_id.clone(),
        instance_type: id.machine_type.clone(),
        availability_zone: id.zone.clone(),
        region: items::region_of(&id.zone).to_owned(),
        instance_life_cycle: if id.preemptible { "spot" } else { "on-demand" }.into(),
        local_hostname: id.hostname.clone(),
        local_ip: id.ip.clone(),
        ..InstanceFacts::default()
    }
}

impl NoticeSource for Gce {
    async fn identity(&self) -> Result<Identity, SourceError> {
        let id = self.client.identity().await?;
        tracing::info!(instance = %id.name, provider_id = %id.provider_id(),
            preemptible = id.preemptible, "GCE instance");
        Ok(Identity {
            instance_id: id.id.clone(),
            facts: facts_of(&id),
            // GKE names a node as its instance.
            node_names: vec![id.name.clone()],
            provider_id: Some(id.provider_id()),
        })
    }

    async fn poll(&self, identity: &Identity, node: &str, _now: Timestamp) -> Poll {
        let mut problems = Vec::new();
        let (pe, me) = {
            let s = self.state();
            (s.preempted_etag.clone(), s.maintenance_etag.clone())
        };
        if pe.is_none() || me.is_none() {
            let (p, m) = tokio::join!(
                async {
                    match pe {
                        None => Some(self.client.read(PREEMPTED).await),
                        Some(_) => None,
                    }
                },
                async {
                    match me {
                        None => Some(self.client.read(MAINTENANCE_EVENT).await),
                        Some(_) => None,
                    }
                },
            );
            let now = Timestamp::now();
            if let Some(p) = p {
                self.take(PREEMPTED, p, now, &mut problems);
            }
            if let Some(m) = m {
                self.take(MAINTENANCE_EVENT, m, now, &mut problems);
            }
        } else if let (Some(pe), Some(me)) = (pe, me) {
            let p = self.client.watch(PREEMPTED, &pe);
            let m = self.client.watch(MAINTENANCE_EVENT, &me);
            tokio::pin!(p, m);
            // The first answer is taken; so is the other's when it is in too (both watches
            // often end together: dropping that answer hid a preemption for a whole watch).
            tokio::select! {
                got = &mut p => {
                    self.take(PREEMPTED, got, Timestamp::now(), &mut problems);
                    if let Ok(got) = tokio::time::timeout(std::time::Duration::ZERO, &mut m).await {
                        self.take(MAINTENANCE_EVENT, got, Timestamp::now(), &mut problems);
                    }
                }
                got = &mut m => {
                    self.take(MAINTENANCE_EVENT, got, Timestamp::now(), &mut problems);
                    if let Ok(got) = tokio::time::timeout(std::time::Duration::ZERO, &mut p).await {
                        self.take(PREEMPTED, got, Timestamp::now(), &mut problems);
                    }
                }
            }
        }
        let observation = observation(
            &self.state().watched,
            &identity.instance_id,
            node,
            &self.timing,
        );
        Poll {
            observation,
            problems,
            acks: Vec::new(),
        }
    }

    fn long_polls(&self) -> bool {
        true
    }
}
