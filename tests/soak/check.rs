//! The promises, checked against what the simulators, moto, the webhook sink and the processes
//! recorded. Each check works from the scenario's own rules (what the product contract says
//! should happen), never from what the code under test decided, and excuses a failure only
//! where the scenario made it impossible: the agent was down, the API refused, the notice came
//! too late.
//!
//! - `never-acted-on`: a notice with enough usable time never fenced the node;
//! - `grace-cut`: a pod was deleted with less grace than the plan allowed (or with none);
//! - `evicted-without-notice`: a pod was evicted while no draining notice was active;
//! - `left-at-hard-deadline`: an evictable pod was still on the node when the instance went;
//! - `two-drains`: two evictions of one pod were in flight at once (one drain never does
//!   that; two drains of one node do), from the cluster's own request journal;
//! - `left-at-deadline`: a soft notice's deadline (scheduled maintenance, ASG termination)
//!   passed with a pod still on the node that was neither gone nor asked to be gone by then;
//! - `fence-late`: the fence (the kind's taint, and the cordon for a draining notice) landed
//!   more than `FENCE_BOUND` of usable time after the notice could first be read;
//! - `left-fenced`: every notice was withdrawn, yet the node stayed tainted or cordoned;
//! - `metadata-flood`: more than `METADATA_RPS` requests to the metadata service in one
//!   second, whatever it answered (faults included);
//! - `fence-refused`: the API server refused a write to the node as invalid (422): a fence
//!   built from values the server does not take never lands;
//! - `healthz-starved`: a `/healthz` probe went unanswered for a second while the agent was up,
//!   from 5 s after its start (the shipped liveness probe's initial delay), its admin port held
//!   by a flood of idle connections;
//! - `untold`: a notice fenced the node, yet no Kubernetes Event of its kind's reason names
//!   the node;
//! - `acked-early` (Azure): an event acknowledged before its drain was done, or after it was
//!   withdrawn;
//! - `announced-twice`: one notice was announced more than once (a restart, or in queue mode
//!   a takeover while the API was disrupted, before the notice was recorded on the node,
//!   excuses a second announcement: nothing durable could say it was made);
//! - `unfenced-while-needed`: the node lost a taint or its cordon while a notice needed it;
//! - `deleted-before-done`: a queue message was deleted before its action had finished;
//! - `placeholder-on-fenced-node`: a capacity placeholder was bound to the node while our
//!   fence stood on it;
//! - `placeholder-outlived`: a placeholder was still there `PLACEHOLDER_SLACK` after its TTL
//!   ran out, with the product up and the API undisturbed meanwhile;
//! - `real-pod-preempted`: the scheduler preempted a workload pod (placeholders never
//!   preempt; nothing else in a scenario outranks the workload for room).

use jiff::Timestamp;

use crate::run::Record;
use crate::scenario::{MARGIN, Mode, Notice, POLL, Scenario};

#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

struct View<'a> {
    sc: &'a Scenario,
    rec: &'a Record,
    t0: Timestamp,
    /// Intervals (seconds from t0) in which the product could not act.
    disrupted: Vec<(f64, f64)>,
    /// The processes' down times (killed until back and reading, a second after restart).
    down: Vec<(f64, f64)>,
    /// The same, each lasting at least as long as a dead replica's claim holds the others
    /// off (queue mode): when the product could not act.
    down_held: Vec<(f64, f64)>,
    /// Metadata outages (a blocking fault, until the next poll after it ends).
    imds_outages: Vec<(f64, f64)>,
    /// Disruptions of the API (cluster faults that can hold up the evacuation) alone.
    api_faults: Vec<(f64, f64)>,
    end: f64,
}

