//! The fault scenarios of issue 8. Each runs under a steady stream of checkouts, injects its
//! fault, lets things settle and ends with the invariant checker; its report says how many
//! orders went through, how they ended, what the checker found and how long settling took.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use bazaar_invariants::{Outcome, Report};
use events::EventMetadata;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::cluster::{Cluster, run_dir};
use crate::infra::{self, Broker, Postgres};
use crate::load::{Load, LoadSettings, Tally};

/// How long orders may take to reach a final state once the load and the faults have stopped.
/// The order deadline (60 s) bounds a stuck saga; compensation and fulfilment follow it.
pub const SETTLE_BOUND: Duration = Duration::from_secs(180);

/// What one scenario did and found.
#[derive(Debug)]
pub struct ScenarioReport {
    pub name: String,
    pub tally: Tally,
    /// From the start of the load to the verdict.
    pub duration: Duration,
    /// From the end of the load to the verdict.
    pub settle: Duration,
    pub notes: Vec<String>,
    /// Processes that ended without a fault asking them to.
    pub crashes: Vec<String>,
    /// How this scenario's accepted orders ended, per `status` or `status/reason`.
    pub final_states: BTreeMap<String, usize>,
    /// The checker's verdict over every order of the cluster.
    pub report: Report,
    /// A scaled-out cluster's figures (pauses, rebalances, client errors: see
    /// [`crate::scale`]).
    pub figures: Option<Value>,
    /// Targets this scenario missed; any makes it fail.
    pub missed: Vec<String>,
}

impl ScenarioReport {
    pub fn is_clean(&self) -> bool {
        self.report.outcome == Outcome::Clean && self.crashes.is_empty() && self.missed.is_empty()
    }

    pub fn to_text(&self) -> String {
        let mut text = format!("\n== {}\n", self.name);
        let statuses: Vec<String> = self
            .final_states
            .iter()
            .map(|(status, count)| format!("{status} {count}"))
            .collect();
        text.push_str(&format!(
            "   orders      {} accepted (202), {} not accepted {:?}, {} cancelled by their customer\n",
            self.tally.accepted.len(),
            self.tally.refused_total(),
            self.tally.refused,
            self.tally.cancels
        ));
        text.push_str(&format!("   final       {}\n", statuses.join(", ")));
        for note in &self.notes {
            text.push_str(&format!("   fault       {note}\n"));
        }
        for crash in &self.crashes {
            text.push_str(&format!("   CRASH       {crash}\n"));
        }
        if let Some(figures) = &self.figures {
            text.push_str(&format!("   figures     {figures}\n"));
        }
        for missed in &self.missed {
            text.push_str(&format!("   MISSED      {missed}\n"));
        }
        text.push_str(&format!(
            "   verdict     {} violation(s) over all {} orders of the cluster ({:?}); settled {:.1}s after the load stopped; scenario {:.0}s\n",
            self.report.violations.len(),
            self.report.summary.orders,
            self.report.outcome,
            self.settle.as_secs_f64(),
            self.duration.as_secs_f64()
        ));
        if !self.report.violations.is_empty() {
            text.push_str(&self.report.to_text(40));
        }
        text
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.name,
            "accepted": self.tally.accepted.len(),
            "not_accepted": self.tally.refused,
            "customer_cancels": self.tally.cancels,
            "final": self.final_states,
            "cluster_orders": self.report.summary.orders,
            "violations": self.report.violations.len(),
            "outcome": self.report.outcome,
            "settle_ms": self.settle.as_millis() as u64,
            "duration_ms": self.duration.as_millis() as u64,
            "notes": self.notes,
            "crashes": self.crashes,
            "charges": self.report.summary.charges,
            "refunds": self.report.summary.refunds,
            "shipments": self.report.summary.shipments,
            "emails_sent": self.report.summary.emails_sent,
            "figures": self.figures,
            "missed": self.missed,
        })
    }

    /// Prints the report and appends it to `.run/chaos/results.jsonl`.
    pub fn publish(&self) {
        println!("{}", self.to_text());
        let file = run_dir().join("chaos/results.jsonl");
        if let Ok(mut out) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = writeln!(out, "{}", self.to_json());
        }
    }
}

