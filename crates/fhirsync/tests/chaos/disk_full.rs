//! A local file system that fills up (ENOSPC): a small tmpfs the test mounts, filled to a
//! seeded number of free bytes, under the delta path, the export's downloads and the
//! temporary directory. A sync that runs out of space fails with one clear line, commits
//! nothing half-way and leaves no staged files; once there is space again the next run
//! converges to the fault-free tables. A second scenario fills the spill directory of a
//! merge (the sink's temporary key files) in the same way.
//!
//! Mounting needs root (CAP_SYS_ADMIN). Where it is not permitted the scenario says so and
//! skips, also in CI: runners without that right still run every other scenario, and the
//! ones that have it (as this project's CI machine does) run this one.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use delta_sink::generator::{RowSpec, observation_batch, observation_schema};
use delta_sink::{CommitOptions, DeltaSink, SaveMode, SinkConfig, StorageOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::tally;
use crate::world::{TYPES, World};
use crate::{Outcome, TALLY, check, cli};

/// Size of the small file system: room for any of the scenarios' data, and the filler.
const FS_BYTES: u64 = 64 << 20;

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct SmallFs {
    pub dir: PathBuf,
    filler: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of [`FS_BYTES`] at `dir`; `Err` says why it cannot be.
    pub fn mount(dir: &Path) -> Result<SmallFs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={FS_BYTES}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a small tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallFs {
            dir: dir.to_path_buf(),
            filler: dir.join("filler"),
        })
    }

    /// Bytes free.
    pub fn free(&self) -> anyhow::Result<u64> {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.dir)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .context("df's answer")
    }

    /// Fills the file system until `free` bytes are left (or fewer, to a page).
    pub fn leave(&self, free: u64) -> anyhow::Result<()> {
        self.make_room()?;
        let fill = self.free()?.saturating_sub(free);
        let f = std::fs::File::create(&self.filler)?;
        f.set_len(0)?;
        // tmpfs allocates on write: write zeros, a MiB at a time.
        use std::io::Write;
        let mut w = std::io::BufWriter::new(f);
        let chunk = vec![0u8; 1 << 20];
        let mut left = fill;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        w.flush()?;
        Ok(())
    }

    /// Removes the filler.
    pub fn make_room(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.filler) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn skip(why: String) -> anyhow::Result<Outcome> {
    if std::env::var_os("CI").is_some() {
        println!("  (CI) the ENOSPC scenarios skip where mounting is not permitted: {why}");
    }
    Ok(Outcome::Skipped(why))
}

/// Where a run that ran out of space was, from its error.
fn phase(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("spill") {
        "spill"
    } else if e.contains("state file") {
        "state write"
    } else if e.contains("download") || e.contains("bulk export") || e.contains("ndjson") {
        "download"
    } else if e.contains("commit") || e.contains("_delta_log") || e.contains("transaction") {
        "commit"
    } else if e.contains("encod") || e.contains("parquet") || e.contains("writ") {
        "encode"
    } else {
        "other"
    }
}

/// A failed run out of space: one line that says so.
fn out_of_space(error: &str, what: &str) -> anyhow::Result<()> {
    let e = error.to_ascii_lowercase();
    if !(e.contains("no space left") || e.contains("os error 28") || e.contains("disk full")) {
        TALLY.add(tally::UNCLEAR_ERRORS, 1);
        bail!("{what} failed without saying the disk is full: {error}");
    }
    TALLY.fault(format!("disk: ENOSPC during {}", phase(error)));
    Ok(())
}

/// The export's downloads, the lock and the state file on the small file system (the tables
/// elsewhere), or everything there (`tables_too`: the tables' staged files and commits, and
/// the temporary directory).
pub async fn run(seed: u64, tables_too: bool) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xd15c);
    let mut world = World::new(seed, |c| c.polls_before_complete = 0).await?;
    let fs = match SmallFs::mount(&world.path("small")) {
        Ok(fs) => fs,
        Err(why) => return skip(why),
    };
    let delta = if tables_too {
        fs.dir.join("delta")
    } else {
        world.path("delta")
    };
    let state = fs.dir.join("work/state.json");
    let tmp = if tables_too {
        fs.dir.join("tmp")
    } else {
        world.path("tmp")
    };
    std::fs::create_dir_all(&tmp)?;
    let path = delta.display().to_string();
    let endpoint = world.server.base_url();
    let sync = |flags: &[&str]| {
        let mut cmd = cli::sync(&endpoint, &delta, flags);
        cmd.arg("--state-file").arg(&state).env("TMPDIR", &tmp);
        cmd
    };
    for round in 0..2 {
        world.next_round().await?;
        // Room for a part of the sync: some downloads, some tables, or all but the last bytes.
        let used = dir_bytes(&world.reference)?;
        let free = if tables_too {
            rng.random_range(0..used * 2 + 64 * 1024)
        } else {
            // The downloads: 10-15 KB of NDJSON per patient.
            rng.random_range(0..64 * 1024)
        };
        fs.leave(free)?;
        let flags: &[&str] = if round > 0 && rng.random_bool(0.5) {
            &["--deletion-vectors"]
        } else {
            &[]
        };
        TALLY.add("sync runs", 1);
        let exit = cli::run(sync(flags)).await?;
        let context =
            format!("round {round}, {free} bytes free, tables on the small fs: {tables_too}");
        cli::judge(&exit, &context)?;
        if exit.success() {
            TALLY.add("disk: runs with enough space", 1);
        } else {
            out_of_space(&exit.error(), &context)?;
            TALLY.add("sync runs failed (then rerun)", 1);
            fs.make_room()?;
            world.consistent_at(&path, &state, &context).await?;
            check::left_behind(&path, &TYPES, &TALLY).await?;
            cli::run_ok(sync(flags), "the sync once there is space").await?;
        }
        fs.make_room()?;
        check::same_as(&path, world.last(), &TALLY, &context).await?;
        world.consistent_at(&path, &state, &context).await?;
        TALLY.add("rounds converged", 1);
    }
    world.vacuumed(&path, Some(&state)).await?;
    world.server.shutdown().await;
    Ok(Outcome::Passed)
}

fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&e.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Rows of one merge: `n` Observations, ids `obs-<i>`, version `v`.
fn batch(ids: std::ops::Range<usize>, version: u64, seed: u64) -> arrow::array::RecordBatch {
    let rows: Vec<RowSpec> = ids
        .map(|i| {
            RowSpec::new(
                format!("obs-{i}"),
                version,
                1_700_000_000_000_000 + version as i64,
            )
        })
        .collect();
    observation_batch(&rows, &mut StdRng::seed_from_u64(seed ^ version))
}

async fn merge(sink: &DeltaSink, rows: &arrow::array::RecordBatch) -> anyhow::Result<()> {
    let mut table = sink.table("Observation").await?;
    let mut w = table.writer(observation_schema());
    w.push(rows).await?;
    table
        .commit(
            w,
            CommitOptions {
                mode: SaveMode::Merge,
                cursor: None,
            },
        )
        .await?;
    Ok(())
}

/// The spill of a merge (the keys of input and stored rows, by id bucket, in a temporary
/// file) runs out of space: the merge fails with a clear error, the table is unchanged, and
/// the same merge succeeds once there is room.
/// With `table_too`, the table's staged files and commits share the small file system.
pub async fn run_spill(seed: u64, table_too: bool) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5b11);
    let dir = tempfile::tempdir()?;
    let fs = match SmallFs::mount(&dir.path().join("small")) {
        Ok(fs) => fs,
        Err(why) => return skip(why),
    };
    let all_small = table_too;
    let table_dir = if all_small {
        fs.dir.join("delta")
    } else {
        dir.path().join("delta")
    };
    let spill = fs.dir.join("spill");
    std::fs::create_dir_all(&spill)?;
    let config = SinkConfig {
        index_bucket_rows: rng.random_range(4..64),
        spill_dir: Some(spill.clone()),
        ..SinkConfig::default()
    };
    let path = table_dir.display().to_string();
    let sink = DeltaSink::new(&path, StorageOptions::new())?.with_config(config.clone());
    let reference_dir = dir.path().join("reference");
    let reference = DeltaSink::new(&reference_dir.display().to_string(), StorageOptions::new())?
        .with_config(SinkConfig {
            spill_dir: None,
            ..config
        });
    let n = rng.random_range(300..1500);
    let first = batch(0..n, 1, seed);
    merge(&sink, &first).await?;
    merge(&reference, &first).await?;
    for round in 2..4u64 {
        let from = rng.random_range(0..n);
        let update = batch(from..n + rng.random_range(0..200), round, seed);
        let before = check::table_rows(&path, "Observation", &TALLY).await?;
        let free = rng.random_range(0..256 * 1024);
        fs.leave(free)?;
        let context = format!("merge {round}, {free} bytes free, all on the small fs: {all_small}");
        match merge(&sink, &update).await {
            Ok(()) => TALLY.add("disk: runs with enough space", 1),
            Err(e) => {
                let text = format!("{e:#}");
                ensure!(
                    !text.contains('\n'),
                    "a multi-line error ({context}): {text}"
                );
                out_of_space(&text, &context)?;
                fs.make_room()?;
                let after = check::table_rows(&path, "Observation", &TALLY).await?;
                if after != before {
                    let (lost, diff) = check::difference(&before, &after);
                    TALLY.add(tally::LOST, lost);
                    bail!("a merge that failed changed the table: {diff} ({context})");
                }
                check::left_behind(&path, &["Observation"], &TALLY).await?;
                merge(&sink, &update)
                    .await
                    .with_context(|| format!("the merge once there is room ({context})"))?;
            }
        }
        fs.make_room()?;
        merge(&reference, &update).await?;
        let want =
            check::table_rows(&reference_dir.display().to_string(), "Observation", &TALLY).await?;
        let got = check::table_rows(&path, "Observation", &TALLY).await?;
        if got != want {
            let (lost, diff) = check::difference(&want, &got);
            TALLY.add(tally::LOST, lost);
            bail!("the table differs from the fault-free merges: {diff} ({context})");
        }
        TALLY.add("rounds converged", 1);
    }
    sink.table("Observation")
        .await?
        .vacuum(std::time::Duration::ZERO, false, false)
        .await?;
    check::no_orphans(&path, &["Observation"], &TALLY, "after vacuum").await?;
    Ok(Outcome::Passed)
}