impl View<'_> {
    fn s(&self, t: Timestamp) -> f64 {
        t.duration_since(self.t0).as_secs_f64()
    }

    fn visible(&self, i: usize) -> Option<f64> {
        self.rec.visible[i].map(|t| self.s(t))
    }

    fn deadline(&self, i: usize) -> Option<f64> {
        self.rec.deadlines[i].map(|t| self.s(t))
    }

    fn withdrawn(&self, i: usize) -> Option<f64> {
        self.rec.withdrawn[i].map(|t| self.s(t))
    }

    fn terminated(&self) -> Option<f64> {
        self.rec.terminated.map(|t| self.s(t))
    }

    /// Time in `[a, b]` not covered by a disruption.
    fn usable(&self, a: f64, b: f64) -> f64 {
        Self::uncovered(&self.disrupted, a, b)
    }

    /// Time in `[a, b]` not covered by any of `windows`.
    fn uncovered(windows: &[(f64, f64)], a: f64, b: f64) -> f64 {
        if b <= a {
            return 0.0;
        }
        let mut cuts: Vec<(f64, f64)> = windows
            .iter()
            .map(|&(x, y)| (x.max(a), y.min(b)))
            .filter(|(x, y)| y > x)
            .collect();
        cuts.sort_by(|p, q| p.0.total_cmp(&q.0));
        let mut covered = 0.0;
        let mut cursor = a;
        for (x, y) in cuts {
            let x = x.max(cursor);
            if y > x {
                covered += y - x;
                cursor = y;
            }
        }
        (b - a) - covered
    }

    /// When the agent could first read what became visible at `t`: the end of the metadata
    /// outages and the agent's down times covering it (a restarted agent takes about a second
    /// to read its identity), counting one that began before the agent's next poll.
    fn first_readable(&self, t: f64) -> f64 {
        let blocked = || self.imds_outages.iter().chain(&self.down);
        let mut at = t;
        while let Some(&(_, to)) = blocked().find(|&&(from, to)| from <= at + POLL && at < to) {
            at = to;
        }
        at
    }

    /// Whether the node was recorded with `kind`'s taint at some time in `[a, b]`.
    fn recorded(&self, kind: &str, a: f64, b: f64) -> bool {
        self.node_records().any(|r| {
            let t = self.s(r.at);
            t >= a && t <= b && Self::has_taint(r, kind)
        })
    }

    /// Whether a record of the node in `[a, b]` names the notice `id` (a scheduled event's
    /// `EventId`): another event of the same kind on the node is not its record.
    fn recorded_id(&self, id: &str, a: f64, b: f64) -> bool {
        self.node_records().any(|r| {
            let t = self.s(r.at);
            t >= a
                && t <= b
                && r.annotations.iter().any(|(k, v)| {
                    k.starts_with("spot-interrupt-handler/")
                        && v.as_str().is_some_and(|v| v.contains(id))
                })
        })
    }

    /// Whether the node carried `kind`'s taint at `a` already (the last record before it has
    /// it: another message about the same notice fenced it), or was so fenced within `[a, b]`.
    fn fenced_within(&self, kind: &str, a: f64, b: f64) -> bool {
        let before = self
            .node_records()
            .filter(|r| self.s(r.at) < a)
            .last()
            .is_some_and(|r| Self::has_taint(r, kind));
        before || self.recorded(kind, a, b)
    }

    fn disrupted_within(&self, a: f64, b: f64) -> bool {
        self.usable(a, b) < (b - a) - 1e-9
    }

    /// Whether the API itself was disrupted (a cluster fault) within `[a, b]`.
    fn api_disrupted_within(&self, a: f64, b: f64) -> bool {
        Self::uncovered(&self.api_faults, a, b) < (b - a) - 1e-9
    }

    /// Whether the API or the product was out within `[a, b]` (a metadata outage is not: a
    /// notice already read keeps its deadline through one).
    fn api_or_down_within(&self, a: f64, b: f64) -> bool {
        let windows: Vec<(f64, f64)> = self
            .api_faults
            .iter()
            .chain(&self.down_held)
            .copied()
            .collect();
        Self::uncovered(&windows, a, b) < (b - a) - 1e-9
    }

    fn taint_key(kind: &str) -> String {
        format!("spot-interrupt-handler/{kind}=")
    }

    /// Node records of the node under notice, in time order, before it was deleted.
    fn node_records(&self) -> impl Iterator<Item = &sih_sim_cluster::journal::NodeRecord> {
        self.rec
            .nodes
            .iter()
            .filter(|r| r.name == self.rec.node && !r.deleted)
    }

    fn has_taint(r: &sih_sim_cluster::journal::NodeRecord, kind: &str) -> bool {
        let key = Self::taint_key(kind);
        r.taints.iter().any(|t| t.starts_with(&key))
    }

    /// The draining notices active at `t` (a withdrawal counts a little later: the agent sees
    /// it at its next poll). A notice counts from when its send began: a loaded service may
    /// deliver it before the send returns (seed 60400: a pod deleted 0.1 s before the harness
    /// heard that moto had the message).
    fn active_drains(&self, t: f64, lag: f64) -> Vec<usize> {
        (0..self.sc.notices.len())
            .filter(|&i| self.sc.notices[i].drains())
            .filter(|&i| {
                let from = self.rec.sending[i].map(|t| self.s(t)).or(self.visible(i));
                from.is_some_and(|v| v <= t + 0.05)
            })
            .filter(|&i| self.withdrawn(i).is_none_or(|w| t < w + lag))
            .collect()
    }
}

pub fn check(sc: &Scenario, rec: &Record) -> Vec<Violation> {
    let Some(v) = view(sc, rec) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    never_acted_on(&v, &mut out);
    graces(&v, &mut out);
    hard_deadline(&v, &mut out);
    two_drains(&v, &mut out);
    announced_twice(&v, &mut out);
    unfenced_while_needed(&v, &mut out);
    if sc.mode == Mode::Queue {
        deleted_before_done(&v, &mut out);
    }
    soft_deadlines(&v, &mut out);
    fence_late(&v, &mut out);
    metadata_flood(&v, &mut out);
    fence_refused(&v, &mut out);
    healthz_starved(&v, &mut out);
    untold(&v, &mut out);
    left_fenced(&v, &mut out);
    if sc.mode == Mode::Azure {
        acked_early(&v, &mut out);
    }
    placeholders(&v, &mut out);
    out
}

/// The record seen from the scenario's start, with its disruptions worked out.
fn view<'a>(sc: &'a Scenario, rec: &'a Record) -> Option<View<'a>> {
    let t0 = rec.t0?;
    let mut v = View {
        sc,
        rec,
        t0,
        disrupted: Vec::new(),
        down: Vec::new(),
        imds_outages: Vec::new(),
        down_held: Vec::new(),
        api_faults: Vec::new(),
        end: sc.horizon,
    };
    // The processes' down times. In queue mode a dead replica's claim on a node holds the
    // other replicas off until it expires (`--claim-ttl`, 6 s) and a survivor's next look
    // (1 s), and its messages come back only after their visibility timeout (4 s).
    let claim_held = match sc.mode {
        Mode::Imds | Mode::Gce | Mode::Azure => 0.0,
        Mode::Queue => 6.0 + 1.0 + 4.0,
    };
    for (i, life) in rec.lives.iter().enumerate() {
        if !life.killed {
            continue;
        }
        let Some(down) = life.ended else { continue };
        let back = rec.lives[i + 1..]
            .iter()
            .find(|l| l.replica == life.replica)
            .map_or(sc.horizon, |l| v.s(l.started) + 1.0);
        v.down.push((v.s(down), back));
    }
    for (from, to, blocks) in &rec.imds_faults {
        if *blocks {
            v.imds_outages.push((v.s(*from), v.s(*to) + 0.5));
        }
    }
    v.down_held = v
        .down
        .iter()
        .map(|&(down, back)| (down, back.max(down + claim_held)))
        .collect();
    v.disrupted = v.down_held.iter().chain(&v.imds_outages).copied().collect();
    for (from, to, disrupts, _) in &rec.cluster_faults {
        if *disrupts {
            v.disrupted.push((v.s(*from), v.s(*to) + 0.5));
            v.api_faults.push((v.s(*from), v.s(*to) + 0.5));
        }
    }
    Some(v)
}

