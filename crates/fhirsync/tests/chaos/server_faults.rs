//! Server faults: rounds of changed data, each synced through a seeded schedule of faults
//! drawn per request (429s with every `Retry-After` form, transient 5xx with and without an
//! OperationOutcome, resets, truncated and slow bodies, expired files and jobs, failed jobs,
//! expired and revoked tokens) and job faults (duplicate ids with older versions after newer,
//! bad lines). A failed run is followed by another until the tables converge to the
//! fault-free run's.
use anyhow::{Context, bail, ensure};
use bulk_test_server::{Fault, FaultRule, FaultTarget};
use fhirsync::run::RunKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::schedule::{self, Profile};
use crate::tally;
use crate::world::{self, TYPES, World};
use crate::{Outcome, TALLY, check};

/// Runs of one round before the faults stop.
const MAX_FAULTY_RUNS: usize = 6;

pub async fn run(seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    let auth = rng.random_bool(0.5);
    let file_tokens = auth && rng.random_bool(0.5);
    let smart = if auth {
        Some(world::smart_config()?)
    } else {
        None
    };
    let mut world = World::new(seed, |c| {
        c.smart = smart;
        c.requires_access_token = file_tokens;
    })
    .await?;
    world.auth = auth;
    if auth {
        TALLY.add("server_faults: seeds with SMART auth", 1);
    }
    let faulty = world.path("faulty");
    let opts = world.options(&faulty);
    let profile = Profile {
        rate: rng.random_range(0.05..0.3),
        fatal_rate: rng.random_range(0.0..0.04),
        auth,
        file_tokens,
        cheap: false,
    };
    let rounds = rng.random_range(2..=3);
    for round in 0..rounds {
        world.next_round().await?;
        let full = round > 0 && rng.random_bool(0.3);
        let faults = world.server.faults();
        if rng.random_bool(0.4) {
            let count = rng.random_range(1..=5);
            faults.add(FaultRule::once(
                FaultTarget::KickOff,
                Fault::DuplicateIds { count },
            ));
            TALLY.fault("server: duplicate ids, older versions after newer");
        }
        // Bad lines only on incremental rounds: a line whose id cannot be read rightly stops
        // a full refresh's reconciliation of its type.
        let bad_lines = !full && rng.random_bool(0.3);
        if bad_lines {
            faults.add(FaultRule::once(FaultTarget::KickOff, Fault::BadLines));
            TALLY.fault("server: bad lines");
        }
        faults.set_source(Some(schedule::source(seed ^ round as u64, profile.clone())));
        let kind = if full {
            RunKind::FullRefresh
        } else {
            RunKind::Incremental
        };
        let context = format!("round {round} ({kind})");
        let mut done = false;
        let requests_before = world.server.requests().len();
        for attempt in 0..MAX_FAULTY_RUNS {
            TALLY.add("sync runs", 1);
            match world::run(&opts, kind).await {
                Ok(report) => {
                    done = true;
                    // The bad lines belong to the round's first export: a run that had to
                    // start a new one (its job expired) never received them.
                    let kickoffs = world.server.requests()[requests_before..]
                        .iter()
                        .filter(|r| r.path_and_query.contains("$export") && r.status == 202)
                        .count();
                    if bad_lines && kickoffs > 1 {
                        TALLY.add("bad-line checks skipped (a new export replaced the job)", 1);
                    }
                    if bad_lines && kickoffs == 1 {
                        // The server adds a file of bad lines to each type it exports; a type
                        // without changes since the cursor has no files at all.
                        let exported: Vec<&str> = TYPES
                            .into_iter()
                            .filter(|t| report.tables.get(*t).is_some_and(|r| r.resources > 0))
                            .collect();
                        check::bad_lines_listed(&faulty.join("_rejects"), &exported, &TALLY)?;
                        let listed = match &report.rejects_file {
                            Some(f) => check::rejects_in(f)?.len() as u64,
                            None => 0,
                        };
                        if report.rejects != listed {
                            TALLY.add(tally::UNLISTED_REJECTS, 1);
                            bail!(
                                "the report counts {} rejects and its file lists {listed} ({context})",
                                report.rejects
                            );
                        }
                    }
                    break;
                }
                Err(e) => {
                    TALLY.add("sync runs failed (then rerun)", 1);
                    one_line(&e, &context)?;
                    world
                        .consistent(
                            &faulty,
                            &format!("{context}, after failed run {attempt}: {e:#}"),
                        )
                        .await?;
                    check::left_behind(&faulty.display().to_string(), &TYPES, &TALLY).await?;
                }
            }
        }
        faults.set_source(None);
        faults.clear();
        if !done {
            TALLY.add("rounds finished by a fault-free run", 1);
            world::run(&opts, kind).await.with_context(|| {
                format!("the fault-free run after {MAX_FAULTY_RUNS} faulty ones ({context})")
            })?;
        }
        check::same_as(
            &faulty.display().to_string(),
            world.last(),
            &TALLY,
            &context,
        )
        .await?;
        world.consistent(&faulty, &context).await?;
        TALLY.add("rounds converged", 1);
    }
    let delta = faulty.display().to_string();
    world.vacuumed(&delta, None).await?;
    ensure!(
        !faulty.join("_fhirsync/export").exists(),
        "a finished sync left its export behind"
    );
    world.server.shutdown().await;
    Ok(Outcome::Passed)
}

