//! The chaos suite: real syncs driven through seeded, random fault schedules over the whole
//! chain (server, process, storage, concurrency, configuration), each result compared with a
//! fault-free run of the same data. See docs/reliability.md.
//!
//! A test target of its own harness (`harness = false`): it runs scenarios × seeds, prints
//! every seed with the command that replays it, and ends with a summary table of what it
//! injected and what it found.
//!
//! ```text
//! cargo test -p fhirsync --test chaos                          # the quick sample
//! FHIRSYNC_CHAOS_SEEDS=240 cargo test -p fhirsync --test chaos # the long run
//! FHIRSYNC_CHAOS_SEED=123 cargo test -p fhirsync --test chaos -- server_faults --exact
//! cargo test -p fhirsync --test chaos -- --ignored daemon_soak  # the soak
//! ```
mod check;
mod cli;
mod concurrency;
mod disk_full;
mod process_death;
mod s3_proxy;
mod schedule;
mod schema_change;
mod server_faults;
mod soak;
mod storage_s3;
mod tally;
mod world;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;

use tally::Tally;

/// What the whole run counted.
pub static TALLY: LazyLock<Tally> = LazyLock::new(Tally::default);

/// Panics on any thread of this process (fhirsync's libraries, delta-rs, the scenario),
/// caught or not (but the one the binary keeps quiet too): each seed checks that none
/// happened while it ran.
static PANICS_SEEN: AtomicU64 = AtomicU64::new(0);

fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS_SEEN.fetch_add(1, Ordering::Relaxed);
        default(info);
    }));
    // As the binary does: the one panic delta-rs catches by design (object_store's refusal to
    // abort an upload whose finish failed) is not printed, so not counted; every other is.
    fhirsync::panics::quiet_caught_library_panics();
}

/// What a scenario's seed came to, when it did not fail.
pub enum Outcome {
    Passed,
    /// The scenario could not run here (no S3 server, no right to mount); says why.
    Skipped(String),
}

type Run = fn(u64) -> Pin<Box<dyn Future<Output = anyhow::Result<Outcome>>>>;

/// When a scenario runs.
#[derive(Clone, Copy, PartialEq)]
enum When {
    /// In the quick sample and the long run.
    Always,
    /// Only when asked for with `--ignored` (the reason is printed otherwise).
    Ignored(&'static str),
}

struct Scenario {
    name: &'static str,
    run: Run,
    when: When,
    /// The scenario's share of the seeds of a run: heavier scenarios get fewer.
    weight: usize,
    /// A seed that has not finished after this long has hung.
    limit: Duration,
}

/// A scenario of the quick sample and the long run.
fn always(name: &'static str, weight: usize, run: Run) -> Scenario {
    Scenario {
        name,
        run,
        when: When::Always,
        weight,
        limit: SEED_LIMIT,
    }
}

/// A scenario that waits (for a fix, or for the time it takes) and runs with `--ignored`.
fn waiting(name: &'static str, why: &'static str, run: Run) -> Scenario {
    Scenario {
        when: When::Ignored(why),
        ..always(name, 1, run)
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
        always("server_faults", 4, |s| Box::pin(server_faults::run(s))),
        always("rejects_full_refresh", 1, |s| {
            Box::pin(server_faults::run_rejects_full_refresh(s))
        }),
        always("failed_job", 1, |s| {
            Box::pin(server_faults::run_failed_job(s))
        }),
        always("process_death", 2, |s| {
            Box::pin(process_death::run(s, false))
        }),
        always("process_death_full_refresh", 1, |s| {
            Box::pin(process_death::run(s, true))
        }),
        always("storage_s3", 2, |s| Box::pin(storage_s3::run(s, false))),
        always("storage_s3_lost_commit", 1, |s| {
            Box::pin(storage_s3::run(s, true))
        }),
        always("disk_full", 1, |s| Box::pin(disk_full::run(s, false))),
        always("disk_full_tables", 1, |s| Box::pin(disk_full::run(s, true))),
        always("disk_full_spill", 3, |s| {
            Box::pin(disk_full::run_spill(s, false))
        }),
        always("disk_full_spill_tables", 1, |s| {
            Box::pin(disk_full::run_spill(s, true))
        }),
        always("concurrency", 2, |s| Box::pin(concurrency::run(s))),
        always("concurrency_daemon", 1, |s| {
            Box::pin(concurrency::run_daemon(s))
        }),
        always("schema_change", 3, |s| {
            Box::pin(schema_change::run(s, false))
        }),
        always("schema_change_extensions", 1, |s| {
            Box::pin(schema_change::run(s, true))
        }),
        always("fixture_table", 3, |s| {
            Box::pin(schema_change::run_fixture(s))
        }),
        Scenario {
            limit: Duration::from_secs(4 * 3600),
            ..waiting(
                "daemon_soak",
                "the soak takes about an hour: run it with --ignored",
                |s| Box::pin(soak::run(s)),
            )
        },
    ]
}

/// Seeds of the quick sample when `FHIRSYNC_CHAOS_SEEDS` is not set.
const QUICK_SEEDS: usize = 20;
/// A seed of a scenario that has not finished after this long has hung.
const SEED_LIMIT: Duration = Duration::from_secs(600);

struct Args {
    filters: Vec<String>,
    exact: bool,
    ignored: bool,
    include_ignored: bool,
    list: bool,
}

/// The libtest arguments that make sense here; the others are accepted and ignored.
fn args() -> Args {
    let mut a = Args {
        filters: Vec::new(),
        exact: false,
        ignored: false,
        include_ignored: false,
        list: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--exact" => a.exact = true,
            "--ignored" => a.ignored = true,
            "--include-ignored" => a.include_ignored = true,
            "--list" => a.list = true,
            "--skip" | "--test-threads" | "--format" | "--color" | "-Z" | "--logfile" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            s => a.filters.push(s.to_string()),
        }
    }
    a
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name} must be a whole number, not {v:?}"),
    }
}

