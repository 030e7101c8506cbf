//! The nodes whose claim this replica holds, each counted by the notices (and takeovers) that
//! need it: pure bookkeeping, so the order of a give-up and a new notice can be tested without
//! a cluster. `claims.rs` makes the calls.
//!
//! A claim being given up is neither held nor free: its release is on the way and will clear
//! the claim whoever needs it by then. A notice that joined it would act with no claim under it
//! (the soak's seed 65950: a spot notice 30 ms after a rebalance's give-up re-acquired the lease
//! that still named us, the release landed after and cleared it, and a second replica fenced and
//! drained beside us). So nothing joins a claim being released; what needs the node waits for
//! the release's answer and claims it afresh.

use std::collections::HashMap;

/// Where a node stands with this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// Ours: a notice may join the claim.
    Held,
    /// Our last user gave the claim up and its release is on the way: wait for it.
    Releasing,
    /// Not ours (any more): claim it.
    Free,
}

#[derive(Debug)]
struct Held {
    users: usize,
    releasing: bool,
}

#[derive(Debug, Default)]
pub(super) struct Holdings {
    nodes: HashMap<String, Held>,
}

impl Holdings {
    pub(super) fn standing(&self, node: &str) -> Standing {
        match self.nodes.get(node) {
            Some(h) if h.releasing => Standing::Releasing,
            Some(_) => Standing::Held,
            None => Standing::Free,
        }
    }

    /// One more user joins a claim we hold; refused (with where the node stands) otherwise.
    pub(super) fn join(&mut self, node: &str) -> Result<(), Standing> {
        match self.nodes.get_mut(node) {
            Some(h) if !h.releasing => {
                h.users += 1;
                Ok(())
            }
            Some(_) => Err(Standing::Releasing),
            None => Err(Standing::Free),
        }
    }

    /// The claim was just acquired for one user. Only a free node is acquired (callers look
    /// first), but two notices may race to it: the second counts itself in.
    pub(super) fn hold(&mut self, node: &str) {
        self.nodes
            .entry(node.to_owned())
            .and_modify(|h| h.users += 1)
            .or_insert(Held {
                users: 1,
                releasing: false,
            });
    }

    /// The claim was just taken back for notices that join it afterwards (each counts itself).
    pub(super) fn adopt(&mut self, node: &str) {
        self.nodes.entry(node.to_owned()).or_insert(Held {
            users: 0,
            releasing: false,
        });
    }

    /// Whether the caller is the node's last user; any other user counts itself down (and is
    /// done). A claim lost meanwhile has no user here: the replica holding it now acts.
    pub(super) fn last_user(&mut self, node: &str) -> bool {
        match self.nodes.get_mut(node) {
            Some(h) if h.releasing => false,
            Some(h) if h.users > 1 => {
                h.users -= 1;
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The last user gives the claim up: from now on nothing joins it, until `released`.
    /// False (and counted down) when another user joined meanwhile: the claim stays.
    pub(super) fn give_up(&mut self, node: &str) -> bool {
        if !self.last_user(node) {
            return false;
        }
        if let Some(h) = self.nodes.get_mut(node) {
            h.users = 0;
            h.releasing = true;
        }
        true
    }

    /// The release was answered (or failed: the claim then expires): the node is free here.
    pub(super) fn released(&mut self, node: &str) {
        if self.nodes.get(node).is_some_and(|h| h.releasing) {
            self.nodes.remove(node);
        }
    }

    /// The claim is lost: whether we held (or were releasing) it.
    pub(super) fn lose(&mut self, node: &str) -> bool {
        self.nodes.remove(node).is_some()
    }

    pub(super) fn nodes(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_notices_share_one_claim_and_the_last_gives_it_up() {
        let mut h = Holdings::default();
        h.hold("n");
        assert_eq!(h.join("n"), Ok(()));
        assert!(!h.give_up("n"), "the first of two users is not the last");
        assert_eq!(h.standing("n"), Standing::Held);
        assert!(h.give_up("n"));
        assert_eq!(h.standing("n"), Standing::Releasing);
        h.released("n");
        assert_eq!(h.standing("n"), Standing::Free);
    }

    /// Seed 65950: a notice arriving while the give-up's release is on the way must not join
    /// (the release would clear the claim under it) and must not count as the last user's.
    #[test]
    fn a_notice_during_a_release_waits_for_it_and_claims_afresh() {
        let mut h = Holdings::default();
        h.hold("n");
        assert!(h.give_up("n"));
        assert_eq!(h.join("n"), Err(Standing::Releasing));
        assert!(
            !h.last_user("n"),
            "nobody of ours uses a claim being released"
        );
        assert!(!h.give_up("n"), "one release only");
        h.released("n");
        assert_eq!(h.join("n"), Err(Standing::Free));
        h.hold("n");
        assert_eq!(h.standing("n"), Standing::Held);
        assert!(h.give_up("n"));
    }

    #[test]
    fn a_user_joining_between_the_two_looks_keeps_the_claim() {
        let mut h = Holdings::default();
        h.hold("n");
        assert!(h.last_user("n"), "first look: alone");
        assert_eq!(
            h.join("n"),
            Ok(()),
            "a notice joins while the drain settles"
        );
        assert!(!h.give_up("n"), "second look: not alone any more");
        assert_eq!(h.standing("n"), Standing::Held);
        assert!(h.give_up("n"));
    }

    #[test]
    fn a_claim_lost_during_its_release_stays_free() {
        let mut h = Holdings::default();
        h.hold("n");
        assert!(h.give_up("n"));
        assert!(h.lose("n"));
        h.released("n");
        assert_eq!(h.standing("n"), Standing::Free);
        assert!(!h.lose("n"));
        // A release answered after the node was claimed afresh leaves the new claim alone.
        h.hold("n");
        h.released("n");
        assert_eq!(h.standing("n"), Standing::Held);
    }

    #[test]
    fn an_adopted_claim_is_counted_by_what_joins_it() {
        let mut h = Holdings::default();
        h.adopt("n");
        assert_eq!(h.join("n"), Ok(()));
        assert!(h.give_up("n"));
        assert_eq!(h.nodes(), vec!["n".to_owned()]);
        h.released("n");
        assert!(h.nodes().is_empty());
    }
}
