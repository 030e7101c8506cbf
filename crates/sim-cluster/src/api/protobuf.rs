//! Just enough of Kubernetes' protobuf encoding to read the requests kubectl's typed clients
//! insist on sending that way: a SelfSubjectAccessReview (`kubectl auth can-i`), a
//! ServiceAccount (`kubectl create serviceaccount`) and a TokenRequest (`kubectl create
//! token`). Answers go back as JSON, which client-go accepts by their Content-Type. Everything
//! else the simulator reads is JSON or YAML.

use serde_json::{Map, Value, json};

/// `k8s\0`: the envelope's magic prefix.
const MAGIC: &[u8] = b"k8s\0";

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// The top-level fields of one message, or `None` if it is not valid protobuf.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|&e| e <= buf.len())?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            1 => {
                pos = pos.checked_add(8).filter(|&e| e <= buf.len())?;
                continue;
            }
            5 => {
                pos = pos.checked_add(4).filter(|&e| e <= buf.len())?;
                continue;
            }
            _ => return None,
        };
        out.push((number, f));
    }
    Some(out)
}

/// Every length-delimited field numbered `n` (a repeated field has several).
fn messages<'a>(fs: &[(u64, Field<'a>)], n: u64) -> impl Iterator<Item = &'a [u8]> {
    fs.iter().filter_map(move |(k, f)| match f {
        Field::Bytes(b) if *k == n => Some(*b),
        _ => None,
    })
}

fn sub<'a>(fs: &[(u64, Field<'a>)], n: u64) -> Option<&'a [u8]> {
    messages(fs, n).next()
}