/// The seeds of each selected scenario: `FHIRSYNC_CHAOS_SEED` alone, or
/// `FHIRSYNC_CHAOS_SEEDS` (default [`QUICK_SEEDS`]) shared out by weight, at least one each.
fn seeds_for(selected: &[&Scenario]) -> Vec<Vec<u64>> {
    if let Some(seed) = env_u64("FHIRSYNC_CHAOS_SEED") {
        return selected.iter().map(|_| vec![seed]).collect();
    }
    let total = env_u64("FHIRSYNC_CHAOS_SEEDS").map_or(QUICK_SEEDS, |n| n as usize);
    let weights: usize = selected.iter().map(|s| s.weight.max(1)).sum();
    // Largest remainders: the counts add up to the total.
    let mut counts: Vec<(usize, usize)> = selected
        .iter()
        .map(|s| {
            let share = total * s.weight.max(1);
            (share / weights, share % weights)
        })
        .collect();
    let mut left = total.saturating_sub(counts.iter().map(|c| c.0).sum());
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(counts[i].1));
    for i in order {
        if left == 0 {
            break;
        }
        counts[i].0 += 1;
        left -= 1;
    }
    counts
        .iter()
        .map(|(n, _)| {
            (0..(*n).max(1))
                .map(|_| rand::random::<u32>() as u64)
                .collect()
        })
        .collect()
}

fn main() -> ExitCode {
    let args = args();
    let all = scenarios();
    let selected: Vec<&Scenario> = all
        .iter()
        .filter(|s| {
            args.filters.is_empty()
                || args.filters.iter().any(|f| {
                    if args.exact {
                        s.name == f
                    } else {
                        s.name.contains(f.as_str())
                    }
                })
        })
        .filter(|s| match s.when {
            When::Always => !args.ignored,
            When::Ignored(_) => args.ignored || args.include_ignored,
        })
        .collect();
    if args.list {
        for s in &all {
            println!("{}: test", s.name);
        }
        return ExitCode::SUCCESS;
    }
    for s in &all {
        if let When::Ignored(reason) = s.when
            && !selected.iter().any(|x| x.name == s.name)
            && (args.filters.is_empty() || args.filters.iter().any(|f| s.name.contains(f.as_str())))
        {
            println!("chaos {}: ignored ({reason})", s.name);
        }
    }
    count_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let mut failures = Vec::new();
    for (scenario, seeds) in selected.iter().zip(seeds_for(&selected)) {
        for seed in seeds {
            let replay = format!(
                "FHIRSYNC_CHAOS_SEED={seed} cargo test -p fhirsync --test chaos -- {}{} --exact",
                if matches!(scenario.when, When::Ignored(_)) {
                    "--ignored "
                } else {
                    ""
                },
                scenario.name
            );
            println!("chaos {} seed {seed} (replay: {replay})", scenario.name);
            let t = Instant::now();
            let panics = PANICS_SEEN.load(Ordering::Relaxed);
            let run = (scenario.run)(seed);
            let result = runtime.block_on(async {
                match tokio::time::timeout(scenario.limit, AssertUnwindSafe(run).catch_unwind())
                    .await
                {
                    Ok(Ok(r)) => r,
                    Ok(Err(panic)) => Err(anyhow::anyhow!(
                        "the scenario panicked: {}",
                        panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("?")
                    )),
                    Err(_) => Err(anyhow::anyhow!(
                        "hung: not finished after {:?}",
                        scenario.limit
                    )),
                }
            });
            let secs = t.elapsed().as_secs_f64();
            let panicked = PANICS_SEEN.load(Ordering::Relaxed) - panics;
            let result = match result {
                Ok(_) if panicked > 0 => {
                    TALLY.add(tally::PANICS, panicked);
                    Err(anyhow::anyhow!(
                        "{panicked} panics in this process while it ran (caught or not; see the log above)"
                    ))
                }
                r => r,
            };
            match result {
                Ok(Outcome::Passed) => {
                    TALLY.seed_done(scenario.name, true, false);
                    println!("chaos {} seed {seed}: ok ({secs:.1} s)", scenario.name);
                }
                Ok(Outcome::Skipped(why)) => {
                    TALLY.seed_done(scenario.name, false, true);
                    println!("chaos {} seed {seed}: skipped: {why}", scenario.name);
                }
                Err(e) => {
                    TALLY.seed_done(scenario.name, false, false);
                    println!(
                        "chaos {} seed {seed}: FAILED ({secs:.1} s): {e:#}",
                        scenario.name
                    );
                    failures.push(format!(
                        "{} seed {seed}: {e:#}\n    replay: {replay}",
                        scenario.name
                    ));
                }
            }
        }
    }
    println!("{}", TALLY.summary());
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("\n{} failed seeds:", failures.len());
        for f in &failures {
            println!("  {f}");
        }
        ExitCode::FAILURE
    }
}
