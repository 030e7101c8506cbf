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
//! - `two-drains`: two drains of one node ran at once;
//! - `announced-twice`: one notice was announced more than once (a restart, or in queue mode
//!   a takeover while the API was disrupted, before the notice was recorded on the node,
//!   excuses a second announcement: nothing durable could say it was made);
//! - `unfenced-while-needed`: the node lost a taint or its cordon while a notice needed it;
//! - `deleted-before-done`: a queue message was deleted before its action had finished.

use jiff::Timestamp;
use serde_json::Value;

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
    /// Metadata outages (a blocking fault, until the next poll after it ends).
    imds_outages: Vec<(f64, f64)>,
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
        if b <= a {
            return 0.0;
        }
        let mut cuts: Vec<(f64, f64)> = self
            .disrupted
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

    fn disrupted_within(&self, a: f64, b: f64) -> bool {
        self.usable(a, b) < (b - a) - 1e-9
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
    /// it at its next poll).
    fn active_drains(&self, t: f64, lag: f64) -> Vec<usize> {
        (0..self.sc.notices.len())
            .filter(|&i| self.sc.notices[i].drains())
            .filter(|&i| self.visible(i).is_some_and(|v| v <= t + 0.05))
            .filter(|&i| self.withdrawn(i).is_none_or(|w| t < w + lag))
            .collect()
    }
}

pub fn check(sc: &Scenario, rec: &Record) -> Vec<Violation> {
    let Some(t0) = rec.t0 else {
        return Vec::new();
    };
    let mut v = View {
        sc,
        rec,
        t0,
        disrupted: Vec::new(),
        down: Vec::new(),
        imds_outages: Vec::new(),
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
    v.disrupted = v
        .down
        .iter()
        .map(|&(down, back)| (down, back.max(down + claim_held)))
        .chain(v.imds_outages.iter().copied())
        .collect();
    for (from, to, disrupts, _) in &rec.cluster_faults {
        if *disrupts {
            v.disrupted.push((v.s(*from), v.s(*to) + 0.5));
        }
    }
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
    out
}

fn never_acted_on(v: &View<'_>, out: &mut Vec<Violation>) {
    for (i, n) in v.sc.notices.iter().enumerate() {
        let Some(seen) = v.visible(i) else { continue };
        let until = v
            .withdrawn(i)
            .or(v.terminated())
            .unwrap_or(v.end)
            .min(v.end);
        // Queue mode: a message handled by a replica that dies comes back after its
        // visibility timeout and any claim's expiry; give it that long.
        let needed = match v.sc.mode {
            Mode::Imds | Mode::Gce | Mode::Azure => 4.0,
            Mode::Queue => 20.0,
        };
        if v.usable(seen, until) < needed {
            continue;
        }
        if !v.recorded(n.kind(), seen - 0.05, until + 1.0) {
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
    if v.disrupted_within(deadline - 9.0, deadline + 1.0) {
        return;
    }
    let seen = v.visible(spot).unwrap_or(0.0);
    if deadline - seen < MARGIN + 2.0 {
        return;
    }
    // A restated spot time (amazon-ec2-metadata-mock's way: now + lead on every read) first
    // read after a metadata outage says a later deadline than the instance's real one, and
    // nothing could tell the agent otherwise (seed 64898: read 2.7 s late, planned 2.7 s
    // late; seed 66440: the agent was down when it appeared). The promise is kept against the
    // deadline it could know.
    let restated = matches!(v.sc.notices[spot], Notice::Spot { restate: true, .. });
    let knowable = if restated {
        deadline + (v.first_readable(seen) - seen)
    } else {
        deadline
    };
    for p in &v.rec.pods {
        if p.node.as_deref() != Some(v.rec.node.as_str())
            || p.step != sih_sim_cluster::journal::PodStep::Removed
            || !p.node_gone
            || v.sc.grace_of(&p.name).is_none()
        {
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
            .find(|d| d.uid == p.uid && d.step == sih_sim_cluster::journal::PodStep::Deleting)
            .and_then(|d| Some(v.s(d.at) + d.grace_seconds? as f64))
            .is_some_and(|out_by| out_by <= knowable);
        if asked_in_time {
            continue;
        }
        out.push(Violation {
            invariant: "left-at-hard-deadline",
            detail: format!(
                "{} was still on the node when the instance went at {deadline:.1}s",
                p.name
            ),
        });
    }
}

/// JSON log lines of one process: `(seconds, message, node)`.
fn log_lines(v: &View<'_>, path: &std::path::Path) -> Vec<(f64, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|j| {
            let t: Timestamp = j["timestamp"].as_str()?.parse().ok()?;
            Some((
                v.s(t),
                j["message"].as_str().unwrap_or_default().to_owned(),
                j["node"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn two_drains(v: &View<'_>, out: &mut Vec<Violation>) {
    // Every drain as an interval, per process; a process's open drain ends with it.
    let mut intervals: Vec<(usize, f64, f64)> = Vec::new();
    for (li, life) in v.rec.lives.iter().enumerate() {
        let end = life.ended.map_or(v.end, |t| v.s(t));
        let mut open: Option<f64> = None;
        for (t, msg, node) in log_lines(v, &life.log) {
            if !node.is_empty() && node != v.rec.node {
                continue;
            }
            if msg == "drain started" {
                if let Some(since) = open {
                    out.push(Violation {
                        invariant: "two-drains",
                        detail: format!(
                            "a second drain started at {t:.1}s while one started at {since:.1}s ran (one process)"
                        ),
                    });
                }
                open = Some(t);
            } else if (msg.starts_with("drain succeeded")
                || msg.starts_with("drain failed")
                || msg.starts_with("drain stopped"))
                && let Some(since) = open.take()
            {
                intervals.push((li, since, t));
            }
        }
        if let Some(since) = open {
            intervals.push((li, since, end));
        }
    }
    for (a, x) in intervals.iter().enumerate() {
        for y in &intervals[a + 1..] {
            if x.0 != y.0 && x.1 < y.2 - 0.3 && y.1 < x.2 - 0.3 {
                out.push(Violation {
                    invariant: "two-drains",
                    detail: format!(
                        "drains of one node ran at once in two processes: {:.1}-{:.1}s and {:.1}-{:.1}s",
                        x.1, x.2, y.1, y.2
                    ),
                });
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
        for w in times.windows(2) {
            let (first, again) = (w[0], w[1]);
            // A process that died before it could record the notice on the node, or that
            // restarted while the API could not tell it, announces again: at-least-once.
            let excused = v.rec.lives.iter().any(|l| {
                let started = v.s(l.started);
                if !(started > first && started <= again + 0.1) {
                    return false;
                }
                !v.recorded(&kind, first - 1.0, started)
                    || v.disrupted_within(started - 0.5, started + 3.0)
            });
            // Queue mode: a replica whose heartbeat could not land (the API hung) lets its
            // claim go; if its record of the notice never landed either, the replica that
            // takes the message over cannot know it was announced. Nothing durable could
            // carry that fact while the API hung, so this too is at-least-once.
            let taken_over_unrecorded = v.sc.mode == Mode::Queue
                && v.disrupted_within(first, again)
                && !v.recorded(&kind, first - 1.0, again - 0.5);
            if !excused && !taken_over_unrecorded {
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
