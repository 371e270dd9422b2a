//! One service binary as a child process: started with its own settings, logging to a file,
//! and killed, paused, continued or restarted on demand.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on the loopback interface, below the kernel's ephemeral range (32768 and
/// up): a port found free there could be handed to any outgoing connection (a Kafka or
/// PostgreSQL client of the cluster's many) before the service binds it, which made a
/// scaled-out cluster fail to start on a busy machine. Another process could still take it;
/// the readiness wait would then see the service exit and say so.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos())
        ^ std::process::id();
    for _ in 0..500 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // 32000-32767 is left alone; the Kafka nodes take six at a time from 20000-31999.
        let port = 10_000 + u16::try_from(seed.wrapping_add(n.wrapping_mul(7919)) % 10_000)?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// How a process ended, as seen by its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Exited with this code (a crash point exits with 86 or 87).
    Code(i32),
    /// Killed by a signal nobody in the harness sent.
    Signal,
}

impl Ending {
    fn of(status: ExitStatus) -> Self {
        status.code().map_or(Self::Signal, Self::Code)
    }
}

#[derive(Debug)]
pub struct Process {
    /// The service (or tool) it runs.
    pub name: &'static str,
    /// Which process of the cluster it is: the service's name, or `order-2` for the second of
    /// several instances.
    pub label: String,
    pub port: u16,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Settings of the current run only (fault injection), on top of `env`.
    extra_env: Vec<(String, String)>,
    log: PathBuf,
    cwd: PathBuf,
    child: Option<Child>,
    /// Endings nobody asked for (crashes), oldest first.
    pub unplanned: Vec<Ending>,
    pub starts: u32,
}

impl Process {
    pub fn new(
        name: &'static str,
        label: String,
        binary: PathBuf,
        port: u16,
        env: Vec<(String, String)>,
        log: PathBuf,
        cwd: PathBuf,
    ) -> Self {
        Self {
            name,
            label,
            port,
            binary,
            args: Vec::new(),
            env,
            extra_env: Vec::new(),
            log,
            cwd,
            child: None,
            unplanned: Vec::new(),
            starts: 0,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Settings for the next starts (e.g. a crash point), until changed again.
    pub fn set_extra_env(&mut self, extra: &[(&str, &str)]) {
        self.extra_env = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }

    /// The environment a child gets: nothing inherited that could point it elsewhere.
    fn command(&self) -> anyhow::Result<Command> {
        let mut command = Command::new(&self.binary);
        command.args(&self.args).current_dir(&self.cwd);
        for (name, _) in std::env::vars() {
            if name.starts_with("BAZAAR") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(command)
    }

    fn note(&self, line: &str) {
        if let Ok(mut log) = OpenOptions::new().create(true).append(true).open(&self.log) {
            let _ = writeln!(log, "==== chaos harness: {line}");
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.label);
        let mut command = self.command()?;
        self.note(&format!(
            "starting {} {:?}",
            self.binary.display(),
            self.extra_env
        ));
        let child = command
            .spawn()
            .map_err(|error| anyhow::anyhow!("cannot start {}: {error}", self.binary.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Runs the binary with `args` to completion (seeding), with the service's settings.
    pub fn run_to_end(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut command = self.command()?;
        command.args(args);
        self.note(&format!("running {args:?}"));
        let status = command.status()?;
        anyhow::ensure!(
            status.success(),
            "{} {args:?} failed ({status}); see {}",
            self.label,
            self.log.display()
        );
        Ok(())
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.label))?;
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -s {signal} {pid} failed");
        Ok(())
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            self.note("SIGKILL");
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for the clean shutdown; SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> anyhow::Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        self.note("SIGTERM");
        self.signal("TERM")?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait()?.is_some()
            {
                self.child = None;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.note(&format!("still running {grace:?} after SIGTERM"));
        self.kill()
    }

    pub fn pause(&self) -> anyhow::Result<()> {
        self.note("SIGSTOP");
        self.signal("STOP")
    }

    pub fn resume(&self) -> anyhow::Result<()> {
        self.note("SIGCONT");
        self.signal("CONT")
    }

    /// If the process ended by itself, records how and forgets it.
    pub fn reap(&mut self) -> anyhow::Result<Option<Ending>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let Some(status) = child.try_wait()? else {
            return Ok(None);
        };
        self.child = None;
        let mut ending = Ending::of(status);
        // `std::process::exit` runs the C libraries' exit handlers while librdkafka's threads
        // still run, and now and then one of them faults: the process was exiting on purpose
        // already, so the ending is the injected one.
        if ending == Ending::Signal
            && let Some(code) = self.announced_exit_code()
        {
            self.note(&format!(
                "ended by a signal while exiting on purpose with {code}: counted as that exit"
            ));
            ending = Ending::Code(code);
        }
        self.note(&format!("exited by itself: {status}"));
        self.unplanned.push(ending);
        Ok(Some(ending))
    }

    /// The exit code of a fault injection this run of the process announced (`fault injection:
    /// exiting now`, logged just before it exits), if it did.
    fn announced_exit_code(&self) -> Option<i32> {
        announced_exit_code(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The exit code a fault injection announced in the last run logged in `log`, if any.
fn announced_exit_code(log: &str) -> Option<i32> {
    // Only what the last run logged: the harness marks every start.
    let last_run = log
        .rsplit("==== chaos harness: starting")
        .next()
        .unwrap_or_default();
    last_run.lines().rev().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        if entry.get("message")?.as_str()? != messaging::fault::EXITING_NOW {
            return None;
        }
        i32::try_from(entry.get("exit_code")?.as_i64()?).ok()
    })
}

impl Drop for Process {
    /// A failed test must not leave services running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::announced_exit_code;

    const ANNOUNCED: &str = r#"{"level":"ERROR","message":"fault injection: exiting now","point":"BAZAAR_FAULT_RELAY_EXIT_AFTER_ACK","exit_code":86}"#;
    const STARTED: &str = "==== chaos harness: starting order []";
    const RELAY_ACTIVE: &str = r#"{"level":"INFO","message":"outbox relay active"}"#;

    #[test]
    fn only_an_exit_announced_by_the_last_run_counts() {
        let announced = format!("{STARTED}\n{RELAY_ACTIVE}\n{ANNOUNCED}\n");
        assert_eq!(announced_exit_code(&announced), Some(86));
        let by_an_earlier_run = format!("{STARTED}\n{ANNOUNCED}\n{STARTED}\n{RELAY_ACTIVE}\n");
        assert_eq!(announced_exit_code(&by_an_earlier_run), None);
        let never = format!("{STARTED}\n{RELAY_ACTIVE}\n");
        assert_eq!(announced_exit_code(&never), None);
    }
}