fn never_acted_on(v: &View<'_>, out: &mut Vec<Violation>) {
    for (i, n) in v.sc.notices.iter().enumerate() {
        let Some(seen) = v.visible(i) else { continue };
        let until = v
            .withdrawn(i)
            .or(v.terminated())
            .unwrap_or(v.end)
            .min(v.end);
        // A message handled by a replica that dies comes back after its visibility timeout
        // and any claim's expiry: the dead replica's down time counts that long (`check`).
        if v.usable(seen, until) < 4.0 {
            continue;
        }
        if !v.fenced_within(n.kind(), seen - 0.05, until + 1.0) {
            out.push(Violation {
                invariant: "never-acted-on",
                detail: format!(
                    "{} visible at {seen:.1}s never fenced the node before {until:.1}s",
                    n.kind()
                ),
            });
        }
    }
}

fn graces(v: &View<'_>, out: &mut Vec<Violation>) {
    use sih_sim_cluster::journal::PodStep;
    for p in &v.rec.pods {
        if p.step != PodStep::Deleting || p.node.as_deref() != Some(v.rec.node.as_str()) {
            continue;
        }
        let t = v.s(p.at);
        let granted = p.grace_seconds.unwrap_or(0);
        let Some(own) = v.sc.grace_of(&p.name) else {
            out.push(Violation {
                invariant: "grace-cut",
                detail: format!("{} (a pod the drain must leave) deleted at {t:.1}s", p.name),
            });
            continue;
        };
        let active = v.active_drains(t, 2.0);
        if active.is_empty() {
            out.push(Violation {
                invariant: "evicted-without-notice",
                detail: format!(
                    "{} deleted at {t:.1}s with no draining notice active",
                    p.name
                ),
            });
            continue;
        }
        let deadline = active
            .iter()
            .filter_map(|&i| v.deadline(i))
            .fold(f64::INFINITY, f64::min);
        let fits = (deadline - t - MARGIN).round().max(1.0);
        let allowed = (own as f64).min(fits);
        if granted <= 0 || (granted as f64) < allowed - 1.0 {
            out.push(Violation {
                invariant: "grace-cut",
                detail: format!(
                    "{} deleted at {t:.1}s with {granted}s of grace; the plan allowed {allowed:.0}s \
                     (own {own}s, deadline at {deadline:.1}s)",
                    p.name
                ),
            });
        }
    }
}

fn hard_deadline(v: &View<'_>, out: &mut Vec<Violation>) {
    let Some(gone) = v.terminated() else { return };
    // The deadline the instance went at (the harness ends it a second after).
    let deadline = gone - 1.0;
    let spot =
        v.sc.notices
            .iter()
            .enumerate()
            .find(|(_, n)| matches!(n, Notice::Spot { .. }))
            .map(|(i, _)| i);
    let Some(spot) = spot else { return };
    // The API or the product out near the deadline excuses; a metadata outage does not (the
    // deadline was read before it, or the notice is judged from when it could be).
    if v.api_or_down_within(deadline - 9.0, deadline + 1.0) {
        return;
    }
    let seen = v.visible(spot).unwrap_or(0.0);
    if deadline - v.first_readable(seen) < MARGIN + 2.0 {
        return;
    }
    // A restated spot time (amazon-ec2-metadata-mock's way: now + lead on every read) first
    // read after a metadata outage says a later deadline than the instance's real one, and
    // nothing could tell the agent otherwise (seed 64898: read 2.7 s late, planned 2.7 s
    // late; seed 66440: the agent was down when it appeared). The promise is kept against the
    // deadline it could know.
    let restated = matches!(v.sc.notices[spot], Notice::Spot { restate: true, .. });
    // A notice without a time the agent can read (GCE's `preempted`, an EC2 time that cannot
    // be parsed: both counted from detection) seen by an agent killed before its fence
    // recorded it on the node is read afresh after the restart, with nothing left to tell how
    // long it had been there (seed 60086: killed 0.1 s after detecting a GCE preemption, the
    // restarted agent's deadline 1.8 s later than the instance's). The promise is kept against
    // the deadline it could know.
    let timeless = v.sc.mode == Mode::Gce
        || matches!(
            v.sc.notices[spot],
            Notice::Spot {
                unreadable: true,
                ..
            }
        );
    let first = v.first_readable(seen);
    let fenced = v
        .node_records()
        .map(|r| (v.s(r.at), r))
        .find(|(t, r)| *t >= seen && View::has_taint(r, "spot-interruption"))
        .map(|(t, _)| t);
    let lost_before_fence = v
        .down
        .iter()
        .filter(|&&(from, _)| from >= first && fenced.is_none_or(|f| from < f))
        .map(|&(_, to)| to)
        .next();
    // The same holds for one that appeared while the agent was down (seed 69068: GCE, the
    // agent back 4.4 s after the preemption): it is counted from when it could first be read.
    // And for a restated time read by an agent killed before its fence recorded it (seed
    // 65019: the fence refused by an API fault, the agent killed while retrying; the next one
    // read the notice 2.8 s later and with it a deadline 2.8 s later, all it could know).
    let knowable = match lost_before_fence {
        _ if !(restated || timeless) => deadline,
        Some(back) => deadline + (v.first_readable(back) - seen),
        None => deadline + (first - seen),
    };
    // The pods still on the node as it went (not those the kubelet or the garbage collector
    // removed later: a pod asked to stop with a grace longer than the notice is still there).
    for (name, uid) in &v.rec.left_at_end {
        if v.sc.grace_of(name).is_none() {
            continue;
        }
        // Asked to leave with a grace that ran out before the deadline: the agent kept its
        // promise, and the simulated kubelet (in the soak's process, on a loaded machine)
        // was late to remove the pod. Only the last request counts (a later one may cut it).
        let asked_in_time = v
            .rec
            .pods
            .iter()
            .rev()
            .find(|d| d.uid == *uid && d.step == sih_sim_cluster::journal::PodStep::Deleting)
            .and_then(|d| Some(v.s(d.at) + d.grace_seconds? as f64))
            .is_some_and(|out_by| out_by <= knowable);
        if asked_in_time {
            continue;
        }
        out.push(Violation {
            invariant: "left-at-hard-deadline",
            detail: format!(
                "{name} was still on the node when the instance went at {deadline:.1}s, not asked to leave in time"
            ),
        });
    }
}

