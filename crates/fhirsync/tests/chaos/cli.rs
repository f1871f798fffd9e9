//! The `fhirsync` binary as scenarios run it: to its end, or killed with SIGKILL after a
//! count of its own log lines (the same stage of the sync on every replay of a seed, however
//! fast the machine), and what its exit says.
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, bail, ensure};

use crate::TALLY;
use crate::tally;

/// The sync's own events, every one (kill points in every phase), and nothing of the
/// libraries underneath (whose messages could move the kill points of a replay).
pub const LOG_FILTER: &str = "off,fhirsync=debug,fhir_bulk=debug,delta_sink=debug,smart_auth=debug";

const SIGKILL: i32 = 9;

/// `fhirsync <args>` with JSON logs at [`LOG_FILTER`].
pub fn fhirsync(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirsync"));
    cmd.args(["--log-format", "json", "--log-level", LOG_FILTER])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `fhirsync sync` of `endpoint`'s four types into `delta`, then `extra` flags.
pub fn sync(endpoint: &url::Url, delta: &Path, extra: &[&str]) -> Command {
    let mut cmd = fhirsync(&["sync", "--fhir-endpoint", endpoint.as_str()]);
    cmd.arg("--delta-path")
        .arg(delta)
        .args(["--resource-types", &crate::world::TYPES.join(",")])
        .args(extra);
    cmd
}

/// `fhirsync maintain` that vacuums every unreferenced file at once.
pub fn vacuum(delta: &str) -> Command {
    fhirsync(&[
        "maintain",
        "--delta-path",
        delta,
        "--no-optimize",
        "--vacuum-retention",
        "0",
        "--force-short-retention",
    ])
}

/// How a run of the binary ended.
pub struct Exit {
    pub status: ExitStatus,
    pub stderr: String,
    /// Log lines it wrote.
    pub lines: usize,
    /// Killed by the test.
    pub killed: bool,
    /// The last log line's event or message when it was killed (where it was).
    pub last_message: String,
    /// Tables it had committed.
    pub commits: usize,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The one-line error a failed run printed (`fhirsync: ...`).
    pub fn error(&self) -> String {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("fhirsync: "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Fails on a panic of fhirsync; for a run that was not killed and failed, unless it exited 1
/// with exactly one `fhirsync: ...` line on stderr that says something.
pub fn judge(exit: &Exit, what: &str) -> anyhow::Result<()> {
    if let Some(at) = exit.stderr.find("panicked at") {
        TALLY.add(tally::PANICS, 1);
        let panic: String = exit.stderr[at..]
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ");
        bail!("{what}: fhirsync panicked: {panic}");
    }
    if exit.killed || exit.success() {
        return Ok(());
    }
    let errors: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| l.starts_with("fhirsync: "))
        .collect();
    let clear = exit.status.code() == Some(1)
        && errors.len() == 1
        && errors[0].len() > "fhirsync: ".len() + 10;
    if !clear {
        TALLY.add(tally::UNCLEAR_ERRORS, 1);
        bail!(
            "{what} failed without one clear line (exit {:?}): {}",
            exit.status.code(),
            tail(&exit.stderr)
        );
    }
    Ok(())
}

/// The last lines of a log, for messages.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(6)..].join("\n")
}

/// Runs `cmd` to its end.
pub async fn run(cmd: Command) -> anyhow::Result<Exit> {
    kill_after(cmd, usize::MAX).await
}

/// Runs `cmd` to its end, which must be a success.
pub async fn run_ok(cmd: Command, what: &str) -> anyhow::Result<Exit> {
    let exit = run(cmd).await?;
    judge(&exit, what)?;
    ensure!(exit.success(), "{what} failed: {}", exit.error());
    Ok(exit)
}

/// A running `fhirsync` whose log is read line by line.
struct Running {
    child: std::process::Child,
    /// Drains stdout (nothing may block on a full pipe).
    out: std::thread::JoinHandle<()>,
    log: BufReader<std::process::ChildStderr>,
    stderr: String,
    last_message: String,
    commits: usize,
}

impl Running {
    fn start(mut cmd: Command) -> anyhow::Result<Running> {
        let mut child = cmd.spawn().context("starting fhirsync")?;
        let stdout = child.stdout.take().context("stdout")?;
        let out = std::thread::spawn(move || {
            let _ = std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink());
        });
        let log = BufReader::new(child.stderr.take().context("stderr")?);
        Ok(Running {
            child,
            out,
            log,
            stderr: String::new(),
            last_message: String::new(),
            commits: 0,
        })
    }

    /// Reads up to `n` log lines; true if there were that many (false: it ended first).
    fn read_lines(&mut self, n: usize) -> anyhow::Result<bool> {
        let mut line = String::new();
        for _ in 0..n {
            if self.log.read_line(&mut line)? == 0 {
                return Ok(false);
            }
            self.last_message = message(&line);
            self.commits += usize::from(self.last_message == "committed");
            self.stderr.push_str(&line);
            line.clear();
        }
        Ok(true)
    }

    /// Reads the rest of the log on a thread of its own, so the process never blocks on it.
    fn drain(self) -> Draining {
        let Running {
            child,
            out,
            mut log,
            stderr,
            last_message,
            commits,
        } = self;
        let rest = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = log.read_to_string(&mut s);
            s
        });
        Draining {
            child,
            out,
            rest,
            stderr,
            last_message,
            commits,
        }
    }
}

