//! `docs/cli.md` against the built binary's `--help`: every subcommand and every flag that
//! `--help` shows is in the document's table for that subcommand, and nothing else is.
//! (The unit test `cli_doc` compares the whole file with the flag definitions and rewrites it.)
use std::collections::BTreeSet;
use std::process::Command;

const REGENERATE: &str = "FHIRSYNC_UPDATE_CLI_DOC=1 cargo test -p fhirsync --bin fhirsync cli_doc";

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fhirsync"))
        .args(args)
        .arg("--help")
        .env_remove("FHIRSYNC_LOG")
        .env_remove("FHIRSYNC_LOG_FORMAT")
        .output()
        .expect("cannot run fhirsync");
    assert!(out.status.success(), "fhirsync {args:?} --help failed");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands `fhirsync --help` lists.
fn subcommands(top: &str) -> Vec<String> {
    top.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The long flags a help text lists (`      --name <V>`, `  -h, --help`), without help/version.
fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        // Flags stand at most 6 columns in; their descriptions further.
        .filter(|l| l.len() - l.trim_start().len() <= 6)
        .map(str::trim_start)
        .filter_map(|l| {
            l.strip_prefix("--")
                .or_else(|| l.split_once(", --").map(|(_, r)| r))
        })
        .filter_map(|rest| {
            let end = rest.find([' ', '[', '<', '=']).unwrap_or(rest.len());
            let name = &rest[..end];
            (name != "help" && name != "version").then(|| format!("--{name}"))
        })
        .collect()
}

/// The first-column flags of the table under `heading` in the document.
fn doc_flags(doc: &str, heading: &str) -> Option<BTreeSet<String>> {
    let section = doc.split("\n## ").find(|s| s.starts_with(heading))?;
    Some(
        section
            .lines()
            .filter(|l| l.starts_with("| `--"))
            .flat_map(|l| {
                let first = l.split(" | ").next().unwrap_or_default();
                first
                    .trim_start_matches("| ")
                    .split(", ")
                    .take(1)
                    .map(|f| f.trim_matches('`').to_owned())
                    .collect::<Vec<_>>()
            })
            .collect(),
    )
}

#[test]
fn docs_cli_md_has_every_flag_of_every_subcommands_help() {
    let doc_path = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../docs/cli.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/cli.md is missing");
    let globals = doc_flags(&doc, "Global options").expect("no Global options section");
    assert!(globals.contains("--log-level"), "{globals:?}");

    let top = help(&[]);
    let subs = subcommands(&top);
    assert!(subs.len() >= 11, "subcommands in --help: {subs:?}");
    let mut problems = Vec::new();
    for sub in &subs {
        let shown = help_flags(&help(&[sub]));
        let Some(documented) = doc_flags(&doc, &format!("`fhirsync {sub}`")) else {
            problems.push(format!("no section for `fhirsync {sub}`"));
            continue;
        };
        for flag in shown.difference(&documented) {
            if !globals.contains(flag) {
                problems.push(format!(
                    "`fhirsync {sub} {flag}` is in --help, not in the doc"
                ));
            }
        }
        for flag in documented.difference(&shown) {
            problems.push(format!(
                "`fhirsync {sub} {flag}` is in the doc, not in --help"
            ));
        }
    }
    let sections = doc.matches("\n## `fhirsync ").count();
    if sections != subs.len() {
        problems.push(format!(
            "{sections} subcommand sections for {} subcommands",
            subs.len()
        ));
    }
    assert!(
        problems.is_empty(),
        "docs/cli.md and --help disagree:\n{}\nRegenerate the file with: {REGENERATE}",
        problems.join("\n")
    );
}