fn two_drains(v: &View<'_>, out: &mut Vec<Violation>) {
    use std::collections::BTreeMap;
    // Per pod, the evictions the API server answered, as `(from, to)` on its clock.
    let mut by_pod: BTreeMap<(&str, &str), Vec<(f64, f64)>> = BTreeMap::new();
    for r in &v.rec.requests {
        if r.method != "POST"
            || r.resource.as_deref() != Some("pods")
            || r.subresource.as_deref() != Some("eviction")
            || r.fault.is_some()
        {
            continue;
        }
        let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref()) else {
            continue;
        };
        let from = v.s(r.at);
        by_pod
            .entry((ns, name))
            .or_default()
            .push((from, from + r.duration_ms as f64 / 1000.0));
    }
    for ((ns, name), mut calls) in by_pod {
        calls.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in calls.windows(2) {
            // The server holds an eviction a few milliseconds; two drains' requests for one
            // pod meet inside that only by chance, so anything overlapping is two at once.
            if w[1].0 < w[0].1 - 0.001 {
                out.push(Violation {
                    invariant: "two-drains",
                    detail: format!(
                        "two evictions of {ns}/{name} in flight at once ({:.3}-{:.3}s and from {:.3}s)",
                        w[0].0, w[0].1, w[1].0
                    ),
                });
                break;
            }
        }
    }
}

fn announced_twice(v: &View<'_>, out: &mut Vec<Violation>) {
    use std::collections::BTreeMap;
    let mut by_notice: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (t, m) in &v.rec.webhooks {
        if m["phase"] != "detected" {
            continue;
        }
        let kind = m["kind"].as_str().unwrap_or_default();
        // One underlying event: per kind for the instance, per EventId for scheduled events.
        let key = if kind == "scheduled-maintenance" {
            format!("{kind} {}", m["id"].as_str().unwrap_or_default())
        } else {
            kind.to_owned()
        };
        by_notice.entry(key).or_default().push(v.s(*t));
    }
    for (key, mut times) in by_notice {
        times.sort_by(f64::total_cmp);
        if times.len() < 2 {
            continue;
        }
        let kind = key.split(' ').next().unwrap_or_default().to_owned();
        // Recorded: this very event (scheduled ones, by EventId), or the instance's kind.
        let recorded = |a: f64, b: f64| match key.split_once(' ') {
            Some((_, id)) => v.recorded_id(id, a, b),
            None => v.recorded(&kind, a, b),
        };
        for w in times.windows(2) {
            let (first, again) = (w[0], w[1]);
            // A process that died before it could record the notice on the node, or that
            // restarted while the API could not tell it, announces again: at-least-once.
            let excused = v.rec.lives.iter().any(|l| {
                let started = v.s(l.started);
                if !(started > first && started <= again + 0.1) {
                    return false;
                }
                // The restart's own down time is no excuse: the record on the node is what a
                // restarted process reads, unless the API could not give it.
                !recorded(first - 1.0, started)
                    || v.api_disrupted_within(started - 0.5, started + 3.0)
            });
            // Queue mode: a replica whose heartbeat could not land (the API hung) lets its
            // claim go; if its record of the notice never landed either, the replica that
            // takes the message over cannot know it was announced. Nothing durable could
            // carry that fact while the API hung, so this too is at-least-once.
            let taken_over_unrecorded = v.sc.mode == Mode::Queue
                && v.disrupted_within(first, again)
                && !recorded(first - 1.0, again - 0.5);
            // Queue mode: a replica that takes a dead one's node over reads the node's record
            // to know what was said; while the API cannot give it, new notices are announced
            // after a short patience all the same (detection and announcement never wait for
            // Kubernetes), so a takeover under an API fault may say one again (seed 61645).
            let taken_over_unread = v.sc.mode == Mode::Queue
                && v.rec
                    .lives
                    .iter()
                    .any(|l| l.killed && l.ended.is_some_and(|e| v.s(e) > first && v.s(e) < again))
                && v.api_disrupted_within(again - 3.0, again);
            if !excused && !taken_over_unrecorded && !taken_over_unread {
                out.push(Violation {
                    invariant: "announced-twice",
                    detail: format!("{key} announced at {first:.1}s and again at {again:.1}s"),
                });
            }
        }
    }
}

