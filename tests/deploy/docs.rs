//! What the docs say that comes from the code stays what the code says: names of our
//! annotations and labels, the soak's CI size, the agent's resources. (Each of these had
//! drifted: `spot-interrupt-handler.io/notices` for `spot-interrupt-handler/notice`, 200
//! scenarios for 240, 24/48 Mi for 16/32 Mi.)

use crate::{ROOT, manifest};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap()
}

/// Every file of the docs a user reads.
fn docs() -> Vec<(String, String)> {
    let mut out = vec![("README.md".to_owned(), read("README.md"))];
    for e in std::fs::read_dir(format!("{ROOT}/docs")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "md") {
            let name = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
            out.push((name.clone(), read(&name)));
        }
    }
    out
}

/// Every source file the product, the chart and the manifests are made of.
fn sources() -> String {
    fn walk(dir: &std::path::Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|x| x == "rs" || x == "yaml" || x == "tpl" || x == "txt")
            {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut all = String::new();
    for d in ["src", "crates", "deploy"] {
        walk(std::path::Path::new(&format!("{ROOT}/{d}")), &mut all);
    }
    all
}

#[test]
fn every_annotation_or_label_of_ours_the_docs_name_is_one_the_code_writes() {
    let code = sources();
    let mut named = 0;
    for (file, text) in docs() {
        for quoted in text.split('`').skip(1).step_by(2) {
            let key = quoted.split(['=', ':', ' ', '"']).next().unwrap();
            let ours = key.starts_with("spot-interrupt-handler/")
                || key.starts_with("spot-interrupt-handler.io/");
            if !ours || key.ends_with('/') || key.contains(['*', '<', '{']) {
                continue;
            }
            named += 1;
            assert!(
                code.contains(&format!("\"{key}")) || code.contains(&format!("{key}:")),
                "{file} names `{key}`, which no source writes"
            );
        }
    }
    assert!(named > 5, "the docs name {named} of our keys");
}

#[test]
fn the_readme_gives_the_soaks_ci_size_the_code_runs() {
    let main = read("tests/soak/main.rs");
    let size: u32 = main
        .split("env_num(\"SIH_SOAK_SCENARIOS\", ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("the soak's default size");
    let readme = read("README.md");
    assert!(
        readme.contains(&format!("{size} random scenarios")),
        "the README says another CI size than {size}"
    );
}

#[test]
fn the_benchmarks_give_the_agents_resources_the_manifest_sets() {
    let m = std::fs::read_to_string(manifest("spot-interrupt-handler.yaml")).unwrap();
    let mi = |key: &str| -> String {
        let line = m
            .lines()
            .find(|l| l.trim_start().starts_with(key) && l.contains("memory"))
            .unwrap_or_else(|| panic!("{key} in the manifest"));
        line.split("memory: ")
            .nth(1)
            .unwrap()
            .trim_end_matches(['}', ' '])
            .trim_end_matches("Mi")
            .to_owned()
    };
    let (request, limit) = (mi("requests:"), mi("limits:"));
    let bench = read("docs/benchmarks.md");
    assert!(
        bench.contains(&format!("request ({request} Mi) and limit ({limit} Mi)")),
        "docs/benchmarks.md gives the DaemonSet another request or limit than {request}/{limit} Mi"
    );
}
