//! `docs/cli.md` rendered from the clap definitions (the ones `--help` prints), the test that
//! keeps the file equal to them, and the test that holds every boolean flag to `--flag[=BOOL]`.
//!
//! After changing a flag: `FHIRSYNC_UPDATE_CLI_DOC=1 cargo test -p fhirsync --bin fhirsync cli_doc`
//! rewrites the file.
use clap::{Arg, ArgAction, Command, CommandFactory};

use crate::Cli;

/// `docs/cli.md`, found at run time: a build shared between checkouts must read this one's.
fn doc_path() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../docs/cli.md")
}
const UPDATE_VAR: &str = "FHIRSYNC_UPDATE_CLI_DOC";

const PREAMBLE: &str = "\
# Command-line reference

<!-- Generated from the flag definitions: after changing a flag, run
     FHIRSYNC_UPDATE_CLI_DOC=1 cargo test -p fhirsync --bin fhirsync cli_doc
     A test fails while this file and `fhirsync <command> --help` disagree. -->

Every subcommand speaks the same vocabulary:

- **Resource types**: `--resource-types Patient Observation` or `--types Patient,Observation`
  (one flag under two names; space- or comma-separated, or repeated).
- **Patients**: `--patient 123 Patient/456` (also `--patients`; space- or comma-separated, or
  repeated).
- **Durations** (`--timeout`, `--max-age`, `--jitter`, ...): `90s`, `30m`, `24h`, `1h 30m`; a bare
  number still means seconds; at most 100 years.
- **Instants** (`--since`, `--until`): RFC 3339 (`2024-01-31T12:00:00Z`) or a date meaning
  midnight UTC (`2024-01-31`).
- **Booleans**: `--flag` means `--flag=true`; `--flag=false` turns a flag off (the `=` is needed).
- **Endpoint**: `FHIR_ENDPOINT` for `sync`, `daemon` and `export`. The old name
  `FHIRSYNC_FHIR_ENDPOINT` is still read, with a warning.
- **Precedence** for `sync` and `daemon`: flag > environment variable > config file (`--config`,
  keys in [operations.md](operations.md)) > default.
";

/// The whole of `docs/cli.md`.
pub fn render(cli: &Command) -> String {
    let mut out = String::from(PREAMBLE);
    let globals: Vec<&Arg> = cli.get_arguments().filter(|a| a.is_global_set()).collect();
    out.push_str("\n## Global options\n\nTaken by every subcommand, before or after its name.\n");
    table(&mut out, &globals);
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push_str(&format!("\n## `fhirsync {}`\n\n", sub.get_name()));
        if let Some(about) = sub.get_about() {
            out.push_str(&format!("{about}\n"));
        }
        let mut args: Vec<&Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && !is_builtin(a))
            .collect();
        // The order of `--help`: positional arguments first, then the flags as declared.
        args.sort_by_key(|a| (!a.is_positional(), a.get_display_order()));
        table(&mut out, &args);
    }
    out
}