fn unfenced_while_needed(v: &View<'_>, out: &mut Vec<Violation>) {
    for (i, n) in v.sc.notices.iter().enumerate() {
        let Some(seen) = v.visible(i) else { continue };
        let until = v.withdrawn(i).or(v.terminated()).unwrap_or(v.end + 1.0);
        let mut fenced = false;
        for r in v.node_records() {
            let t = v.s(r.at);
            if t < seen - 0.05 {
                continue;
            }
            if t >= until {
                break;
            }
            let has = View::has_taint(r, n.kind());
            let cordon_ok = !n.drains() || r.unschedulable;
            if has && cordon_ok {
                // Another notice of the same kind may be what the taint is still there for
                // (a cancelled event whose undo is being written): the obligation starts with
                // a taint naming this notice, or once the agent has surely seen it.
                let named = v.rec.event_ids[i].as_ref().is_none_or(|id| {
                    r.taints
                        .iter()
                        .any(|t| t.starts_with(&format!("{}{id}:", View::taint_key(n.kind()))))
                });
                if named || t >= seen + 1.5 {
                    fenced = true;
                }
                continue;
            }
            if fenced {
                out.push(Violation {
                    invariant: "unfenced-while-needed",
                    detail: format!(
                        "at {t:.1}s the node lost its {}{} while the {} notice (visible at {seen:.1}s) was active",
                        if has { "" } else { "taint" },
                        if cordon_ok { "" } else if has { "cordon" } else { " and cordon" },
                        n.kind()
                    ),
                });
                break;
            }
        }
    }
}

fn deleted_before_done(v: &View<'_>, out: &mut Vec<Violation>) {
    use sih_sim_cluster::journal::PodStep;
    for (at, body) in &v.rec.deletions {
        let t = v.s(*at);
        let Some(i) = v.rec.bodies.iter().position(|b| b.as_deref() == Some(body)) else {
            continue;
        };
        let n = &v.sc.notices[i];
        if n.drains() {
            let left: Vec<&str> = v
                .rec
                .pods
                .iter()
                .filter(|p| {
                    p.step == PodStep::Removed
                        && p.node.as_deref() == Some(v.rec.node.as_str())
                        && v.sc.grace_of(&p.name).is_some()
                        && v.s(p.at) > t + 0.5
                })
                .map(|p| p.name.as_str())
                .collect();
            if !left.is_empty() {
                out.push(Violation {
                    invariant: "deleted-before-done",
                    detail: format!(
                        "the {} message was deleted at {t:.1}s while {} still had to leave",
                        n.kind(),
                        left.join(", ")
                    ),
                });
            }
        } else {
            let fenced = v
                .node_records()
                .any(|r| v.s(r.at) <= t + 0.05 && View::has_taint(r, n.kind()));
            if !fenced {
                out.push(Violation {
                    invariant: "deleted-before-done",
                    detail: format!(
                        "the {} message was deleted at {t:.1}s before the node was tainted",
                        n.kind()
                    ),
                });
            }
        }
        if matches!(n, Notice::AsgTermination { .. }) {
            let completed = v.rec.completions.iter().any(|c| {
                c["time"]
                    .as_f64()
                    .is_some_and(|s| s <= at.as_millisecond() as f64 / 1000.0 + 0.05)
            });
            if !completed {
                out.push(Violation {
                    invariant: "deleted-before-done",
                    detail: format!(
                        "the lifecycle message was deleted at {t:.1}s before its action was completed"
                    ),
                });
            }
        }
    }
}

/// Whether pod `uid` was gone by `t`, or asked to be gone (its last deletion's grace ending)
/// by `by`.
fn out_by(v: &View<'_>, uid: &str, t: f64, by: f64) -> bool {
    use sih_sim_cluster::journal::PodStep;
    let mine = || v.rec.pods.iter().filter(|p| p.uid == uid);
    if mine().any(|p| p.step == PodStep::Removed && v.s(p.at) <= t) {
        return true;
    }
    mine()
        .rfind(|p| p.step == PodStep::Deleting && v.s(p.at) <= t)
        .and_then(|p| Some(v.s(p.at) + p.grace_seconds? as f64))
        .is_some_and(|ends| ends <= by)
}

