//! Values we write where the API server accepts only a label value (taint values, label
//! values): at most 63 characters of `[A-Za-z0-9._-]`, starting and ending with an
//! alphanumeric, or empty. A notice id comes from the outside (an Azure EventId, an unknown
//! GCE maintenance value, an EC2 event id) and may be anything: written verbatim, a real API
//! server refuses the whole fence.

/// The longest label value the API server accepts.
pub const MAX_LEN: usize = 63;

/// Whether the API server accepts `s` as a label (or taint) value.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    s.is_empty()
        || (b.len() <= MAX_LEN
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

/// `id` as a label value: unchanged when it already is one; otherwise its allowed characters
/// (others become `-`), trimmed to fit, followed by `-` and eight hex digits of a hash of the
/// whole id, so two ids that differ only in what was cut stay two values. The same id always
/// gives the same value (the hash is FNV-1a, fixed across builds and releases).
pub fn label_value(id: &str) -> String {
    if is_label_value(id) {
        return id.to_owned();
    }
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let hash = format!("{:08x}", fnv1a(id.as_bytes()));
    let keep = MAX_LEN - hash.len() - 1;
    let mut head: String = cleaned.chars().take(keep).collect();
    while head.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        head.pop();
    }
    let head = head.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_are_kept_as_they_are() {
        for id in [
            "i-0abc-spot-2026-12-06T03-20-00Z",
            "instance-event-1",
            "602d9444-d2cd-49c7-8624-8643e7171297",
            "a",
        ] {
            assert_eq!(label_value(id), id);
        }
    }

    #[test]
    fn what_the_api_server_refuses_is_made_to_fit_and_stays_distinct() {
        let long = "x".repeat(81);
        let v = label_value(&long);
        assert!(is_label_value(&v) && v.len() == MAX_LEN, "{v}");
        assert_ne!(v, label_value(&"x".repeat(82)));
        let odd = label_value("MIGRATE_ON_HOST_MAINTENANCE:weird/value with spaces");
        assert!(is_label_value(&odd), "{odd}");
        assert!(odd.starts_with("MIGRATE_ON_HOST_MAINTENANCE-weird-value-with-spaces-"));
        assert!(is_label_value(&label_value("--")));
        assert!(is_label_value(&label_value("")));
        assert!(is_label_value(&label_value("é")));
        assert_eq!(label_value("a b"), label_value("a b"), "stable");
    }

    #[test]
    fn the_rules_are_the_api_servers() {
        assert!(is_label_value(""));
        assert!(is_label_value(&"a".repeat(63)));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(!is_label_value("-a"));
        assert!(!is_label_value("a."));
        assert!(!is_label_value("a:b"));
        assert!(!is_label_value("a b"));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_id_becomes_a_value_the_api_server_accepts(id in ".{0,200}") {
            let v = super::label_value(&id);
            prop_assert!(super::is_label_value(&v), "{:?} -> {:?}", id, v);
            prop_assert_eq!(v, super::label_value(&id));
        }
    }
}
