//! The shared infrastructure under the cluster: the Kafka broker and the PostgreSQL server the
//! scripts start (`infra/kafka/kafkactl.sh`, `infra/postgres/pgctl.sh`), broken on purpose and
//! always restored, and raw access to topics.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use platform::config::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::cluster::{repo_root, run_dir};

fn run(command: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .with_context(|| format!("running {shown}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(output.status.success(), "{shown} failed: {text}");
    Ok(text)
}

fn kill(signal: &str, pid: u32) -> anyhow::Result<()> {
    run(Command::new("kill").args(["-s", signal, &pid.to_string()]))?;
    Ok(())
}

fn kafkactl() -> Command {
    let mut command = Command::new(repo_root().join("infra/kafka/kafkactl.sh"));
    // A broker holding every test's topics takes its time to load them after a crash.
    command.env("KAFKA_START_TIMEOUT", "240");
    command
}

/// The broker `kafkactl.sh` runs, found through its pid file.
#[derive(Debug)]
pub struct Broker {
    pid: u32,
    state: BrokerState,
    /// The heap it was started with: a restart with less could run out of memory loading the
    /// partitions the shared broker has accumulated.
    heap: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerState {
    Running,
    Stopped,
    Killed,
}

impl Broker {
    pub fn find() -> anyhow::Result<Self> {
        let file: PathBuf = run_dir().join("pids/kafka.pid");
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "{} is missing: these scenarios need the broker that infra/kafka/kafkactl.sh runs",
                file.display()
            )
        })?;
        let pid: u32 = text.trim().parse().context("the broker's pid file")?;
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&str> = cmdline.split('\0').collect();
        anyhow::ensure!(
            args.contains(&"kafka.Kafka"),
            "pid {pid} from {} is not the Kafka broker",
            file.display()
        );
        let heap = args
            .iter()
            .filter(|arg| arg.starts_with("-Xms") || arg.starts_with("-Xmx"))
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Self {
            pid,
            state: BrokerState::Running,
            heap,
        })
    }

    fn kafkactl_start(&self) -> anyhow::Result<String> {
        let mut command = kafkactl();
        command.arg("start");
        if !self.heap.is_empty() && std::env::var_os("KAFKA_HEAP_OPTS").is_none() {
            command.env("KAFKA_HEAP_OPTS", &self.heap);
        }
        run(&mut command)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILL: the broker loses whatever it had not flushed; clients see connections drop.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        kill("KILL", self.pid)?;
        self.state = BrokerState::Killed;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(format!("/proc/{}", self.pid)).is_ok()
            && !process_is_zombie(self.pid)
        {
            anyhow::ensure!(Instant::now() < deadline, "the broker outlived SIGKILL");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts the broker again with `kafkactl.sh start` (which waits until it serves).
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.kafkactl_start()?;
        self.pid = Self::find()?.pid;
        self.state = BrokerState::Running;
        Ok(())
    }

    /// SIGSTOP: connections stay open but nothing answers, as in a long GC pause.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        kill("STOP", self.pid)?;
        self.state = BrokerState::Stopped;
        Ok(())
    }

    pub fn resume(&mut self) -> anyhow::Result<()> {
        kill("CONT", self.pid)?;
        self.state = BrokerState::Running;
        Ok(())
    }
}

fn process_is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|status| {
            status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(true)
}

impl Drop for Broker {
    /// Whatever happens to the test, the broker the other tests share comes back.
    fn drop(&mut self) {
        match self.state {
            BrokerState::Running => {}
            BrokerState::Stopped => {
                let _ = kill("CONT", self.pid);
            }
            BrokerState::Killed => {
                let _ = self.kafkactl_start();
            }
        }
    }
}

/// The PostgreSQL cluster `pgctl.sh` manages: the newest version's first cluster, as
/// `pg_lsclusters` lists it.
#[derive(Debug)]
pub struct Postgres {
    version: String,
    name: String,
    down: bool,
}

