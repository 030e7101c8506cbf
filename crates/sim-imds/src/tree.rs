//! The metadata tree: leaves keyed by their path below a version root (`meta-data/instance-id`,
//! `dynamic/instance-identity/document`), and directory listings derived from the keys the way
//! EC2 shows them (one child a line, sub-directories ending in `/`).

use std::collections::BTreeMap;

use serde_json::json;

use crate::Identity;

pub type Leaves = BTreeMap<String, String>;

/// The items that never change while the simulator runs.
pub fn identity_leaves(id: &Identity) -> Leaves {
    let region = id.region();
    let mac = &id.mac;
    let nic = format!("meta-data/network/interfaces/macs/{mac}");
    let mut l = Leaves::new();
    let mut put = |k: &str, v: String| {
        l.insert(k.to_owned(), v);
    };
    put("meta-data/ami-id", id.ami_id.clone());
    put("meta-data/ami-launch-index", "0".into());
    put("meta-data/hostname", id.local_hostname.clone());
    put("meta-data/instance-action", "none".into());
    put("meta-data/instance-id", id.instance_id.clone());
    put("meta-data/instance-life-cycle", id.life_cycle.clone());
    put("meta-data/instance-type", id.instance_type.clone());
    put("meta-data/local-hostname", id.local_hostname.clone());
    put("meta-data/local-ipv4", id.local_ipv4.clone());
    if let (Some(ip), Some(name)) = (&id.public_ipv4, id.public_hostname()) {
        put("meta-data/public-ipv4", ip.clone());
        put("meta-data/public-hostname", name);
    }
    if let Some(group) = &id.auto_scaling_group {
        put(
            "meta-data/tags/instance/aws:autoscaling:groupName",
            group.clone(),
        );
    }
    put("meta-data/mac", mac.clone());
    put(
        "meta-data/placement/availability-zone",
        id.availability_zone.clone(),
    );
    put(
        "meta-data/placement/availability-zone-id",
        id.availability_zone_id(),
    );
    put("meta-data/placement/region", region.clone());
    put("meta-data/services/domain", "amazonaws.com".into());
    put("meta-data/services/partition", "aws".into());
    put(&format!("{nic}/device-number"), "0".into());
    put(
        &format!("{nic}/interface-id"),
        "eni-0123456789abcdef0".into(),
    );
    put(&format!("{nic}/local-hostname"), id.local_hostname.clone());
    put(&format!("{nic}/local-ipv4s"), id.local_ipv4.clone());
    put(&format!("{nic}/mac"), mac.clone());
    put(&format!("{nic}/owner-id"), id.account_id.clone());
    put(
        &format!("{nic}/security-group-ids"),
        "sg-0123456789abcdef0".into(),
    );
    put(&format!("{nic}/security-groups"), "default".into());
    put(
        &format!("{nic}/subnet-id"),
        "subnet-0123456789abcdef0".into(),
    );
    put(&format!("{nic}/vpc-id"), "vpc-0123456789abcdef0".into());
    put(
        "dynamic/instance-identity/document",
        serde_json::to_string_pretty(&json!({
            "accountId": id.account_id,
            "architecture": "x86_64",
            "availabilityZone": id.availability_zone,
            "billingProducts": null,
            "devpayProductCodes": null,
            "marketplaceProductCodes": null,
            "imageId": id.ami_id,
            "instanceId": id.instance_id,
            "instanceType": id.instance_type,
            "kernelId": null,
            "pendingTime": id.pending_time,
            "privateIp": id.local_ipv4,
            "ramdiskId": null,
            "region": region,
            "version": "2017-09-30",
        }))
        .unwrap_or_default(),
    );
    l
}

/// What a path below a version root resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    Leaf(String),
    Listing(String),
    NotFound,
}

/// Resolves `rel` (no leading `/`) against the static and the current dynamic leaves. A trailing
/// `/` on a leaf is tolerated, as EC2 does (botocore asks for `placement/availability-zone/`).
pub fn resolve(rel: &str, fixed: &Leaves, dynamic: &Leaves) -> Resolved {
    let key = rel.trim_end_matches('/');
    if let Some(v) = dynamic.get(key).or_else(|| fixed.get(key)) {
        return Resolved::Leaf(v.clone());
    }
    let prefix = if key.is_empty() {
        String::new()
    } else {
        format!("{key}/")
    };
    let mut children: Vec<String> = Vec::new();
    for k in fixed
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .chain(
            dynamic
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix)),
        )
        .map(|(k, _)| k)
    {
        let rest = &k[prefix.len()..];
        let child = match rest.split_once('/') {
            Some((dir, _)) => format!("{dir}/"),
            None => rest.to_owned(),
        };
        if !children.contains(&child) {
            children.push(child);
        }
    }
    if children.is_empty() {
        return Resolved::NotFound;
    }
    children.sort();
    Resolved::Listing(children.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(pairs: &[(&str, &str)]) -> Leaves {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn listing_shows_children_once_with_directories_marked() {
        let fixed = leaves(&[
            ("meta-data/instance-id", "i-1"),
            ("meta-data/placement/availability-zone", "us-east-1a"),
            ("meta-data/placement/region", "us-east-1"),
        ]);
        let dynamic = leaves(&[("meta-data/spot/instance-action", "{}")]);
        assert_eq!(
            resolve("meta-data/", &fixed, &dynamic),
            Resolved::Listing("instance-id\nplacement/\nspot/".into())
        );
        assert_eq!(
            resolve("meta-data", &fixed, &dynamic),
            Resolved::Listing("instance-id\nplacement/\nspot/".into())
        );
        assert_eq!(
            resolve("meta-data/placement", &fixed, &dynamic),
            Resolved::Listing("availability-zone\nregion".into())
        );
        assert_eq!(
            resolve("", &fixed, &dynamic),
            Resolved::Listing("meta-data/".into())
        );
    }

    #[test]
    fn leaf_with_trailing_slash_is_the_leaf_and_absent_is_not_found() {
        let fixed = leaves(&[("meta-data/placement/availability-zone", "us-east-1a")]);
        let none = Leaves::new();
        assert_eq!(
            resolve("meta-data/placement/availability-zone/", &fixed, &none),
            Resolved::Leaf("us-east-1a".into())
        );
        assert_eq!(
            resolve("meta-data/spot/instance-action", &fixed, &none),
            Resolved::NotFound
        );
        // A prefix of a name is not a directory.
        assert_eq!(
            resolve("meta-data/place", &fixed, &none),
            Resolved::NotFound
        );
    }

    #[test]
    fn identity_document_matches_identity_items() {
        let id = Identity::default();
        let l = identity_leaves(&id);
        let doc: serde_json::Value =
            serde_json::from_str(&l["dynamic/instance-identity/document"]).unwrap();
        assert_eq!(doc["instanceId"], id.instance_id.as_str());
        assert_eq!(doc["region"], "us-east-1");
        assert_eq!(l["meta-data/placement/region"], "us-east-1");
        assert!(doc["kernelId"].is_null());
    }
}
