//! Shell hooks as real processes. The hook runs in a process group of its own; on timeout the
//! whole group gets SIGTERM, then SIGKILL after a grace period, and whatever the hook left
//! running when it exits is stopped the same way, so no hook leaves processes behind. Output is
//! captured up to a cap per stream; the rest is read and dropped, so a chatty hook can neither
//! block on a full pipe nor fill memory.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Output kept per stream.
pub const OUTPUT_CAP: usize = 1024 * 1024;

/// One run of a command.
#[derive(Debug, Clone)]
pub struct ShellRun<'a> {
    /// The program and its arguments, executed directly (no shell).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: &'a Path,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    /// How long the group has between SIGTERM and SIGKILL.
    pub grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOutput {
    /// The exit code, when the process exited (not killed by a signal).
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration: Duration,
}

impl ShellOutput {
    /// stdout and stderr as text, for reasons and error messages.
    pub fn text(&self) -> String {
        let out = String::from_utf8_lossy(&self.stdout);
        let err = String::from_utf8_lossy(&self.stderr);
        let mut text = match (out.trim(), err.trim()) {
            ("", e) => e.to_string(),
            (o, "") => o.to_string(),
            (o, e) => format!("{o}\n{e}"),
        };
        if self.stdout_truncated || self.stderr_truncated {
            text.push_str(" [output cut at 1 MiB]");
        }
        text
    }
}

/// Starts the command, feeds it `stdin`, waits for it within the timeout, and collects its
/// output. Err is a failure to start (missing or non-executable program).
pub async fn run(spec: ShellRun<'_>) -> std::io::Result<ShellOutput> {
    let started = Instant::now();
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    // If this future is dropped before the end (a cancelled job, a replaced run), the guard
    // kills the whole group, not only the direct child.
    let mut guard = GroupGuard(group);
    if let Some(mut stdin) = child.stdin.take() {
        let input = spec.stdin;
        // A hook that does not read its input closes the pipe early; that is not an error.
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    let stdout = child.stdout.take().map(|s| tokio::spawn(read_capped(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(read_capped(s)));
    let (status, timed_out) = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            signal_group(group, Signal::SIGTERM);
            let status = match tokio::time::timeout(spec.grace, child.wait()).await {
                Ok(s) => s.ok(),
                Err(_) => {
                    signal_group(group, Signal::SIGKILL);
                    child.wait().await.ok()
                }
            };
            (status, true)
        }
    };
    stop_leftovers(group, spec.grace).await;
    guard.0 = None;
    let (stdout, stdout_truncated) = join(stdout, spec.grace).await;
    let (stderr, stderr_truncated) = join(stderr, spec.grace).await;
    Ok(ShellOutput {
        code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        timed_out,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        duration: started.elapsed(),
    })
}

struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.0, Signal::SIGKILL);
    }
}

fn signal_group(group: Option<Pid>, signal: Signal) {
    if let Some(pgid) = group {
        // ESRCH (the group is gone) is the outcome we want.
        let _ = killpg(pgid, signal);
    }
}

fn group_alive(group: Option<Pid>) -> bool {
    group.is_some_and(|pgid| killpg(pgid, None).is_ok())
}

/// Processes the hook started and left behind (in its group) are stopped too.
async fn stop_leftovers(group: Option<Pid>, grace: Duration) {
    if !group_alive(group) {
        return;
    }
    signal_group(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while group_alive(group) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if group_alive(group) {
        signal_group(group, Signal::SIGKILL);
    }
}

async fn read_capped<R: AsyncRead + Unpin>(mut reader: R) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

/// The captured output; a process that left the group (setsid) and keeps the pipe open cannot
/// hold the hook up longer than the grace period.
async fn join(
    task: Option<tokio::task::JoinHandle<(Vec<u8>, bool)>>,
    grace: Duration,
) -> (Vec<u8>, bool) {
    let Some(mut task) = task else {
        return (Vec::new(), false);
    };
    match tokio::time::timeout(grace + Duration::from_secs(1), &mut task).await {
        Ok(result) => result.unwrap_or_default(),
        Err(_) => {
            task.abort();
            (Vec::new(), true)
        }
    }
}
