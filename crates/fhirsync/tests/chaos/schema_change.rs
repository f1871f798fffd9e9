//! Schema and configuration change: tables written with one encoding, then synced with
//! another (extensions turned on, a deeper or shallower nesting level), and a table written
//! by today's encoding (a checked-in fixture) merged by this version. Either the tables are
//! migrated (every row as a fresh sync with the new settings writes it) or the sync refuses
//! with one clear line and leaves them as they were; never old and new rows silently mixed.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fhirsync::run::RunKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::tally;
use crate::world::{self, TYPES, World};
use crate::{Outcome, TALLY, check, cli};

/// A change of the encoding between two syncs of one path.
#[derive(Clone, Copy, Debug)]
enum Change {
    ExtensionsOn,
    ExtensionsOff,
    Nesting(usize),
}

impl Change {
    fn flags(self) -> Vec<String> {
        match self {
            Change::ExtensionsOn => vec!["--extensions".into()],
            Change::ExtensionsOff => vec!["--extensions=false".into()],
            Change::Nesting(n) => vec!["--max-nesting-level".into(), n.to_string()],
        }
    }

    /// The words a refusal must use to say what changed.
    fn names(self) -> &'static [&'static str] {
        match self {
            Change::ExtensionsOn | Change::ExtensionsOff => &["extension"],
            Change::Nesting(_) => &["nesting", "nested"],
        }
    }
}

/// `extensions`: the change turns extensions on (or off); else the nesting level changes.
pub async fn run(seed: u64, extensions: bool) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5c4e);
    let mut world = World::new(seed, |c| c.polls_before_complete = 0).await?;
    let change = match (extensions, rng.random_range(0..2)) {
        (true, 0) => Change::ExtensionsOn,
        (true, _) => {
            world.extensions = true;
            Change::ExtensionsOff
        }
        (false, 0) => Change::Nesting(rng.random_range(4..=5)),
        (false, _) => Change::Nesting(rng.random_range(1..=2)),
    };
    let delta = world.path("evolving");
    let path = delta.display().to_string();
    let endpoint = world.server.base_url();
    let before_flags: Vec<&str> = if world.extensions {
        vec!["--extensions"]
    } else {
        vec![]
    };

    world.next_round().await?;
    cli::run_ok(
        cli::sync(&endpoint, &delta, &before_flags),
        "the first sync",
    )
    .await?;
    check::same_as(&path, world.last(), &TALLY, "the first sync").await?;

    // The server changes; a fresh sync with the new settings is what migrated tables hold.
    world.next_round().await?;
    let fresh = world.path("fresh");
    let mut opts = world.options(&fresh);
    match change {
        Change::ExtensionsOn => opts.extensions = true,
        Change::ExtensionsOff => opts.extensions = false,
        Change::Nesting(n) => opts.max_nesting_level = n,
    }
    world::run(&opts, RunKind::Incremental)
        .await
        .context("a fresh sync with the new settings")?;
    let migrated = check::contents(&fresh.display().to_string(), &TYPES, &TALLY).await?;

    let flags = change.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    TALLY.fault(
        format!("config: {change:?}")
            .split('(')
            .next()
            .unwrap_or("config")
            .to_string(),
    );
    TALLY.add("sync runs", 1);
    let exit = cli::run(cli::sync(&endpoint, &delta, &flags)).await?;
    let context = format!("{change:?} on a table written before");
    cli::judge(&exit, &context)?;
    if exit.success() {
        let actual = check::contents(&path, &TYPES, &TALLY).await?;
        for t in TYPES {
            if actual[t] != migrated[t] {
                let (lost, diff) = check::difference(&migrated[t], &actual[t]);
                let old_rows = actual[t]
                    .values()
                    .filter(|r| world.rounds[0].contents[t].values().any(|o| o == *r))
                    .count();
                TALLY.add(tally::MIXED, 1);
                TALLY.add(tally::LOST, lost.min(old_rows as u64));
                bail!(
                    "{t} was synced with {change:?} but is not what a fresh sync with it writes: \
                     {diff}; {old_rows} rows still as the first sync wrote them ({context})"
                );
            }
        }
        TALLY.add("config changes migrated", 1);
    } else {
        // Refused: the tables are as the first sync left them, and the message says why.
        let cursor_ok = world.consistent(&delta, &context).await;
        check::same_as(&path, &world.rounds[0].contents, &TALLY, &context).await?;
        cursor_ok?;
        let error = exit.error();
        let lower = error.to_ascii_lowercase();
        if !change.names().iter().any(|n| lower.contains(n)) || error.len() > 1000 {
            TALLY.add(tally::UNCLEAR_ERRORS, 1);
            let shown: String = error.chars().take(300).collect();
            bail!(
                "the refusal ({} characters) does not say that the {} setting changed \
                 ({context}): {shown}...",
                error.len(),
                change.names()[0]
            );
        }
        TALLY.add("config changes refused", 1);
    }
    world.server.shutdown().await;
    Ok(Outcome::Passed)
}

/// The fixture: `tests/chaos/fixtures/encoding-1` holds the NDJSON of a few resources and
/// the tables today's encoding made of them (with extensions, nesting level 3).
fn fixture() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/chaos/fixtures/encoding-1")
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

/// `fhirsync import` of `input` into `delta` with the fixture's settings (and `extra`).
fn import(input: &Path, delta: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = cli::fhirsync(&["import", "--extensions"]);
    cmd.arg("--input")
        .arg(input)
        .arg("--delta-path")
        .arg(delta)
        .args(extra);
    cmd
}

/// A table written by today's encoding, merged with changed resources by this version:
/// the result equals a fresh import of the same resources, or the import refuses with one
/// clear line and leaves the fixture as it was.
pub async fn run_fixture(seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xf1c5);
    let dir = tempfile::tempdir()?;
    let delta = dir.path().join("delta");
    copy_dir(&fixture().join("tables"), &delta)?;
    let path = delta.display().to_string();
    let types = ["Patient", "Observation"];
    let before = check::contents(&path, &types, &TALLY).await?;
    // A seeded set of the fixture's second input: some of its changed resources.
    let changes = std::fs::read_to_string(fixture().join("changes.ndjson"))?;
    let lines: Vec<&str> = changes.lines().filter(|_| rng.random_bool(0.7)).collect();
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input)?;
    std::fs::write(input.join("changes.ndjson"), lines.join("\n") + "\n")?;

    // What a fresh import of the same resources writes.
    let fresh = dir.path().join("fresh");
    cli::run_ok(
        import(&fixture().join("input"), &fresh, &[]),
        "a fresh import of the fixture's input",
    )
    .await?;
    cli::run_ok(import(&input, &fresh, &[]), "a fresh import of the changes").await?;
    let expected = check::contents(&fresh.display().to_string(), &types, &TALLY).await?;

    TALLY.add("sync runs", 1);
    let exit = cli::run(import(&input, &delta, &[])).await?;
    cli::judge(&exit, "the import into the fixture")?;
    if exit.success() {
        check::same_as(
            &path,
            &expected,
            &TALLY,
            "the fixture merged by this version",
        )
        .await?;
        TALLY.add("fixture tables merged", 1);
    } else {
        check::same_as(&path, &before, &TALLY, "the fixture after a refused import").await?;
        TALLY.add("fixture tables refused", 1);
    }
    Ok(Outcome::Passed)
}