fn is_builtin(arg: &Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

fn table(out: &mut String, args: &[&Arg]) {
    out.push_str("\n| flag | value | default | env | meaning |\n| --- | --- | --- | --- | --- |\n");
    for arg in args {
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let (meaning, noted_default) = take_note(&help, "default");
        let (meaning, noted_env) = take_note(&meaning, "env");
        let default = match arg.get_default_values() {
            [] if arg.is_required_set() => "required".to_owned(),
            [] => noted_default.map(|d| prose_or_code(&d)).unwrap_or_default(),
            values => code(&join(values.iter().map(|v| v.to_string_lossy()))),
        };
        // `[env: A (note), B]`: each variable's name as code.
        let env = match arg.get_env() {
            Some(var) => code(&var.to_string_lossy()),
            None => noted_env
                .map(|e| {
                    let vars = e.split(", ").map(|v| match v.split_once(' ') {
                        Some((name, note)) => format!("{} {note}", code(name)),
                        None => code(v),
                    });
                    vars.collect::<Vec<_>>().join(", ")
                })
                .unwrap_or_default(),
        };
        let value = if arg.is_positional() {
            String::new()
        } else {
            value(arg)
        };
        let row = [flag(arg), value, default, env, meaning];
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
}

/// Splits a trailing-style note `[name: text]` off a help text.
fn take_note(help: &str, name: &str) -> (String, Option<String>) {
    let open = format!("[{name}: ");
    let Some(start) = help.find(&open) else {
        return (help.trim().to_owned(), None);
    };
    let rest = &help[start + open.len()..];
    let Some(end) = rest.find(']') else {
        return (help.trim().to_owned(), None);
    };
    let without = format!("{}{}", &help[..start], &rest[end + 1..]);
    (
        without.split_whitespace().collect::<Vec<_>>().join(" "),
        Some(rest[..end].to_owned()),
    )
}

fn flag(arg: &Arg) -> String {
    let Some(long) = arg.get_long() else {
        let name = arg.get_value_names().and_then(|n| n.first());
        return code(&format!(
            "<{}>",
            name.map(|n| n.as_str()).unwrap_or("VALUE")
        ));
    };
    let mut names = vec![code(&format!("--{long}"))];
    for alias in arg.get_visible_aliases().unwrap_or_default() {
        names.push(code(&format!("--{alias}")));
    }
    names.join(", ")
}

fn value(arg: &Arg) -> String {
    if is_optional_value(arg) {
        return code("[=BOOL]");
    }
    let possible = arg.get_possible_values();
    if !possible.is_empty() {
        return join(possible.iter().map(|p| code(p.get_name())));
    }
    let name = arg
        .get_value_names()
        .and_then(|n| n.first())
        .map(|n| n.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    code(&format!("<{name}>{}", if many { "..." } else { "" }))
}

fn is_optional_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.min_values() == 0)
}

/// A value as code, words as they are.
fn prose_or_code(s: &str) -> String {
    if s.contains(' ') {
        s.to_owned()
    } else {
        code(s)
    }
}

fn code(s: &str) -> String {
    format!("`{s}`")
}

fn join(items: impl Iterator<Item = impl AsRef<str>>) -> String {
    items
        .map(|i| i.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The lines only one side has, for the failure message.
fn difference(doc: &str, rendered: &str) -> String {
    let mut out = String::new();
    for line in doc.lines().filter(|l| !rendered.lines().any(|r| r == *l)) {
        out.push_str(&format!("- {line}\n"));
    }
    for line in rendered.lines().filter(|l| !doc.lines().any(|d| d == *l)) {
        out.push_str(&format!("+ {line}\n"));
    }
    out
}

#[test]
fn docs_cli_md_lists_every_flag_as_help_does() {
    let rendered = render(&Cli::command());
    if std::env::var_os(UPDATE_VAR).is_some() {
        std::fs::write(doc_path(), &rendered).expect("cannot write docs/cli.md");
        return;
    }
    let doc = std::fs::read_to_string(doc_path()).unwrap_or_default();
    assert!(
        doc == rendered,
        "docs/cli.md disagrees with the flag definitions (- in the file only, + in the flags \
         only):\n{}\nRegenerate it with: {UPDATE_VAR}=1 cargo test -p fhirsync --bin fhirsync \
         cli_doc",
        difference(&doc, &rendered)
    );
}

#[test]
fn every_boolean_flag_takes_an_optional_value() {
    let mut cli = Cli::command();
    cli.build();
    let mut checked = 0;
    for sub in cli.get_subcommands() {
        for arg in sub.get_arguments().filter(|a| !is_builtin(a)) {
            let id = format!("{} --{}", sub.get_name(), arg.get_id());
            assert!(
                !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse),
                "{id} is a bare switch: use the `--flag[=BOOL]` attribute of config::vocabulary"
            );
            let names: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|p| p.get_name().to_owned())
                .collect();
            if names != ["true", "false"] {
                continue;
            }
            checked += 1;
            assert!(
                is_optional_value(arg),
                "{id}: `--flag` alone must mean true"
            );
            assert!(arg.is_require_equals_set(), "{id}: the value needs `=`");
            let flag = format!("--{}", arg.get_long().unwrap_or_default());
            let alone = sub
                .clone()
                .ignore_errors(true)
                .try_get_matches_from([sub.get_name(), &flag])
                .map(|m| m.get_one::<bool>(arg.get_id().as_str()).copied());
            assert_eq!(
                alone.ok(),
                Some(Some(true)),
                "{id}: `--flag` alone must mean true"
            );
            let value_names = arg.get_value_names().map(|n| n.to_vec());
            assert_eq!(value_names, Some(vec!["BOOL".into()]), "{id}: value name");
        }
    }
    assert!(checked > 20, "only {checked} boolean flags found");
}
