//! Node claims across queue replicas: a notice handed over to the replica that holds a node
//! is not lost when that replica dies and another takes the node over.

use std::time::Duration;

use sih_core::{Notice, Source};
use sih_node::claim::{Claim, Claims};
use tokio::time::Instant;

use crate::support::{cluster, node_name};

#[tokio::test]
async fn a_notice_handed_to_a_holder_that_dies_goes_to_the_replica_that_takes_over() {
    let (_c, client) = cluster(2, 10, "").await;
    let (ttl, timeout) = (Duration::from_secs(3), Duration::from_secs(2));
    let a = Claims::new(client.clone(), "default", "replica-a", ttl, timeout);
    let b = Claims::new(client.clone(), "default", "replica-b", ttl, timeout);
    let node = node_name(0);
    a.heartbeat().await.unwrap();
    b.heartbeat().await.unwrap();
    assert_eq!(a.acquire(&node).await.unwrap(), Claim::Acquired);
    // b receives a notice for the node a holds: it hands it over on a's claim.
    let notice = Notice::rebalance("i-1", &node, jiff::Timestamp::now(), Source::Queue);
    assert!(b.hand_over(&node, &notice).await.unwrap());
    // a dies before it looks (no more heartbeats); b, still alive, takes the node over once
    // a's heartbeat has expired.
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        b.heartbeat().await.unwrap();
        if b.acquire(&node).await.unwrap() == Claim::Acquired {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "the dead holder's node was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The notice came with the claim: the new holder finds it, once.
    assert_eq!(
        b.handed_over().await.unwrap(),
        vec![(node.clone(), vec![notice])]
    );
    assert_eq!(b.handed_over().await.unwrap(), vec![]);
}
