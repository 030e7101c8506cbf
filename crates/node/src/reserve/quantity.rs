//! Kubernetes resource quantities as the scheduler adds them, for a placeholder's requests: a
//! pod asks for the sum of its containers' requests, or the largest of its init containers'
//! if that is more (its runtime's overhead comes with its RuntimeClass, which the placeholder
//! keeps, so admission adds it again). Exact in thousandths (`100m` is 100), which
//! is the finest unit the scheduler counts CPU in; finer values round up.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity in thousandths of its unit.
pub type Milli = i128;

/// `s` in thousandths of its unit, or why it is no quantity. `1.5Gi` is 1.5 × 2³⁰ × 1000.
pub fn parse(s: &str) -> Result<Milli, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a Kubernetes quantity");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
        || whole.len() + fraction.len() > 30
    {
        return Err(bad());
    }
    // The number as an integer over 10^scale.
    let mut value: i128 = format!("{whole}{fraction}").parse().map_err(|_| bad())?;
    let mut scale = fraction.len() as i32;
    // Thousandths of the unit.
    scale -= 3;
    let (base, power): (i128, i32) = match suffix {
        "" => (10, 0),
        "n" => (10, -9),
        "u" => (10, -6),
        "m" => (10, -3),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        "Ki" => (2, 10),
        "Mi" => (2, 20),
        "Gi" => (2, 30),
        "Ti" => (2, 40),
        "Pi" => (2, 50),
        "Ei" => (2, 60),
        e if e.starts_with(['e', 'E']) => (10, e[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    if !(-30..=30).contains(&power) {
        return Err(bad());
    }
    if base == 2 {
        value = value.checked_mul(1i128 << power).ok_or_else(bad)?;
    } else {
        scale -= power;
    }
    let ten = |n: i32| 10i128.checked_pow(n as u32).ok_or_else(bad);
    let milli = if scale <= 0 {
        value.checked_mul(ten(-scale)?).ok_or_else(bad)?
    } else {
        // Finer than a thousandth: round up, as a request must not come out smaller.
        let d = ten(scale)?;
        (value + d - 1) / d
    };
    Ok(if negative { -milli } else { milli })
}

/// Thousandths back to a quantity: whole units when exact, else `m`.
pub fn format(milli: Milli) -> Quantity {
    if milli % 1000 == 0 {
        Quantity((milli / 1000).to_string())
    } else {
        Quantity(format!("{milli}m"))
    }
}

/// What a pod's containers ask of a node, by resource: the sum of `containers`, or the
/// largest of `init` where that is more (they run one at a time, before the others). An
/// unreadable quantity is named in the error.
pub fn effective(
    containers: &[BTreeMap<String, Quantity>],
    init: &[BTreeMap<String, Quantity>],
) -> Result<BTreeMap<String, Quantity>, String> {
    let mut sum: BTreeMap<String, Milli> = BTreeMap::new();
    for r in containers {
        for (name, q) in r {
            *sum.entry(name.clone()).or_default() += parse(&q.0)?;
        }
    }
    for r in init {
        for (name, q) in r {
            let v = parse(&q.0)?;
            let e = sum.entry(name.clone()).or_default();
            *e = (*e).max(v);
        }
    }
    Ok(sum
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| (k, format(v)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    #[test]
    fn quantities_read_as_the_api_server_writes_them() {
        assert_eq!(parse("100m"), Ok(100));
        assert_eq!(parse("1"), Ok(1000));
        assert_eq!(parse("0.5"), Ok(500));
        assert_eq!(parse("1.5"), Ok(1500));
        assert_eq!(parse("2k"), Ok(2_000_000));
        assert_eq!(parse("1Ki"), Ok(1_024_000));
        assert_eq!(parse("1.5Gi"), Ok(1_610_612_736_000));
        assert_eq!(parse("128974848"), Ok(128_974_848_000));
        assert_eq!(parse("129e6"), Ok(129_000_000_000));
        assert_eq!(parse("123Mi"), Ok(123 * 1_048_576 * 1000));
        // Finer than a thousandth rounds up.
        assert_eq!(parse("1n"), Ok(1));
        assert_eq!(parse("1500u"), Ok(2));
        assert_eq!(parse("-1"), Ok(-1000));
        for bad in ["", "m", "1.2.3", "1Q", "abc", "1e", "1e99", "1 Gi", "."] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn thousandths_come_back_as_short_quantities() {
        assert_eq!(format(1500).0, "1500m");
        assert_eq!(format(2000).0, "2");
        assert_eq!(format(250).0, "250m");
    }

    #[test]
    fn a_pod_asks_the_sum_of_its_containers_or_its_largest_init_container() {
        let c1 = BTreeMap::from([("cpu".into(), q("250m")), ("memory".into(), q("64Mi"))]);
        let c2 = BTreeMap::from([("cpu".into(), q("0.5")), ("nvidia.com/gpu".into(), q("1"))]);
        let init = BTreeMap::from([("cpu".into(), q("2")), ("memory".into(), q("32Mi"))]);
        let got = effective(&[c1, c2], &[init]).unwrap();
        assert_eq!(
            got["cpu"].0, "2",
            "the init container's 2 CPUs, more than 750m"
        );
        assert_eq!(
            got["memory"].0, "67108864",
            "64Mi: more than the init's 32Mi"
        );
        assert_eq!(got["nvidia.com/gpu"].0, "1");
        assert!(effective(&[], &[]).unwrap().is_empty());
        let broken = BTreeMap::from([("cpu".into(), q("lots"))]);
        assert!(effective(&[broken], &[]).unwrap_err().contains("lots"));
    }
}