/// A running `fhirsync` whose remaining log is being read.
struct Draining {
    child: std::process::Child,
    out: std::thread::JoinHandle<()>,
    rest: std::thread::JoinHandle<String>,
    stderr: String,
    last_message: String,
    commits: usize,
}

impl Draining {
    fn wait(mut self) -> anyhow::Result<Exit> {
        let status = self.child.wait()?;
        let _ = self.out.join();
        self.stderr.push_str(&self.rest.join().unwrap_or_default());
        Ok(Exit {
            status,
            lines: self.stderr.lines().count(),
            killed: status.signal() == Some(SIGKILL),
            stderr: self.stderr,
            last_message: self.last_message,
            commits: self.commits,
        })
    }
}

/// Runs `cmd` and kills it with SIGKILL once it has written `lines` log lines (or lets it end).
pub async fn kill_after(cmd: Command, lines: usize) -> anyhow::Result<Exit> {
    tokio::task::spawn_blocking(move || {
        let mut running = Running::start(cmd)?;
        if running.read_lines(lines)? {
            // Ends it, unless it has just ended by itself.
            let _ = running.child.kill();
        }
        running.drain().wait()
    })
    .await?
}

/// The event (or else the message) of a JSON log line.
pub fn message(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| {
            v["event"]
                .as_str()
                .or_else(|| v["message"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| line.trim().to_string())
}

/// For each count of log lines of a whole run (0 to all), the phase a kill after that many
/// lands in.
pub fn phases(log: &str) -> Vec<&'static str> {
    let mut out = vec![phase("", 0)];
    let mut commits = 0;
    for line in log.lines() {
        let m = message(line);
        commits += usize::from(m == "committed");
        out.push(phase(&m, commits));
    }
    out
}

/// The phase a sync was in when it was killed, from the last log line it wrote (empty: none)
/// and how many tables it had committed: the summary counts kills by phase.
pub fn phase(last: &str, commits: usize) -> &'static str {
    match last {
        "" => "kick-off",
        "kickoff" | "status_progress" | "status_retry" => "polling",
        "export complete" | "export_complete" => "encode",
        "committed" if commits >= crate::world::TYPES.len() => "state write",
        "committed" => "commit",
        m if m.contains("already in the table") => "commit",
        "export job deleted" => "state write",
        m if m.starts_with("status") => "polling",
        m if m.contains("download") || m.contains("file") || m.contains("retry") => "download",
        _ => "other",
    }
}

/// Runs `first`; once it has written `after` log lines (or ended), runs `second` to its end;
/// then sends `first` SIGTERM when `stop_first` (a daemon) and waits for it.
pub async fn overlap(
    first: Command,
    second: Command,
    after: usize,
    stop_first: bool,
) -> anyhow::Result<(Exit, Exit)> {
    let first = tokio::task::spawn_blocking(move || -> anyhow::Result<Draining> {
        let mut running = Running::start(first)?;
        running.read_lines(after)?;
        Ok(running.drain())
    })
    .await??;
    let second = run(second).await?;
    let first = tokio::task::spawn_blocking(move || -> anyhow::Result<Exit> {
        if stop_first {
            Command::new("kill")
                .args(["-TERM", &first.child.id().to_string()])
                .status()?;
        }
        let mut exit = first.wait()?;
        // SIGTERM is not a kill by the test: the daemon must exit 0 on it.
        exit.killed = false;
        Ok(exit)
    })
    .await??;
    Ok((first, second))
}

/// A free port on the loopback interface.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