/// A soft notice's deadline (a scheduled event's `NotBefore`, an ASG termination's drain
/// budget): the instance does not vanish then, so nothing else would show a drain that did
/// not finish (or never started).
fn soft_deadlines(v: &View<'_>, out: &mut Vec<Violation>) {
    for (i, n) in v.sc.notices.iter().enumerate() {
        if !n.drains() || n.hard() {
            continue;
        }
        let (Some(seen), Some(deadline)) = (v.visible(i), v.deadline(i)) else {
            continue;
        };
        // A budget counted from detection starts again when the agent was down as the notice
        // came, or died before the node recorded it: its successor cannot know of an earlier
        // look, and detects it afresh once back (the soak's seed 63231: killed while every
        // fence write failed). In queue mode the successor is whichever replica the message
        // comes back to after its visibility timeout (seed 63922: the other replica, 6 s after
        // the kill), so a kill counts until the dead replica's claim and message are free.
        let deadline = if n.budget_counted() {
            let recorded = fenced_at(v, n.kind(), true, seen - 0.05, v.end).unwrap_or(v.end);
            v.down_held
                .iter()
                .filter(|&&(down, back)| back > seen - 0.05 && down < recorded)
                .map(|&(_, back)| deadline + (v.first_readable(back) - seen))
                .fold(deadline, f64::max)
        } else {
            deadline
        };
        if v.withdrawn(i).is_some_and(|w| w < deadline + 1.0)
            || deadline > v.end - 1.0
            || deadline - v.first_readable(seen) < MARGIN + 2.0
            || v.api_or_down_within(deadline - 9.0, deadline + 1.0)
        {
            continue;
        }
        // A soft deadline respects budgets (the contract deletes past a refusing budget only
        // for a hard one): a budget that refuses every eviction keeps its pods, and so does an
        // eviction API that hung or failed into the deadline's last API timeout.
        let evictions_failing = v.rec.cluster_faults.iter().any(|(from, to, _, spec)| {
            spec["resource"] == "pods/eviction"
                && v.s(*from) < deadline
                && v.s(*to) + 10.0 > deadline
        });
        if evictions_failing {
            continue;
        }
        for (name, uid) in &v.rec.pods_at[i] {
            if v.sc.grace_of(name).is_none() || v.sc.held_by_budget(name) {
                continue;
            }
            // The product counts from its own first read (up to a poll later than the
            // harness's `seen`): a second of slack for the grace's end.
            if !out_by(v, uid, deadline + 0.5, deadline + 1.0) {
                out.push(Violation {
                    invariant: "left-at-deadline",
                    detail: format!(
                        "{name} was still on the node, not asked to leave in time, at the {} deadline ({deadline:.1}s)",
                        n.kind()
                    ),
                });
            }
        }
    }
}

/// The most usable time a fence may take after its notice can be read: a poll (0.5 s) and
/// one write, with room for a loaded machine (measured: docs/reliability.md).
pub const FENCE_BOUND: f64 = 2.0;
/// The same on the real control plane: eight kube-apiservers, etcds and controller-managers
/// share the soak's two cores there, and a write takes seconds at the worst moments
/// (measured: 2.0–3.4 s for a few fences of 40 scenarios).
pub const FENCE_BOUND_REAL: f64 = 6.0;

/// When the node first carried `kind`'s fence (its taint; and the cordon, for a drain) at or
/// after `from`, before `until`: `from` itself when the fence already stood then (a second
/// message about the same notice — EC2's `stopping` then `shutting-down` — finds the node
/// fenced by the first; the seeds 60910, 61468 and 61495 counted the next unrelated write).
fn fenced_at(v: &View<'_>, kind: &str, drains: bool, from: f64, until: f64) -> Option<f64> {
    let fenced = |r: &sih_sim_cluster::journal::NodeRecord| {
        View::has_taint(r, kind) && (!drains || r.unschedulable)
    };
    let standing = v
        .node_records()
        .filter(|r| v.s(r.at) < from)
        .last()
        .is_some_and(fenced);
    if standing && from < until {
        return Some(from);
    }
    v.node_records()
        .map(|r| (v.s(r.at), r))
        .filter(|(t, _)| *t >= from && *t < until)
        .find(|(_, r)| fenced(r))
        .map(|(t, _)| t)
}

/// Each notice's time to fence (seconds of wall time from when it could first be read),
/// for the summary.
pub fn fence_times(sc: &Scenario, rec: &Record) -> Vec<f64> {
    let Some(v) = view(sc, rec) else {
        return Vec::new();
    };
    (0..sc.notices.len())
        .filter_map(|i| {
            let seen = v.visible(i)?;
            let n = &sc.notices[i];
            let until = v.withdrawn(i).or(v.terminated()).unwrap_or(v.end);
            let at = fenced_at(&v, n.kind(), n.drains(), seen - 0.05, until + 1.0)?;
            Some((at - v.first_readable(seen)).max(0.0))
        })
        .collect()
}

fn fence_late(v: &View<'_>, out: &mut Vec<Violation>) {
    for (i, n) in v.sc.notices.iter().enumerate() {
        let Some(seen) = v.visible(i) else { continue };
        let until = v.withdrawn(i).or(v.terminated()).unwrap_or(v.end);
        let Some(at) = fenced_at(v, n.kind(), n.drains(), seen - 0.05, until + 1.0) else {
            continue;
        };
        let took = v.usable(v.first_readable(seen), at);
        // Queue mode: a message whose claim or write failed comes back after a pause that
        // doubles with each receive (1 s, 2 s, 4 s): after a disruption, up to 4 s more.
        let base = if v.rec.real {
            FENCE_BOUND_REAL
        } else {
            FENCE_BOUND
        };
        let bound = if v.sc.mode == Mode::Queue && v.disrupted_within(seen, at) {
            base + 4.0
        } else {
            base
        };
        if took > bound {
            out.push(Violation {
                invariant: "fence-late",
                detail: format!(
                    "{} visible at {seen:.1}s fenced at {at:.1}s: {took:.1}s of usable time (bound {bound}s)",
                    n.kind()
                ),
            });
        }
    }
}

