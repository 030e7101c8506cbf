//! Garbage collection: objects whose controlling owner is gone are deleted (background
//! propagation), and pods bound to a node that no longer exists are removed (pod GC).

use std::collections::HashMap;

use serde_json::Value;

use super::{name_of, ns_of};
use crate::api::pods;
use crate::error::ApiError;
use crate::resources::{self, NODES, PODS, REPLICASETS};
use crate::store::Tx;

/// Whether an object still has an owner, looking each owner up once per pass. As the real
/// garbage collector: an object is collected once every owner it names is gone, controller or
/// not (a capacity placeholder is owned by the Node it stands in for, not controlled); owners
/// of a kind not served here count as present.
fn owner_exists(tx: &Tx<'_>, obj: &Value, known: &mut HashMap<String, bool>) -> bool {
    let Some(owners) = obj["metadata"]["ownerReferences"]
        .as_array()
        .filter(|r| !r.is_empty())
    else {
        return true;
    };
    owners.iter().any(|owner| {
        let Some(storage) = resources::by_kind(
            owner["apiVersion"].as_str().unwrap_or_default(),
            owner["kind"].as_str().unwrap_or_default(),
        ) else {
            return true;
        };
        let uid = owner["uid"].as_str().unwrap_or_default();
        if let Some(&exists) = known.get(uid) {
            return exists;
        }
        let ns = if resources::RESOURCES[storage].namespaced {
            obj["metadata"]["namespace"].as_str().unwrap_or_default()
        } else {
            ""
        };
        let exists = tx
            .view()
            .get(storage, ns, owner["name"].as_str().unwrap_or_default())
            .is_some_and(|o| o["metadata"]["uid"] == owner["uid"]);
        known.insert(uid.to_owned(), exists);
        exists
    })
}

pub fn reconcile(tx: &mut Tx<'_>) -> Result<(), ApiError> {
    for storage in [REPLICASETS, PODS] {
        let mut known = HashMap::new();
        let orphans: Vec<_> = tx
            .view()
            .list(storage, None)
            .filter(|o| {
                o["metadata"]["deletionTimestamp"].is_null() && !owner_exists(tx, o, &mut known)
            })
            .cloned()
            .collect();
        for o in orphans {
            pods::delete(
                tx,
                storage,
                &ns_of(&o),
                &name_of(&o),
                &pods::DeleteOptions::default(),
            )?;
        }
    }
    let stranded: Vec<_> = tx
        .view()
        .list(PODS, None)
        .filter(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty() && tx.get(NODES, "", n).is_none())
        })
        .cloned()
        .collect();
    for p in stranded {
        tx.remove(PODS, &ns_of(&p), &name_of(&p));
    }
    Ok(())
}
