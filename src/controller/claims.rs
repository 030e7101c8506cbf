//! Which replica acts on a node, over time: claiming a node for a notice, keeping this replica's
//! heartbeat (and letting every node go at once when it has not landed for most of a claim's
//! life), taking over the nodes of replicas that died, and deleting old released claims.
//!
//! Two notices at once on one node share one claim (counted). A heartbeat that never returns is
//! bounded by a third of the claim's life, and a watchdog does not wait for it: once our claims
//! may look dead to the others, we stop acting on every node (the messages come back), before
//! anyone may take them over. After a restart in the middle, the dead process's heartbeat
//! expires and a survivor (or the restarted process, same name) resumes its nodes.

use std::sync::Arc;
use std::time::Duration;

use sih_node::Claim;
use tokio::time::Instant;

use super::Shared;
use super::held::Standing;
use super::outcome::Outcome;
use crate::responder::Settled;

/// Waits (keeping our copy hidden) until this replica holds the node, or gives up. Meanwhile
/// the replica that holds it has the notice (handed over on the claim), so the node's one
/// evacuation follows it at once; once the node is ours, the notice is found done or resumed.
pub(super) async fn claim_node(
    shared: &Shared,
    node: &str,
    notice: &sih_core::Notice,
) -> Result<(), Outcome> {
    let notice_id = notice.id.as_str();
    let Some(claims) = &shared.claims else {
        return Ok(());
    };
    let started = Instant::now();
    let mut said = false;
    loop {
        let joined = shared.held().join(node);
        match joined {
            Ok(()) => return Ok(()),
            Err(Standing::Free) => {}
            // Our give-up's release is on the way: claimed afresh once it is answered (the
            // release is bounded by the API timeout; the patience below bounds the rest).
            Err(_) => {
                if started.elapsed() > shared.cfg.visibility * 6 {
                    return Err(Outcome::Retry);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        match claims.acquire(node).await {
            Ok(Claim::Acquired) => {
                shared.held().hold(node);
                return Ok(());
            }
            Ok(Claim::HeldElsewhere(holder)) => {
                if !said {
                    match claims.hand_over(node, notice).await {
                        Ok(true) => {
                            tracing::info!(notice_id, node, holder = %holder, "another replica is evacuating the node; handed the notice to it");
                            said = true;
                        }
                        // Released or dead meanwhile: the next try claims it.
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(notice_id, node, error = %e, "cannot hand the notice over; the message comes back");
                            return Err(Outcome::Retry);
                        }
                    }
                }
                if started.elapsed() > shared.cfg.visibility * 6 {
                    return Err(Outcome::Retry);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::warn!(notice_id, node, error = %e, "cannot claim the node; the message comes back");
                return Err(Outcome::Retry);
            }
        }
    }
}

/// One user of ours no longer needs the node's claim; the last one gives it up, but only once
/// the node's evacuation is quiet here: a drain resumed from the node's record (a notice of a
/// replica that died) may outlive the notice that brought us the claim, and another replica
/// must not take the node while it runs (two drains). Meanwhile the claim stays counted, so a
/// notice arriving in between joins it instead of waiting for a release; one arriving after the
/// give-up waits for the release's answer and claims the node afresh (`held.rs`).
pub(super) async fn unclaim_node(shared: &Shared, node: &str) {
    let Some(claims) = &shared.claims else { return };
    if !shared.held().last_user(node) {
        return;
    }
    // Answered at once when nothing runs; a failed drain answers too (its messages come back
    // to whoever claims the node next); a lost claim fails it at once.
    if let Ok(Settled::Failed(why)) = shared.responder.resume(node).await {
        tracing::info!(node, why = %why, "letting the node go with its evacuation not done; its messages come back");
    }
    if !shared.held().give_up(node) {
        return;
    }
    // Another replica may evacuate the node next: what we know of it goes stale. Nothing of
    // ours joins the node until the release is answered, so this forgets no newer notice.
    shared.responder.forget(node);
    if let Err(e) = claims.release(node).await {
        tracing::warn!(node, error = %e, "could not release the node's claim (it expires)");
    }
    shared.held().released(node);
}

/// Beats this replica's heartbeat three times per claim life; a watchdog lets every node go
/// the moment our claims may no longer count as ours.
pub(super) async fn keep(shared: Arc<Shared>) {
    let Some(claims) = &shared.claims else { return };
    let every = (claims.ttl() / 3).max(Duration::from_millis(200));
    let beats = async {
        let mut failing = false;
        loop {
            let next = Instant::now() + every;
            match claims.heartbeat().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the replica's heartbeat lands again");
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "could not renew the replica's heartbeat");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep_until(next).await;
        }
    };
    // The watchdog never waits for a heartbeat that hangs.
    tokio::select! {
        () = beats => {}
        () = watch_validity(shared.clone()) => {}
    }
}

async fn watch_validity(shared: Arc<Shared>) {
    let Some(claims) = &shared.claims else { return };
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if claims.valid() {
            continue;
        }
        let nodes = shared.held().nodes();
        for node in nodes {
            lose(
                &shared,
                &node,
                "this replica's heartbeat has not landed for most of a claim's life",
            );
        }
    }
}

fn lose(shared: &Shared, node: &str, why: &str) {
    if !shared.held().lose(node) {
        return;
    }
    tracing::warn!(
        node,
        why,
        "lost the claim on the node; another replica acts on it now"
    );
    shared.responder.abandon(node, why);
}

/// Looks for the nodes of dead replicas and takes them over; deletes released claims (and
/// dead replicas' heartbeats) once they are older than the retention.
pub(super) async fn take_over(shared: Arc<Shared>) {
    let Some(claims) = &shared.claims else { return };
    let look_every = (claims.ttl() / 6).clamp(Duration::from_millis(250), Duration::from_secs(1));
    let retention = shared.cfg.claim_retention;
    let sweep_every = (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    // The first sweep (and full look) at start: what a previous life of the deployment left.
    let mut next_sweep = Instant::now();
    loop {
        let full = Instant::now() >= next_sweep;
        if full {
            next_sweep = Instant::now() + sweep_every;
            match claims.sweep(retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    deleted = n,
                    "deleted released node claims past their retention"
                ),
                Err(e) => tracing::warn!(error = %e, "could not sweep old node claims"),
            }
        }
        take_handed_over(&shared).await;
        match claims.abandoned(full).await {
            Ok(nodes) => {
                for node in nodes {
                    if shared.held().standing(&node) != Standing::Free {
                        continue;
                    }
                    match claims.acquire(&node).await {
                        Ok(Claim::Acquired) => {
                            shared.held().hold(&node);
                            tokio::spawn(resume(shared.clone(), node));
                        }
                        Ok(Claim::HeldElsewhere(_)) => {}
                        Err(e) => {
                            tracing::warn!(node = %node, error = %e, "could not take an expired claim over")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not look for the nodes of dead replicas"),
        }
        tokio::time::sleep(look_every).await;
    }
}

/// A notice handed over to us and taken off its claim, whose node we lost before it could
/// join the evacuation (seed 63337: our heartbeat missed its window between the two). Its
/// sender waits on the claim, its copy hidden, and hands over only once: dropped here, it
/// would wait until the sender's patience ran out (10.7 s late).
pub(super) struct Stray {
    node: String,
    notice: sih_core::Notice,
    since: Instant,
}

/// How long a stray notice is kept trying: by then its sender's copy has come back.
const STRAY_PATIENCE: Duration = Duration::from_secs(60);

/// Notices other replicas received for nodes we hold: each joins the node's evacuation here,
/// the claim held until it is done. Strays of earlier looks go first: to the node's
/// evacuation if the claim is ours again, else to its new holder.
async fn take_handed_over(shared: &Arc<Shared>) {
    let Some(claims) = &shared.claims else { return };
    let strays = std::mem::take(&mut *shared.strays.lock().unwrap_or_else(|e| e.into_inner()));
    // Each notice with when it first strayed (now, for those handed over since the last look).
    let mut handed: Vec<(String, Vec<(sih_core::Notice, Instant)>)> = Vec::new();
    for stray in strays {
        if stray.since.elapsed() > STRAY_PATIENCE {
            tracing::warn!(node = %stray.node, notice_id = %stray.notice.id,
                "a handed-over notice found no holder in time; its sender's copy comes back");
            continue;
        }
        let standing = shared.held().standing(&stray.node);
        let passed_on = standing == Standing::Free
            && matches!(claims.hand_over(&stray.node, &stray.notice).await, Ok(true));
        if passed_on {
            tracing::info!(node = %stray.node, notice_id = %stray.notice.id,
                "a handed-over notice passed on to the node's holder");
            continue;
        }
        let item = (stray.notice, stray.since);
        match handed.iter_mut().find(|(n, _)| *n == stray.node) {
            Some((_, list)) => list.push(item),
            None => handed.push((stray.node, vec![item])),
        }
    }
    match claims.handed_over().await {
        Ok(h) => {
            let now = Instant::now();
            handed.extend(
                h.into_iter()
                    .map(|(node, n)| (node, n.into_iter().map(|n| (n, now)).collect())),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not look for notices handed over by other replicas")
        }
    }
    for (node, notices) in handed {
        // A claim we are giving up is neither joined nor taken back before its release is
        // answered (the release would clear it): its notices wait for the next look.
        let standing = shared.held().standing(&node);
        let adopted = match standing {
            Standing::Held => true,
            Standing::Releasing => false,
            Standing::Free => adopt(shared, claims, &node).await,
        };
        if !adopted {
            keep_strays(shared, &node, notices);
            continue;
        }
        for (notice, since) in notices {
            if shared.held().join(&node).is_err() {
                // Lost (or given up) meanwhile: kept for the next look.
                keep_strays(shared, &node, vec![(notice, since)]);
                continue;
            }
            tracing::info!(node = %node, notice_id = %notice.id, kind = %notice.kind,
                "a notice handed over by another replica joins the node's evacuation");
            let done = shared.responder.add(&node, notice);
            let (shared, node) = (shared.clone(), node.clone());
            tokio::spawn(async move {
                let _ = done.await;
                unclaim_node(&shared, &node).await;
            });
        }
    }
}

/// Keeps `notices` for `node` for the next look, each with when it first strayed.
fn keep_strays(shared: &Shared, node: &str, notices: Vec<(sih_core::Notice, Instant)>) {
    let mut strays = shared.strays.lock().unwrap_or_else(|e| e.into_inner());
    for (notice, since) in notices {
        if strays
            .iter()
            .any(|s| s.node == node && s.notice.id == notice.id)
        {
            continue;
        }
        strays.push(Stray {
            node: node.to_owned(),
            notice,
            since,
        });
    }
}

/// A claim that names this replica without its knowing: a claim whose write landed while its
/// answer was lost (the API cut mid-call; the soak's seed 62095), or a release that lost the
/// race with a hand-over. Other replicas see it held by a live replica and hand their notices
/// to it; nobody would act until a message of ours came for the node (21 s late in 62095).
/// Taken back by the usual guarded write: a claim released or taken meanwhile is not ours.
async fn adopt(shared: &Shared, claims: &sih_node::Claims, node: &str) -> bool {
    if !claims.valid() {
        return false;
    }
    match claims.acquire(node).await {
        Ok(Claim::Acquired) => {
            tracing::info!(
                node,
                "a claim of this replica's it did not know of (its answer was lost) has notices handed to it: acting on them"
            );
            // Counted by the notices that join below; each one's end counts itself down.
            shared.held().adopt(node);
            true
        }
        Ok(Claim::HeldElsewhere(_)) => false,
        Err(e) => {
            tracing::warn!(node, error = %e, "could not take back a claim of ours; its notices come back to their senders");
            false
        }
    }
}

/// Carries on with a node another replica left mid-way, from its record.
async fn resume(shared: Arc<Shared>, node: String) {
    tracing::info!(node = %node, "took the node over from a replica that is gone; resuming from its record");
    match shared.responder.resume(&node).await {
        Ok(Settled::Done | Settled::Withdrawn) => {
            tracing::info!(node = %node, "the node taken over is done")
        }
        Ok(Settled::Failed(why)) => {
            tracing::warn!(node = %node, why = %why, "the node taken over is not done; its messages come back")
        }
        Err(_) => {}
    }
    unclaim_node(&shared, &node).await;
}