/// Every notice withdrawn: the node is as it was (no taint of ours, not cordoned) by the end.
fn left_fenced(v: &View<'_>, out: &mut Vec<Violation>) {
    let seen: Vec<usize> = (0..v.sc.notices.len())
        .filter(|&i| v.visible(i).is_some())
        .collect();
    if seen.is_empty() || seen.iter().any(|&i| v.withdrawn(i).is_none()) {
        return;
    }
    let last = seen
        .iter()
        .filter_map(|&i| v.withdrawn(i))
        .fold(0.0, f64::max);
    // Time to see the last withdrawal (a poll; Azure holds a vanished event two reads) and
    // write the undo, undisturbed.
    if v.usable(last, v.end) < 4.0 {
        return;
    }
    let Some(r) = v.node_records().filter(|r| v.s(r.at) <= v.end).last() else {
        return;
    };
    let ours: Vec<&String> = r
        .taints
        .iter()
        .filter(|t| t.starts_with("spot-interrupt-handler/"))
        .collect();
    if !ours.is_empty() || r.unschedulable {
        out.push(Violation {
            invariant: "left-fenced",
            detail: format!(
                "every notice withdrawn by {last:.1}s, yet at the end the node was {}{}",
                if r.unschedulable { "cordoned " } else { "" },
                if ours.is_empty() {
                    String::new()
                } else {
                    format!("tainted {ours:?}")
                }
            ),
        });
    }
}