impl Postgres {
    pub fn find() -> anyhow::Result<Self> {
        let listing = run(Command::new("pg_lsclusters").arg("--no-header"))?;
        let mut clusters: Vec<(u32, String, String)> = listing
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let version = words.next()?;
                let name = words.next()?;
                Some((version.parse().ok()?, version.to_owned(), name.to_owned()))
            })
            .collect();
        clusters.sort_by_key(|cluster| std::cmp::Reverse(cluster.0));
        let (_, version, name) = clusters
            .into_iter()
            .next()
            .context("pg_lsclusters lists no PostgreSQL cluster")?;
        Ok(Self {
            version,
            name,
            down: false,
        })
    }

    pub fn describe(&self) -> String {
        format!("{}/{}", self.version, self.name)
    }

    /// `pg_ctlcluster <version> <name> restart -m immediate`: every backend is killed without
    /// a checkpoint, and the server recovers from its WAL on start.
    pub fn restart_immediate(&mut self) -> anyhow::Result<()> {
        self.down = true;
        run(Command::new("pg_ctlcluster").args([
            &self.version,
            &self.name,
            "restart",
            "-m",
            "immediate",
        ]))?;
        self.wait_ready(Duration::from_secs(60))?;
        self.down = false;
        Ok(())
    }

    fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ready = Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.down {
            let _ = Command::new("pg_ctlcluster")
                .args([&self.version, &self.name, "start"])
                .status();
        }
    }
}

/// Deletes every topic of the catalog under `kafka`'s prefix (the broker is shared, and every
/// partition costs it memory and start-up time).
pub async fn delete_topics(kafka: &KafkaSettings) -> anyhow::Result<()> {
    let catalog = messaging::TopicCatalog::bundled()?;
    let names: Vec<String> = catalog
        .all_topics()
        .into_iter()
        .map(|topic| kafka.topic(&topic.name))
        .collect();
    let admin: AdminClient<DefaultClientContext> =
        messaging::client::base_config(kafka).create()?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    admin
        .delete_topics(
            &refs,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    Ok(())
}

/// Total messages a topic holds, from its watermarks.
pub async fn messages_in(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<i64> {
    let config = messaging::client::base_config(kafka);
    let topic = kafka.topic(topic);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut total = 0;
        for partition in metadata
            .topics()
            .first()
            .map_or(&[][..], |t| t.partitions())
        {
            let (low, high) = consumer.fetch_watermarks(&topic, partition.id(), timeout)?;
            total += high - low;
        }
        Ok(total)
    })
    .await?
}

/// Produces one raw message, as a buggy or hostile producer would.
pub async fn produce_raw(
    kafka: &KafkaSettings,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, String)],
) -> anyhow::Result<()> {
    let producer: FutureProducer =
        messaging::relay::producer_config(kafka, Duration::from_millis(0)).create()?;
    let headers = headers.iter().fold(
        rdkafka::message::OwnedHeaders::new(),
        |headers, (name, value)| {
            headers.insert(rdkafka::message::Header {
                key: name,
                value: Some(value.as_bytes()),
            })
        },
    );
    let topic = kafka.topic(topic);
    producer
        .send(
            FutureRecord::to(&topic)
                .key(key)
                .payload(payload)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| anyhow::anyhow!("producing to {topic}: {error}"))?;
    Ok(())
}

/// Three Kafka nodes of the harness's own (`kafkactl.sh --nodes 3`: replication factor 3,
/// min.insync.replicas 2), in a run directory and on ports of their own, so that they can be
/// killed, frozen and partitioned without touching the broker other tests share. Node `i`
/// (1 to 3) has broker port `port + 2(i-1)` and Kafka node id `i`.
#[derive(Debug)]
pub struct KafkaCluster {
    run_dir: PathBuf,
    port: u16,
    controller_port: u16,
    paused: std::collections::BTreeSet<u32>,
    stopped: bool,
}

/// Nodes of a [`KafkaCluster`].
pub const KAFKA_NODES: [u32; 3] = [1, 2, 3];

impl KafkaCluster {
    /// Formats and starts three nodes in `run_dir`, on six free ports.
    pub fn start(run_dir: PathBuf) -> anyhow::Result<Self> {
        let (port, controller_port) = six_free_ports()?;
        let mut cluster = Self {
            run_dir,
            port,
            controller_port,
            paused: std::collections::BTreeSet::new(),
            stopped: false,
        };
        let started = Instant::now();
        run(cluster.kafkactl().arg("start"))?;
        println!(
            "three Kafka nodes of our own up in {:.1}s on {}",
            started.elapsed().as_secs_f64(),
            cluster.bootstrap()
        );
        cluster.stopped = false;
        Ok(cluster)
    }