/// A scenario under way: its load, its clock, its notes.
pub(crate) struct Run {
    pub(crate) name: String,
    pub(crate) load: Load,
    pub(crate) started: Instant,
    pub(crate) notes: Vec<String>,
}

/// A scenario whose load has stopped.
pub(crate) struct Stopped {
    pub(crate) name: String,
    pub(crate) started: Instant,
    pub(crate) notes: Vec<String>,
    pub(crate) tally: Tally,
    pub(crate) at: Instant,
}

impl Run {
    pub(crate) fn start(cluster: &Cluster, name: &str, settings: LoadSettings) -> Self {
        println!("\n-- {name}");
        Self {
            name: name.to_owned(),
            load: Load::start(cluster.api("order"), cluster.customers.clone(), settings),
            started: Instant::now(),
            notes: Vec::new(),
        }
    }

    /// Lets sagas get under way before the fault: `count` checkouts accepted.
    pub(crate) async fn warm_up(&self, count: usize) -> anyhow::Result<()> {
        let got = self
            .load
            .wait_for_accepted(count, Duration::from_secs(60))
            .await;
        anyhow::ensure!(
            got >= count,
            "only {got} of {count} checkouts accepted before the fault"
        );
        Ok(())
    }

    /// Proves the sagas run again after the fault: `count` orders placed from now on reach
    /// `shipping_scheduled`, every service and hop having done its part.
    pub(crate) async fn recovered(
        &mut self,
        cluster: &Cluster,
        count: usize,
        within: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mark = self.load.accepted_so_far();
        let mut first_shipped = None;
        let shipped = loop {
            let placed = self.load.accepted_after(mark);
            let (shipped,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM orders WHERE id::text = ANY($1) AND status = 'shipping_scheduled'",
            )
            .bind(&placed)
            .fetch_one(&cluster.pools["order"])
            .await
            .unwrap_or((0,));
            let shipped = usize::try_from(shipped).unwrap_or(0);
            if shipped > 0 && first_shipped.is_none() {
                first_shipped = Some(started.elapsed());
            }
            if shipped >= count {
                break shipped;
            }
            anyhow::ensure!(
                started.elapsed() < within,
                "only {shipped} of {count} orders placed after the fault shipped within {within:?} ({} placed)",
                placed.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.note(format!(
            "sagas complete again: the first order placed from now on shipped {:.1}s later, {shipped} of them {:.1}s later",
            first_shipped.unwrap_or_default().as_secs_f64(),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    pub(crate) fn note(&mut self, note: String) {
        println!("   {note}");
        self.notes.push(note);
    }

    pub(crate) async fn stop_load(self) -> Stopped {
        let tally = self.load.stop().await;
        Stopped {
            name: self.name,
            started: self.started,
            notes: self.notes,
            tally,
            at: Instant::now(),
        }
    }

    /// Stops the load, restarts anything that died, and runs the checker until things settle.
    async fn finish(self, cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
        self.stop_load().await.finish(cluster).await
    }
}

impl Stopped {
    fn note(&mut self, note: String) {
        println!("   {note}");
        self.notes.push(note);
    }

    async fn finish(self, cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
        let scenario = self.judge(cluster).await?;
        scenario.publish();
        Ok(scenario)
    }

    /// Restarts anything that died and runs the checker until things settle; the report is
    /// not published yet.
    pub(crate) async fn judge(self, cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
        cluster.restart_exited()?;
        let report = cluster
            .checker()
            .check_within(
                &cluster.expectations(self.tally.accepted.clone()),
                SETTLE_BOUND,
            )
            .await?;
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT status, reason, count(*) FROM orders WHERE id::text = ANY($1) GROUP BY 1, 2",
        )
        .bind(&self.tally.accepted)
        .fetch_all(&cluster.pools["order"])
        .await?;
        let final_states = rows
            .into_iter()
            .map(|(status, reason, count)| {
                let label = reason.map_or(status.clone(), |reason| format!("{status}/{reason}"));
                (label, usize::try_from(count).unwrap_or(0))
            })
            .collect();
        let scenario = ScenarioReport {
            name: self.name,
            final_states,
            tally: self.tally,
            duration: self.started.elapsed(),
            settle: self.at.elapsed(),
            notes: self.notes,
            crashes: cluster.crashes(),
            report,
            figures: None,
            missed: Vec::new(),
        };
        Ok(scenario)
    }
}

/// Restarts whatever exits (crash points) for `window`; returns how many restarts.
pub(crate) async fn supervise_for(
    cluster: &mut Cluster,
    window: Duration,
) -> anyhow::Result<usize> {
    let until = Instant::now() + window;
    let mut restarts = 0;
    while Instant::now() < until {
        restarts += cluster.restart_exited()?.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(restarts)
}

/// Restarts `name` with `extra` settings (SIGTERM, then start). With a crash point armed it may
/// exit before it is ready, so readiness is only awaited without one.
async fn restart_with(
    cluster: &mut Cluster,
    name: &'static str,
    extra: &[(&str, &str)],
) -> anyhow::Result<()> {
    let process = cluster.process(name);
    process.set_extra_env(extra);
    tokio::task::block_in_place(|| process.terminate(Duration::from_secs(20)))?;
    process.start()?;
    if extra.is_empty() {
        cluster.wait_ready(name, Duration::from_secs(60)).await?;
    }
    Ok(())
}

/// Scenario 1: SIGKILL each service in turn while sagas are in flight, and start it again.
pub async fn sigkill_each(
    cluster: &mut Cluster,
    services: &[&'static str],
) -> anyhow::Result<ScenarioReport> {
    let mut run = Run::start(
        cluster,
        &format!("1. SIGKILL mid-saga and restart: {}", services.join(", ")),
        LoadSettings::default(),
    );
    run.warm_up(15).await?;
    for service in services {
        run.load.wait_for_accepted(8, Duration::from_secs(30)).await;
        let pending = cluster.pending_orders().await;
        let down = Instant::now();
        cluster.process(service).kill()?;
        cluster.process(service).start()?;
        cluster.wait_ready(service, Duration::from_secs(60)).await?;
        run.note(format!(
            "{service}: SIGKILL with {pending} order(s) pending, serving again after {:.1}s",
            down.elapsed().as_secs_f64()
        ));
    }
    run.recovered(cluster, 15, Duration::from_secs(60)).await?;
    run.finish(cluster).await
}

/// Messages a topic holds against the events its producer's outbox holds for it: more
/// messages than events means a relay published some twice.
async fn republished(cluster: &Cluster, producer: &str, topic: &str) -> anyhow::Result<String> {
    let messages = infra::messages_in(&cluster.kafka, topic).await?;
    let (events,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM messaging_outbox WHERE topic = $1")
            .bind(topic)
            .fetch_one(&cluster.pools[producer])
            .await?;
    Ok(format!(
        "{topic}: {messages} messages for {events} events ({} published twice)",
        messages - events
    ))
}

/// Scenario 2: the relay exits after Kafka acknowledged a batch and before marking it
/// (`BAZAAR_FAULT_RELAY_EXIT_AFTER_ACK`), in every saga producer, for `window`.
pub async fn relay_crash(
    cluster: &mut Cluster,
    services: &[&'static str],
    probability: f64,
    window: Duration,
) -> anyhow::Result<ScenarioReport> {
    let mut run = Run::start(
        cluster,
        &format!(
            "2. relay crash after Kafka's ack, before marking: {} (p={probability} per batch, {}s)",
            services.join(", "),
            window.as_secs()
        ),
        LoadSettings::default(),
    );
    run.warm_up(10).await?;
    let value = probability.to_string();
    for service in services {
        restart_with(
            cluster,
            service,
            &[(messaging::fault::RELAY_EXIT_AFTER_ACK, &value)],
        )
        .await?;
    }
    supervise_for(cluster, window).await?;
    for service in services {
        restart_with(cluster, service, &[]).await?;
    }
    let exits = cluster.injected_exits(messaging::fault::RELAY_EXIT_CODE);
    anyhow::ensure!(!exits.is_empty(), "the relay crash point never fired");
    run.note(format!("relay exits after ack: {exits:?}"));
    run.recovered(cluster, 10, Duration::from_secs(60)).await?;
    let mut scenario = run.finish(cluster).await?;
    for (producer, topic) in [
        ("order", "order-events"),
        ("inventory", "inventory-events"),
        ("payment", "payment-events"),
    ] {
        if services.contains(&producer) {
            let line = republished(cluster, producer, topic).await?;
            println!("   {line}");
            scenario.notes.push(line);
        }
    }
    Ok(scenario)
}

/// Scenario 3: consumers exit after their transaction committed and before the offset was
/// stored (`BAZAAR_FAULT_CONSUMER_EXIT_AFTER_COMMIT`), for `window`: the message comes again
/// and the inbox must drop it.
pub async fn consumer_crash(
    cluster: &mut Cluster,
    services: &[&'static str],
    probability: f64,
    window: Duration,
) -> anyhow::Result<ScenarioReport> {
    let mut run = Run::start(
        cluster,
        &format!(
            "3. consumer crash after commit, before the offset is stored: {} (p={probability} per message, {}s)",
            services.join(", "),
            window.as_secs()
        ),
        LoadSettings::default(),
    );
    run.warm_up(10).await?;
    let value = probability.to_string();
    for service in services {
        restart_with(
            cluster,
            service,
            &[(messaging::fault::CONSUMER_EXIT_AFTER_COMMIT, &value)],
        )
        .await?;
    }
    supervise_for(cluster, window).await?;
    for service in services {
        restart_with(cluster, service, &[]).await?;
    }
    let exits = cluster.injected_exits(messaging::fault::CONSUMER_EXIT_CODE);
    anyhow::ensure!(!exits.is_empty(), "the consumer crash point never fired");
    run.note(format!("consumer exits after commit: {exits:?}"));
    run.recovered(cluster, 10, Duration::from_secs(90)).await?;
    run.finish(cluster).await
}

/// Scenario 4: SIGKILL the broker and start it 20 s later; then SIGSTOP it past the consumers'
/// session timeout (10 s) and continue it. Every client of the shared broker notices: run it
/// only in `make chaos`.
pub async fn broker_outage(cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
    let mut run = Run::start(
        cluster,
        "4. Kafka broker: SIGKILL, restart 20 s later; SIGSTOP past the session timeout, SIGCONT",
        LoadSettings::default(),
    );
    run.warm_up(20).await?;
    let mut broker = Broker::find()?;
    let pending = cluster.pending_orders().await;
    let accepted = run.load.accepted_so_far();
    broker.kill()?;
    let killed = Instant::now();
    // The deliberate outage.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let accepted_while_down = run.load.accepted_so_far() - accepted;
    tokio::task::block_in_place(|| broker.start())?;
    let back = Instant::now();
    run.note(format!(
        "broker SIGKILLed with {pending} order(s) pending; {accepted_while_down} checkouts accepted while it was down; serving again {:.1}s after the kill",
        killed.elapsed().as_secs_f64()
    ));
    let flowing = flow_again(cluster, Duration::from_secs(120)).await?;
    run.note(format!(
        "sagas flow again {:.1}s after the broker's return (the first order paid, rejected or shipped)",
        flowing.as_secs_f64()
    ));
    run.recovered(cluster, 20, Duration::from_secs(120)).await?;
    run.note(format!(
        "... {:.1}s after the broker's return",
        back.elapsed().as_secs_f64()
    ));

    let pending = cluster.pending_orders().await;
    broker.pause()?;
    // Past the consumers' 10 s session timeout: the groups fall apart while it is frozen.
    tokio::time::sleep(Duration::from_secs(15)).await;
    broker.resume()?;
    let back = Instant::now();
    run.note(format!(
        "broker SIGSTOPped for 15 s with {pending} order(s) pending, then SIGCONT"
    ));
    let flowing = flow_again(cluster, Duration::from_secs(120)).await?;
    run.note(format!(
        "sagas flow again {:.1}s after SIGCONT",
        flowing.as_secs_f64()
    ));
    run.recovered(cluster, 20, Duration::from_secs(120)).await?;
    run.note(format!(
        "... {:.1}s after SIGCONT",
        back.elapsed().as_secs_f64()
    ));
    let replaced = replaced_clients(cluster);
    run.note(format!("Kafka clients replaced as stuck: {replaced:?}"));
    run.finish(cluster).await
}

/// How long until an order next moves through a step that needs Kafka (paid, rejected or
/// shipped; a cancellation can come from the customer alone), from now.
async fn flow_again(cluster: &Cluster, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (since,): (chrono::DateTime<chrono::Utc>,) = sqlx::query_as("SELECT clock_timestamp()")
        .fetch_one(&cluster.pools["order"])
        .await?;
    loop {
        let (moved,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT FROM order_status_history
                             WHERE at > $1 AND status IN ('paid', 'rejected', 'shipping_scheduled'))",
        )
        .bind(since)
        .fetch_one(&cluster.pools["order"])
        .await
        .unwrap_or((false,));
        if moved {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "no order was paid, rejected or shipped within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many stuck Kafka clients each service replaced (`messaging::client::BrokerWatch`), from
/// its log.
pub(crate) fn replaced_clients(cluster: &Cluster) -> BTreeMap<String, usize> {
    cluster
        .processes
        .values()
        .map(|process| {
            let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
            let count = log
                .lines()
                .filter(|line| line.contains("; replacing it"))
                .count();
            (process.label.clone(), count)
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// Scenario 5: PostgreSQL restarted in immediate mode (every backend killed, recovery from the
/// WAL) under load. Every user of the shared server notices: `make chaos` only.
pub async fn postgres_restart(cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
    let mut run = Run::start(
        cluster,
        "5. PostgreSQL restart in immediate mode under load",
        LoadSettings::default(),
    );
    run.warm_up(20).await?;
    let mut postgres = Postgres::find()?;
    let pending = cluster.pending_orders().await;
    let down = Instant::now();
    tokio::task::block_in_place(|| postgres.restart_immediate())?;
    run.note(format!(
        "PostgreSQL {} restarted -m immediate with {pending} order(s) pending; accepting connections after {:.1}s",
        postgres.describe(),
        down.elapsed().as_secs_f64()
    ));
    run.recovered(cluster, 20, Duration::from_secs(120)).await?;
    // Periodic work meets the new server only when it next runs (a relay checks its lock
    // session once a minute): keep checkouts coming until every such task has.
    let observed = Duration::from_secs(65);
    supervise_for(cluster, observed.saturating_sub(down.elapsed())).await?;
    run.note(format!(
        "checkouts kept coming until {:.0}s after the restart began",
        down.elapsed().as_secs_f64()
    ));
    run.finish(cluster).await
}

/// The id the registry gave `<prefix>order-events-value`.
async fn topic_schema_id(cluster: &Cluster, topic: &str) -> anyhow::Result<u64> {
    let url = format!(
        "{}/subjects/{}-value/versions/latest",
        cluster.kafka.schema_registry_url,
        cluster.kafka.topic(topic)
    );
    let answer: Value = cluster.http.get(url).send().await?.json().await?;
    answer["id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no schema id in {answer}"))
}

/// Scenario 6: poison messages on `order-events`, read by inventory, payment, notification and
/// shipping: bytes that are not an event at all, and a well-framed event whose datum is
/// garbage. Each consumer must dead-letter both and park their keys while every order flows.
pub async fn poison(cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
    let mut run = Run::start(
        cluster,
        "6. poison messages on order-events",
        LoadSettings::default(),
    );
    run.warm_up(10).await?;
    let injected = Instant::now();
    let topic = "order-events";
    let garbage_key = format!("poison-raw-{}", Uuid::now_v7());
    infra::produce_raw(&cluster.kafka, topic, &garbage_key, b"{not avro}", &[]).await?;
    let framed_key = format!("poison-framed-{}", Uuid::now_v7());
    let schema_id = u32::try_from(topic_schema_id(cluster, topic).await?)?;
    let metadata = EventMetadata::originating("OrderCreated", &framed_key, None);
    infra::produce_raw(
        &cluster.kafka,
        topic,
        &framed_key,
        &events::wire::frame(schema_id, &[0xff; 24]),
        &metadata.to_headers(),
    )
    .await?;
    let full_topic = cluster.kafka.topic(topic);
    let consumers: Vec<&'static str> = crate::cluster::SERVICES
        .into_iter()
        .filter(|service| crate::cluster::consumed_topics(service).contains(&topic))
        .collect();
    for service in &consumers {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (parked,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM messaging_parked_keys WHERE topic = $1 AND message_key = ANY($2)",
            )
            .bind(&full_topic)
            .bind([garbage_key.clone(), framed_key.clone()])
            .fetch_one(&cluster.pools[service])
            .await?;
            if parked == 2 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{service} parked {parked} of the 2 poison keys within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    run.note(format!(
        "2 poison keys parked by each of {} within {:.1}s of being produced",
        consumers.join(", "),
        injected.elapsed().as_secs_f64()
    ));
    run.recovered(cluster, 15, Duration::from_secs(60)).await?;
    let mut scenario = run.finish(cluster).await?;
    let dead_letters = infra::messages_in(&cluster.kafka, "order-events.dlq").await?;
    let expected = i64::try_from(2 * consumers.len())?;
    let line = format!("order-events.dlq holds {dead_letters} dead letter(s) (2 per consumer)");
    println!("   {line}");
    scenario.notes.push(line);
    anyhow::ensure!(
        dead_letters == expected,
        "expected {expected} dead letters, found {dead_letters}"
    );
    Ok(scenario)
}

/// Scenario 7: the card processor fails 20% of calls with a 500 and lets another 20% time out
/// (half of those after charging), for `window`.
pub async fn gateway_faults(
    cluster: &mut Cluster,
    window: Duration,
) -> anyhow::Result<ScenarioReport> {
    let mut run = Run::start(
        cluster,
        &format!(
            "7. payment gateway: 20% of calls fail, 20% time out (half after charging), {}s",
            window.as_secs()
        ),
        LoadSettings::default(),
    );
    run.warm_up(10).await?;
    cluster
        .set_faults(json!({
            "failure_rate": 0.2,
            "timeout_rate": 0.1,
            "timeout_after_charge_rate": 0.1,
            "timeout_hold_ms": 1500,
            "timeout_mode": "drop",
        }))
        .await?;
    supervise_for(cluster, window).await?;
    cluster.set_faults(json!({})).await?;
    let log = std::fs::read_to_string(cluster.processes["payment"].log_path())?;
    let count = |message: &str| {
        let field = format!("\"message\":\"{message}\"");
        log.lines().filter(|line| line.contains(&field)).count()
    };
    let failed = count("charge failed") + count("refund failed");
    let answered = count("charge succeeded") + count("charge declined") + count("refund succeeded");
    run.note(format!(
        "{failed} processor call(s) failed or timed out (retried with the same idempotency key), {answered} answered"
    ));
    run.recovered(cluster, 10, Duration::from_secs(60)).await?;
    run.finish(cluster).await
}

/// Scenario 8: every consuming service, stopped in turn, is rewound to the beginning of every
/// topic it reads (`bazaar replay <svc> --since beginning --yes`) and started again, under load.
/// Nothing may change: no second charge, no second e-mail.
pub async fn replay_everything(cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
    let mut run = Run::start(
        cluster,
        "8. replay of every saga topic from the beginning into every service",
        LoadSettings::default(),
    );
    run.warm_up(40).await?;
    let mut replayed = BTreeMap::new();
    for service in ["order", "inventory", "payment", "notification", "shipping"] {
        tokio::task::block_in_place(|| {
            cluster.process(service).terminate(Duration::from_secs(20))
        })?;
        // The group empties once the stopped consumer's leave reaches the coordinator.
        let deadline = Instant::now() + Duration::from_secs(30);
        let output = loop {
            let mut command = cluster.bazaar(&[
                "replay",
                service,
                "--since",
                "beginning",
                "--yes",
                "--no-wait",
            ])?;
            let output = tokio::task::spawn_blocking(move || command.output()).await??;
            if output.status.code() != Some(3) || Instant::now() >= deadline {
                break output;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        anyhow::ensure!(
            output.status.success(),
            "bazaar replay {service} failed: {text}"
        );
        let summary = text
            .lines()
            .find(|line| line.contains("event(s) in the range"))
            .unwrap_or("")
            .to_owned();
        replayed.insert(service, summary);
        cluster.process(service).start()?;
        cluster.wait_ready(service, Duration::from_secs(60)).await?;
    }
    for (service, summary) in &replayed {
        run.note(format!("{service}: {summary}"));
    }
    run.recovered(cluster, 20, Duration::from_secs(60)).await?;
    let mut stopped = run.stop_load().await;
    let deadline = stopped.at + Duration::from_secs(180);
    loop {
        if cluster.total_lag().await.is_ok_and(|lag| lag == 0) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replayed consumers did not catch up within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stopped.note(format!(
        "every consumer group at the end of its topics {:.1}s after the load stopped",
        stopped.at.elapsed().as_secs_f64()
    ));
    stopped.finish(cluster).await
}
