//! The configuration reference (docs/configuration.md), generated from the command-line
//! definitions so it never drifts: every subcommand's flags with their environment variables,
//! defaults and help. The rehearsal binary's test writes the whole file (both binaries) with
//! `SIH_UPDATE_DOCS=1` and checks it otherwise. Linked only where it is called: the agent's
//! binary never calls it.

/// One binary's section: its global flags, then every subcommand's.
pub fn section(root: &clap::Command, name: &str) -> String {
    let mut out = format!("\n## `{name}`: flags of every command\n");
    table(&mut out, root);
    walk(&mut out, root, name);
    out
}

/// Flags (not positional arguments) that read no environment variable, as `path --flag`.
pub fn flags_without_env(cmd: &clap::Command, path: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        // Positional arguments (NODE) are not flags.
        if id == "help" || id == "version" || arg.is_positional() {
            continue;
        }
        if arg.get_env().is_none() {
            missing.push(format!("{path} --{id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        missing.extend(flags_without_env(
            sub,
            &format!("{path} {}", sub.get_name()),
        ));
    }
    missing
}

fn table(out: &mut String, cmd: &clap::Command) {
    out.push_str("\n| flag | environment | default | meaning |\n|---|---|---|---|\n");
    for a in cmd.get_arguments() {
        let id = a.get_id().as_str();
        if a.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        let flag = match a.get_long() {
            Some(l) => format!("`--{l}`"),
            None => format!("`{}` (argument)", id.to_uppercase()),
        };
        let env = a
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let default: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| !v.is_empty())
            .collect();
        let default = if default.is_empty() {
            String::new()
        } else {
            format!("`{}`", default.join(","))
        };
        let mut help = a
            .get_long_help()
            .or(a.get_help())
            .map(|h| h.to_string().replace('\n', " "))
            .unwrap_or_default();
        let values: Vec<String> = a
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !values.is_empty()
            && a.get_action().takes_values()
            && !matches!(
                id,
                "tls"
                    | "dry_run"
                    | "cordon_only"
                    | "out_of_service_taint"
                    | "json"
                    | "keep_running"
            )
        {
            let sep = if help.is_empty() { "" } else { ". " };
            help.push_str(&format!("{sep}One of {}.", values.join(", ")));
        }
        out.push_str(&format!(
            "| {flag} | {env} | {default} | {} |\n",
            help.replace('|', "\\|")
        ));
    }
}
fn walk(out: &mut String, cmd: &clap::Command, path: &str) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let name = format!("{path} {}", sub.get_name());
        if sub.has_subcommands() {
            walk(out, sub, &name);
            continue;
        }
        out.push_str(&format!("\n## `{name}`\n\n"));
        if let Some(about) = sub.get_about() {
            out.push_str(&format!("{about}\n"));
        }
        table(out, sub);
    }
}