/// A job the server reports as failed: the sync fails with one clear line, and the next one
/// (the server healthy again) starts a new export instead of resuming the failed job.
pub async fn run_failed_job(seed: u64) -> anyhow::Result<Outcome> {
    let mut world = World::new(seed, |_| {}).await?;
    world.next_round().await?;
    let delta = world.path("faulty");
    let opts = world.options(&delta);
    world
        .server
        .faults()
        .add(FaultRule::once(FaultTarget::KickOff, Fault::FailJob));
    TALLY.fault("server: job failed on the server");
    TALLY.add("sync runs", 2);
    match world::run(&opts, RunKind::Incremental).await {
        Ok(_) => bail!("a sync whose export job failed on the server succeeded"),
        Err(e) => one_line(&e, "the failed job")?,
    }
    world.consistent(&delta, "after the failed job").await?;
    world::run(&opts, RunKind::Incremental)
        .await
        .context("the sync after a failed job (the server is healthy again)")?;
    check::same_as(
        &delta.display().to_string(),
        world.last(),
        &TALLY,
        "after the failed job",
    )
    .await?;
    TALLY.add("rounds converged", 1);
    world.server.shutdown().await;
    Ok(Outcome::Passed)
}

/// A full refresh in which resources the tables hold come back as lines that cannot be
/// decoded (their ids readable): they are rejected and listed (type, id, file, line,
/// reason), counted under their type, and kept as they were, never deleted as if the server
/// no longer had them.
pub async fn run_rejects_full_refresh(seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4e7e);
    let mut world = World::new(seed, |_| {}).await?;
    world.next_round().await?;
    let delta = world.path("faulty");
    let opts = world.options(&delta);
    world::run(&opts, RunKind::Incremental).await?;
    world.next_round().await?;
    // The fault spoils the first resources of each type in export order.
    let k = rng.random_range(1..=3);
    let store = world.server.store();
    let spoiled: Vec<(&str, String)> = TYPES
        .iter()
        .flat_map(|t| store.ids(t).into_iter().take(k).map(move |id| (*t, id)))
        .collect();
    world.server.faults().add(FaultRule::once(
        FaultTarget::KickOff,
        Fault::UnreadableResources { count: k },
    ));
    TALLY.fault("server: unreadable resources (readable ids) in a full refresh");
    TALLY.add("sync runs", 1);
    let report = world::run(&opts, RunKind::FullRefresh)
        .await
        .context("a full refresh with unreadable resources")?;
    // What the table must hold: the refreshed rows, but the spoiled ones as they were.
    let mut expected = world.last().clone();
    for (t, id) in &spoiled {
        let rows = expected.get_mut(*t).context("a type")?;
        match world.rounds[0].contents[*t].get(id) {
            Some(row) => rows.insert(id.clone(), row.clone()),
            None => rows.remove(id),
        };
    }
    check::same_as(
        &delta.display().to_string(),
        &expected,
        &TALLY,
        "the full refresh",
    )
    .await?;
    let records = match &report.rejects_file {
        Some(f) => check::rejects_in(f)?,
        None => Vec::new(),
    };
    for (t, id) in &spoiled {
        let listed = records.iter().any(|r| {
            r["resource_type"] == *t
                && r["id"] == id.as_str()
                && r["file"].as_str().is_some_and(|f| !f.is_empty())
                && r["line"].as_u64().is_some_and(|l| l > 0)
                && r["reason"].as_str().is_some_and(|s| !s.is_empty())
        });
        if !listed {
            TALLY.add(tally::UNLISTED_REJECTS, 1);
            bail!("{t}/{id} was rejected but its reject does not name it: {records:?}");
        }
    }
    for t in TYPES {
        let counted = report.tables.get(t).map_or(0, |r| r.rejected);
        // A type the server holds fewer than k resources of has fewer spoiled.
        let k = spoiled.iter().filter(|(s, _)| *s == t).count();
        ensure!(
            counted == k as u64,
            "the report counts {counted} rejects under {t}, not {k} (rejects listed: {:?}; \
             report: {:?})",
            records
                .iter()
                .map(|r| format!(
                    "{} {} {}:{}",
                    r["resource_type"], r["id"], r["file"], r["line"]
                ))
                .collect::<Vec<_>>(),
            report.tables.get(t)
        );
    }
    ensure!(
        report.rejects == spoiled.len() as u64,
        "the report counts {} rejects",
        report.rejects
    );
    TALLY.add("rounds converged", 1);
    world.server.shutdown().await;
    Ok(Outcome::Passed)
}

/// A failed run's error: one line (its context chain joined), saying something.
pub fn one_line(e: &anyhow::Error, context: &str) -> anyhow::Result<()> {
    let text = format!("{e:#}");
    if text.contains('\n') || text.len() < 10 {
        TALLY.add(tally::UNCLEAR_ERRORS, 1);
        bail!("a failed run's error is not one clear line ({context}): {text:?}");
    }
    if text.contains("panicked") {
        TALLY.add(tally::PANICS, 1);
        bail!("a sync task panicked ({context}): {text}");
    }
    Ok(())
}