/// Every string field numbered `n`.
fn texts(fs: &[(u64, Field<'_>)], n: u64) -> Vec<String> {
    messages(fs, n)
        .filter_map(|b| std::str::from_utf8(b).ok().map(str::to_owned))
        .collect()
}

fn text(fs: &[(u64, Field<'_>)], n: u64) -> Option<String> {
    sub(fs, n).and_then(|b| std::str::from_utf8(b).ok().map(str::to_owned))
}

fn number(fs: &[(u64, Field<'_>)], n: u64) -> Option<u64> {
    fs.iter().find_map(|(k, f)| match (k, f) {
        (k, Field::Varint(v)) if *k == n => Some(*v),
        _ => None,
    })
}

/// The object inside the `k8s\0` envelope (`runtime.Unknown`, field 2 `raw`).
fn unwrap(body: &[u8]) -> Option<&[u8]> {
    sub(&fields(body.strip_prefix(MAGIC)?)?, 2)
}

/// ObjectMeta's name (1), generateName (2), namespace (3), labels (11), annotations (12).
fn object_meta(buf: &[u8]) -> Option<Value> {
    let fs = fields(buf)?;
    let mut m = Map::new();
    for (n, key) in [(1, "name"), (2, "generateName"), (3, "namespace")] {
        if let Some(v) = text(&fs, n).filter(|v| !v.is_empty()) {
            m.insert(key.to_owned(), json!(v));
        }
    }
    for (n, key) in [(11, "labels"), (12, "annotations")] {
        let mut map = Map::new();
        for (k, f) in &fs {
            if let (true, Field::Bytes(entry)) = (*k == n, f) {
                let e = fields(entry)?;
                map.insert(text(&e, 1)?, json!(text(&e, 2).unwrap_or_default()));
            }
        }
        if !map.is_empty() {
            m.insert(key.to_owned(), Value::Object(map));
        }
    }
    Some(Value::Object(m))
}

/// A protobuf-encoded ServiceAccount as its JSON form (its metadata; the rest is optional).
pub fn service_account(body: &[u8]) -> Option<Value> {
    let sa = fields(unwrap(body)?)?;
    Some(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": object_meta(sub(&sa, 1).unwrap_or_default())?}))
}

/// A protobuf-encoded Role or ClusterRole (`kubectl create clusterrole`): PolicyRules of
/// verbs (1), apiGroups (2), resources (3), resourceNames (4), nonResourceURLs (5).
pub fn role(body: &[u8], kind: &str) -> Option<Value> {
    let role = fields(unwrap(body)?)?;
    let mut rules = Vec::new();
    for r in messages(&role, 2) {
        let r = fields(r)?;
        let mut rule = Map::new();
        for (n, key) in [
            (1, "verbs"),
            (2, "apiGroups"),
            (3, "resources"),
            (4, "resourceNames"),
            (5, "nonResourceURLs"),
        ] {
            let v = texts(&r, n);
            if !v.is_empty() {
                rule.insert(key.to_owned(), json!(v));
            }
        }
        rules.push(Value::Object(rule));
    }
    Some(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": object_meta(sub(&role, 1).unwrap_or_default())?, "rules": rules}),
    )
}

/// A protobuf-encoded RoleBinding or ClusterRoleBinding: subjects (2: kind 1, apiGroup 2,
/// name 3, namespace 4) and roleRef (3: apiGroup 1, kind 2, name 3).
pub fn binding(body: &[u8], kind: &str) -> Option<Value> {
    let b = fields(unwrap(body)?)?;
    let mut subjects = Vec::new();
    for s in messages(&b, 2) {
        let s = fields(s)?;
        let mut m = Map::new();
        for (n, key) in [(1, "kind"), (2, "apiGroup"), (3, "name"), (4, "namespace")] {
            if let Some(v) = text(&s, n).filter(|v| !v.is_empty()) {
                m.insert(key.to_owned(), json!(v));
            }
        }
        subjects.push(Value::Object(m));
    }
    let r = fields(sub(&b, 3)?)?;
    Some(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": object_meta(sub(&b, 1).unwrap_or_default())?, "subjects": subjects,
        "roleRef": {"apiGroup": text(&r, 1).unwrap_or_default(), "kind": text(&r, 2)?, "name": text(&r, 3)?}}),
    )
}

/// A protobuf-encoded TokenRequest: spec audiences (1) and expirationSeconds (4).
pub fn token_request(body: &[u8]) -> Option<Value> {
    let tr = fields(unwrap(body)?)?;
    let spec = fields(sub(&tr, 2).unwrap_or_default())?;
    let audiences = texts(&spec, 1);
    let mut out = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audiences}});
    if let Some(s) = number(&spec, 4) {
        out["spec"]["expirationSeconds"] = json!(s);
    }
    Some(out)
}

/// A protobuf-encoded SelfSubjectAccessReview as its JSON form.
pub fn self_subject_access_review(body: &[u8]) -> Option<Value> {
    let review = fields(unwrap(body)?)?;
    let spec = fields(sub(&review, 2).unwrap_or_default())?;
    let mut out = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}});
    if let Some(ra) = sub(&spec, 1) {
        let ra = fields(ra)?;
        let mut m = Map::new();
        let names = [
            "namespace",
            "verb",
            "group",
            "version",
            "resource",
            "subresource",
            "name",
        ];
        for (i, key) in names.iter().enumerate() {
            if let Some(v) = text(&ra, i as u64 + 1) {
                m.insert((*key).to_owned(), json!(v));
            }
        }
        out["spec"]["resourceAttributes"] = Value::Object(m);
    }
    if let Some(nra) = sub(&spec, 2) {
        let nra = fields(nra)?;
        out["spec"]["nonResourceAttributes"] = json!({"path": text(&nra, 1).unwrap_or_default(), "verb": text(&nra, 2).unwrap_or_default()});
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn reads_what_kubectl_auth_can_i_sends() {
        let ra = [
            field(1, b"default"),
            field(2, b"create"),
            field(5, b"pods"),
            field(6, b"eviction"),
        ]
        .concat();
        let spec = field(1, &ra);
        let review = [field(1, &[]), field(2, &spec)].concat();
        let type_meta = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let envelope = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &review)].concat();
        let v = self_subject_access_review(&envelope).unwrap();
        assert_eq!(
            v["spec"]["resourceAttributes"],
            json!({"namespace": "default", "verb": "create", "resource": "pods", "subresource": "eviction"})
        );
    }

    #[test]
    fn reads_service_accounts_and_token_requests() {
        let label = [field(1, b"app"), field(2, b"sih")].concat();
        let meta = [
            field(1, b"sih"),
            field(3, b"kube-system"),
            field(11, &label),
        ]
        .concat();
        let envelope = [b"k8s\0".to_vec(), field(2, &field(1, &meta))].concat();
        assert_eq!(
            service_account(&envelope).unwrap()["metadata"],
            json!({"name": "sih", "namespace": "kube-system", "labels": {"app": "sih"}})
        );
        let spec = [field(1, b"api"), vec![4 << 3, 0xac, 0x02]].concat();
        let envelope = [b"k8s\0".to_vec(), field(2, &field(2, &spec))].concat();
        assert_eq!(
            token_request(&envelope).unwrap()["spec"],
            json!({"audiences": ["api"], "expirationSeconds": 300})
        );
    }

    #[test]
    fn reads_roles_and_bindings() {
        let rule = [
            field(1, b"get"),
            field(1, b"list"),
            field(2, b""),
            field(3, b"pods"),
        ]
        .concat();
        let envelope = [
            b"k8s\0".to_vec(),
            field(2, &[field(1, &field(1, b"r")), field(2, &rule)].concat()),
        ]
        .concat();
        assert_eq!(
            role(&envelope, "ClusterRole").unwrap()["rules"],
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}])
        );
        let subject = [
            field(1, b"ServiceAccount"),
            field(3, b"x"),
            field(4, b"default"),
        ]
        .concat();
        let role_ref = [
            field(1, b"rbac.authorization.k8s.io"),
            field(2, b"ClusterRole"),
            field(3, b"view"),
        ]
        .concat();
        let envelope = [
            b"k8s\0".to_vec(),
            field(
                2,
                &[
                    field(1, &field(1, b"b")),
                    field(2, &subject),
                    field(3, &role_ref),
                ]
                .concat(),
            ),
        ]
        .concat();
        let b = binding(&envelope, "ClusterRoleBinding").unwrap();
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "x", "namespace": "default"}])
        );
        assert_eq!(b["roleRef"]["name"], "view");
    }

    #[test]
    fn garbage_is_refused_not_a_crash() {
        assert!(self_subject_access_review(b"").is_none());
        assert!(self_subject_access_review(b"{\"json\":1}").is_none());
        assert!(self_subject_access_review(b"k8s\0\x12\xff\xff").is_none());
        assert!(self_subject_access_review(b"k8s\0\x12\x05ab").is_none());
        assert!(
            self_subject_access_review(&[
                b'k', b'8', b's', 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff
            ])
            .is_none()
        );
    }
}