    fn kafkactl(&self) -> Command {
        let mut command = kafkactl();
        command
            .env("BAZAAR_RUN_DIR", &self.run_dir)
            .env("BAZAAR_KAFKA_PORT", self.port.to_string())
            .env(
                "BAZAAR_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .env("KAFKA_START_TIMEOUT", "180")
            .arg("--nodes")
            .arg("3");
        command
    }

    /// Every node, for clients.
    pub fn bootstrap(&self) -> String {
        KAFKA_NODES
            .iter()
            .map(|node| format!("127.0.0.1:{}", self.port_of(*node)))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn port_of(&self, node: u32) -> u16 {
        self.port + 2 * u16::try_from(node - 1).unwrap_or(0)
    }

    pub fn log_of(&self, node: u32) -> PathBuf {
        self.run_dir.join(format!("logs/kafka-{node}.log"))
    }

    /// The node's pid while it runs.
    pub fn pid(&self, node: u32) -> Option<u32> {
        let file = self.run_dir.join(format!("pids/kafka-{node}.pid"));
        let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        (std::fs::metadata(format!("/proc/{pid}")).is_ok() && !process_is_zombie(pid))
            .then_some(pid)
    }

    fn pid_of(&self, node: u32) -> anyhow::Result<u32> {
        self.pid(node)
            .with_context(|| format!("Kafka node {node} is not running"))
    }

    /// SIGKILL: the node dies with whatever it had not flushed.
    pub fn kill(&mut self, node: u32) -> anyhow::Result<()> {
        let pid = self.pid_of(node)?;
        kill("KILL", pid)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pid(node).is_some() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "Kafka node {node} outlived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGSTOP: the node is cut off (connections stay open, nothing answers) until resumed.
    pub fn pause(&mut self, node: u32) -> anyhow::Result<()> {
        kill("STOP", self.pid_of(node)?)?;
        self.paused.insert(node);
        Ok(())
    }

    pub fn resume(&mut self, node: u32) -> anyhow::Result<()> {
        kill("CONT", self.pid_of(node)?)?;
        self.paused.remove(&node);
        Ok(())
    }

    /// Starts one node again (it rejoins the cluster and catches up).
    pub fn start_node(&mut self, node: u32) -> anyhow::Result<()> {
        run(self.kafkactl().args(["start", &node.to_string()]))?;
        Ok(())
    }

    /// Stops every node that still runs.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        for node in std::mem::take(&mut self.paused) {
            if let Some(pid) = self.pid(node) {
                let _ = kill("CONT", pid);
            }
        }
        run(self.kafkactl().arg("stop"))?;
        self.stopped = true;
        Ok(())
    }
}

impl Drop for KafkaCluster {
    /// A failed test must not leave brokers running (or frozen).
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.stop();
        }
    }
}

/// A port `p` such that `p` to `p + 5` are all free: three broker ports (`p`, `p + 2`, `p + 4`)
/// and three controller ports between them. They are taken below the kernel's ephemeral range
/// (32768 and up): a port found free there can be handed to any outgoing connection before the
/// brokers bind it, which failed a start on a busy machine.
fn six_free_ports() -> anyhow::Result<(u16, u16)> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos())
        ^ std::process::id();
    for attempt in 0..200u32 {
        let slot = seed.wrapping_add(attempt.wrapping_mul(7919)) % 2_000;
        let base = 20_000 + u16::try_from(slot).unwrap_or(0) * 6;
        let all_free =
            (base..base + 6).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return Ok((base, base + 1));
        }
    }
    anyhow::bail!("found no six consecutive free ports in 20000-32000 for three Kafka nodes")
}

/// The node (Kafka node id) leading the most partitions of the topics under `kafka`'s prefix:
/// the one whose loss moves the most leadership.
pub async fn busiest_node(kafka: &KafkaSettings) -> anyhow::Result<u32> {
    let config = messaging::client::base_config(kafka);
    let prefix = kafka.topic_prefix.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
        let mut led = std::collections::BTreeMap::<u32, usize>::new();
        for topic in metadata.topics() {
            if !topic.name().starts_with(&prefix) {
                continue;
            }
            for partition in topic.partitions() {
                if let Ok(leader) = u32::try_from(partition.leader()) {
                    *led.entry(leader).or_default() += 1;
                }
            }
        }
        led.into_iter()
            .max_by_key(|(_, count)| *count)
            .map(|(node, _)| node)
            .context("no partition has a leader")
    })
    .await?
}