/// Azure: an event is acknowledged (which starts it: the VM reboots or goes) only once its
/// drain is done (every pod gone, or asked to be gone by the deadline once it has come), and
/// never after it was withdrawn.
fn acked_early(v: &View<'_>, out: &mut Vec<Violation>) {
    for (at, id) in &v.rec.acks {
        let t = v.s(*at);
        let Some(i) = v
            .rec
            .event_ids
            .iter()
            .position(|e| e.as_deref() == Some(id))
        else {
            continue;
        };
        let n = &v.sc.notices[i];
        if v.withdrawn(i).is_some_and(|w| w < t - 0.5) {
            out.push(Violation {
                invariant: "acked-early",
                detail: format!(
                    "{} {id} acknowledged at {t:.1}s after its withdrawal",
                    n.kind()
                ),
            });
            continue;
        }
        if !n.drains() {
            continue;
        }
        let deadline = v.deadline(i).unwrap_or(f64::INFINITY);
        let left: Vec<&str> = v.rec.pods_at[i]
            .iter()
            .filter(|(name, _)| v.sc.grace_of(name).is_some())
            .filter(|(_, uid)| {
                if t >= deadline - MARGIN - 0.5 {
                    !out_by(v, uid, t + 0.5, deadline + 1.0)
                } else {
                    !out_by(v, uid, t + 0.5, f64::NEG_INFINITY)
                }
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if !left.is_empty() {
            out.push(Violation {
                invariant: "acked-early",
                detail: format!(
                    "{} {id} acknowledged at {t:.1}s while {} had still to leave",
                    n.kind(),
                    left.join(", ")
                ),
            });
        }
    }
}

/// The most requests per second the agent may send its metadata service. By design: each
/// poll (every 0.5 s here) reads about six items, each tried at most three times on a 5xx,
/// plus a token: about 45 a second at worst; 68 was the busiest second measured (a 5xx
/// fault across a restart). A loop that spins (GCE's once made 2 450 a second) is far above.
pub const METADATA_RPS: usize = 120;

fn metadata_flood(v: &View<'_>, out: &mut Vec<Violation>) {
    let (count, from) = busiest_second(&v.rec.metadata_requests);
    if count > METADATA_RPS {
        out.push(Violation {
            invariant: "metadata-flood",
            detail: format!(
                "{count} requests to the metadata service within a second of {:.1}s",
                from.map_or(0.0, |t| v.s(t))
            ),
        });
    }
}

/// The busiest second's metadata requests, for the summary.
pub fn metadata_peak(rec: &Record) -> usize {
    busiest_second(&rec.metadata_requests).0
}

/// The most of `times` within one second, and when that second began.
fn busiest_second(times: &[Timestamp]) -> (usize, Option<Timestamp>) {
    let mut ms: Vec<i64> = times.iter().map(|t| t.as_millisecond()).collect();
    ms.sort_unstable();
    let (mut best, mut best_from, mut from) = (0, None, 0);
    for to in 0..ms.len() {
        while ms[to] - ms[from] >= 1000 {
            from += 1;
        }
        if to - from + 1 > best {
            best = to - from + 1;
            best_from = Timestamp::from_millisecond(ms[from]).ok();
        }
    }
    (best, best_from)
}

fn fence_refused(v: &View<'_>, out: &mut Vec<Violation>) {
    for r in &v.rec.requests {
        if r.resource.as_deref() == Some("nodes")
            && r.subresource.is_none()
            && matches!(r.verb.as_str(), "patch" | "update")
            && r.status == 422
        {
            out.push(Violation {
                invariant: "fence-refused",
                detail: format!(
                    "the API server refused a write to node {} as invalid at {:.1}s",
                    r.name.as_deref().unwrap_or("?"),
                    v.s(r.at)
                ),
            });
            return;
        }
    }
}

/// How long after a start no probe counts: the shipped liveness probe's
/// `initialDelaySeconds: 5` (deploy/manifests, the chart), before which a kubelet asks
/// nothing. Inside it the agent starts under the flood's first burst on its one thread; a
/// second's wait there restarts nobody (the long run's 62052 and 60369, 2–3 s after a
/// start, on the release build under 80 scenarios at once; 62052 replays clean). Was 2 s
/// (4 s on the real control plane), stricter than any kubelet.
pub const HEALTHZ_SETTLE: f64 = 5.0;
/// How soon a probe must be answered: a second, as a kubelet's default probe timeout; three on
/// the real control plane, the same allowance as its fence bound (eight control planes on two
/// cores: `real:32` missed a 1 s probe in two CI-form runs of three, answered within 3 s).
pub const HEALTHZ_BOUND: f64 = 1.0;
pub const HEALTHZ_BOUND_REAL: f64 = 3.0;

fn healthz_starved(v: &View<'_>, out: &mut Vec<Violation>) {
    let settle = HEALTHZ_SETTLE;
    let bound = if v.rec.real {
        HEALTHZ_BOUND_REAL
    } else {
        HEALTHZ_BOUND
    };
    // Up: from a moment after a start (the listener binds, the flood refills) to its end.
    let up = |t: f64| {
        v.rec.lives.iter().any(|l| {
            let from = v.s(l.started) + settle;
            let to = l.ended.map_or(f64::INFINITY, |e| v.s(e));
            t >= from && t + bound <= to
        })
    };
    let missed: Vec<f64> = v
        .rec
        .probes
        .iter()
        .filter(|(_, took)| took.is_none_or(|s| s > bound))
        .map(|(t, _)| v.s(*t))
        .filter(|&t| up(t) && t <= v.end - bound)
        .collect();
    if let Some(first) = missed.first() {
        out.push(Violation {
            invariant: "healthz-starved",
            detail: format!(
                "{} /healthz probe(s) unanswered within {bound}s under the flood, the first at {first:.1}s",
                missed.len()
            ),
        });
    }
}

/// The Event reason of a notice kind, as the contract names it.
fn event_reason(kind: &str) -> &'static str {
    match kind {
        "spot-interruption" => "SpotInterruption",
        "rebalance-recommendation" => "RebalanceRecommendation",
        "scheduled-maintenance" => "ScheduledMaintenance",
        "asg-termination" => "AsgTermination",
        "instance-state-change" => "InstanceStateChange",
        _ => "",
    }
}

fn untold(v: &View<'_>, out: &mut Vec<Violation>) {
    for (i, n) in v.sc.notices.iter().enumerate() {
        let Some(seen) = v.visible(i) else { continue };
        let until = v.withdrawn(i).or(v.terminated()).unwrap_or(v.end);
        if fenced_at(v, n.kind(), n.drains(), seen - 0.05, until + 1.0).is_none() {
            continue;
        }
        // Events are written in the background and retried for a while; an Event fault (or
        // any fault on everything) around the notice excuses a missing one.
        let events_failing = v.rec.cluster_faults.iter().any(|(from, to, _, spec)| {
            matches!(spec["resource"].as_str(), Some("events" | "*"))
                && v.s(*from) < v.end
                && v.s(*to) + 10.0 > seen
        });
        if events_failing || v.api_or_down_within(seen, (seen + 10.0).min(v.end)) {
            continue;
        }
        let reason = event_reason(n.kind());
        let told = v
            .rec
            .events
            .iter()
            .any(|(r, regarding)| r == reason && *regarding == v.rec.node);
        if !told {
            out.push(Violation {
                invariant: "untold",
                detail: format!(
                    "{} visible at {seen:.1}s fenced the node, yet no {reason} Event names it",
                    n.kind()
                ),
            });
        }
    }
}

/// How long after its TTL a placeholder may still be there: the keeper's look and its call.
pub const PLACEHOLDER_SLACK: f64 = 5.0;

fn is_placeholder(name: &str) -> bool {
    name.starts_with("sih-reserve-")
}

fn placeholders(v: &View<'_>, out: &mut Vec<Violation>) {
    use sih_sim_cluster::journal::PodStep;
    let fenced_at = |t: f64| {
        v.node_records()
            .filter(|r| v.s(r.at) <= t)
            .last()
            .is_some_and(|r| {
                r.taints
                    .iter()
                    .any(|t| t.starts_with("spot-interrupt-handler/"))
            })
    };
    let ttl = crate::run::RESERVE_TTL
        .trim_end_matches('s')
        .parse::<f64>()
        .unwrap_or(30.0);
    for p in &v.rec.pods {
        if p.preempted && !is_placeholder(&p.name) {
            out.push(Violation {
                invariant: "real-pod-preempted",
                detail: format!("{} was preempted at {:.1}s", p.name, v.s(p.at)),
            });
        }
        if !is_placeholder(&p.name) {
            continue;
        }
        if p.step == PodStep::Bound
            && p.node.as_deref() == Some(v.rec.node.as_str())
            && fenced_at(v.s(p.at))
        {
            out.push(Violation {
                invariant: "placeholder-on-fenced-node",
                detail: format!("{} bound to the fenced node at {:.1}s", p.name, v.s(p.at)),
            });
        }
        if p.step != PodStep::Created {
            continue;
        }
        let due = v.s(p.at) + ttl;
        let by = due + PLACEHOLDER_SLACK;
        let gone = v
            .rec
            .pods
            .iter()
            .any(|q| q.uid == p.uid && q.step == PodStep::Removed && v.s(q.at) <= by);
        // Undisturbed from its due time on: the product up, the API answering.
        if !gone && by <= v.end && v.usable(due, by) >= PLACEHOLDER_SLACK - 0.5 {
            out.push(Violation {
                invariant: "placeholder-outlived",
                detail: format!(
                    "{} made at {:.1}s was still there at {by:.1}s, its TTL of {ttl}s long past",
                    p.name,
                    v.s(p.at)
                ),
            });
        }
    }
}
