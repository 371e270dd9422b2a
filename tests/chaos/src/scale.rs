//! Issue 12's scenarios: Bazaar scaled out ([`ClusterOptions::scaled`]: two instances of every
//! service behind the gateway, three Kafka nodes with replication factor 3), under a steady
//! stream of checkouts through the gateway, each ended by the invariant checker.
//!
//! 1. a broker SIGKILLed and never brought back;
//! 2. one instance of every service SIGKILLed at once;
//! 3. a rolling restart, every instance in turn with SIGTERM then start: no client error;
//! 4. the payment service scaled from 1 to 3 instances and back under load;
//! 5. a broker cut off (SIGSTOP) for 20 s, then healed.
//!
//! Besides the checker's verdict each reports what a customer would feel, as figures: the
//! longest pause in the flow of sagas (no order changing status), the slowest checkout → shipped,
//! the slowest checkout answer, client errors, the consumer groups' rebalances (how long each
//! group was not `Stable`, watched from outside by [`GroupWatch`]), and the orders cancelled
//! because their deadline passed.
//!
//! [`ClusterOptions::scaled`]: crate::cluster::ClusterOptions::scaled

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::cluster::{Cluster, GATEWAY, SERVICES, consumed_topics};
use crate::groups::GroupWatch;
use crate::infra::busiest_node;
use crate::load::LoadSettings;
use crate::scenarios::{Run, ScenarioReport, replaced_clients, supervise_for};

/// The consumer groups of the cluster's consuming services, by service.
fn consuming_groups(cluster: &Cluster) -> BTreeMap<&'static str, String> {
    SERVICES
        .into_iter()
        .filter(|service| !consumed_topics(service).is_empty())
        .map(|service| (service, cluster.group_of(service)))
        .collect()
}

fn own_brokers(cluster: &mut Cluster) -> anyhow::Result<&mut crate::infra::KafkaCluster> {
    cluster
        .brokers
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("the cluster has no Kafka nodes of its own"))
}

/// The order database's clock, which stamps every status change.
async fn db_now(cluster: &Cluster) -> anyhow::Result<DateTime<Utc>> {
    let (now,): (DateTime<Utc>,) = sqlx::query_as("SELECT clock_timestamp()")
        .fetch_one(&cluster.pools["order"])
        .await?;
    Ok(now)
}

/// A scenario on the scaled-out cluster: its run, the group watch, and when the fault began.
struct ScaledRun {
    run: Run,
    groups: GroupWatch,
    /// Set when the fault is injected: the window the figures cover starts there.
    fault: Option<(Instant, DateTime<Utc>)>,
}

/// What a scenario expects of its figures; a miss fails it.
#[derive(Debug, Clone, Copy, Default)]
struct Targets {
    /// No checkout refused and no cancellation failing.
    no_client_errors: bool,
    /// No order cancelled because its deadline passed.
    no_timeouts: bool,
}

impl Targets {
    /// Clients see no error and no order is cancelled for timeout.
    const STRICT: Self = Self {
        no_client_errors: true,
        no_timeouts: true,
    };
}

impl ScaledRun {
    /// Starts the load through the gateway and watches the groups; proves that each consuming
    /// service's instances share its partitions before anything breaks.
    async fn start(cluster: &Cluster, name: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cluster.options.gateway && cluster.options.instances > 1,
            "{name} needs the scaled-out cluster (ClusterOptions::scaled)"
        );
        let groups = GroupWatch::start(
            &cluster.kafka,
            consuming_groups(cluster).into_values().collect(),
        )?;
        let mut settings = LoadSettings::default();
        if let Some(rate) = cluster.options.load_rate
            && std::env::var_os("BAZAAR_CHAOS_RATE").is_none()
        {
            settings.rate = rate;
        }
        let mut run = Run::start(cluster, name, settings);
        run.warm_up(20).await?;
        let instances = cluster.options.instances;
        let mut shares = Vec::new();
        for (service, group) in consuming_groups(cluster) {
            groups
                .settled(&group, instances, Duration::from_secs(60))
                .await?;
            let sample = groups
                .latest(&group)
                .ok_or_else(|| anyhow::anyhow!("no look at {group} yet"))?;
            let split: Vec<String> = sample
                .members
                .iter()
                .map(|member| member.partition_count().to_string())
                .collect();
            shares.push(format!("{service} {}", split.join("+")));
        }
        run.note(format!(
            "consumer groups Stable, {instances} members each sharing the partitions: {}",
            shares.join(", ")
        ));
        Ok(Self {
            run,
            groups,
            fault: None,
        })
    }

    async fn fault_now(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        self.fault = Some((Instant::now(), db_now(cluster).await?));
        Ok(())
    }

    fn note(&mut self, note: String) {
        self.run.note(note);
    }

    /// [`Run::recovered`]: `count` orders placed from now on shipped within `within`.
    async fn recovered(
        &mut self,
        cluster: &Cluster,
        count: usize,
        within: Duration,
    ) -> anyhow::Result<()> {
        self.run.recovered(cluster, count, within).await
    }

    /// Stops the load, runs the checker, and adds the figures of the window since the fault.
    async fn finish(
        self,
        cluster: &mut Cluster,
        targets: Targets,
    ) -> anyhow::Result<ScenarioReport> {
        let (fault_at, fault_db) = self
            .fault
            .unwrap_or((self.run.started, db_now(cluster).await?));
        let stopped = self.run.stop_load().await;
        let stop_db = db_now(cluster).await?;
        let tally = stopped.tally.clone();
        let rebalances = self.groups.rebalances(fault_at);
        drop(self.groups);
        let mut scenario = stopped.judge(cluster).await?;
        let saga = saga_figures(cluster, &tally.accepted, fault_db, stop_db).await?;
        let timeouts = scenario
            .final_states
            .get("cancelled/timeout")
            .copied()
            .unwrap_or(0);
        let longest_rebalance: BTreeMap<String, u128> = rebalances
            .iter()
            .map(|(group, stretches)| {
                let service = group.rsplit('-').next().unwrap_or(group).to_owned();
                let longest = stretches.iter().map(|s| s.lasted).max().unwrap_or_default();
                (service, longest.as_millis())
            })
            .collect();
        let rebalance_count: usize = rebalances.values().map(Vec::len).sum();
        scenario.figures = Some(json!({
            "orders": tally.accepted.len(),
            "violations": scenario.report.violations.len(),
            "client_errors": tally.client_errors(),
            "refused": tally.refused,
            "cancel_errors": tally.cancel_errors,
            "slowest_checkout_ms": tally.slowest_checkout.as_millis(),
            "longest_saga_pause_ms": saga.longest_pause.as_millis(),
            "longest_saga_pause_began_s_after_fault": saga.pause_began_after.as_secs_f64(),
            "slowest_checkout_to_shipped_ms": saga.slowest_shipping.as_millis(),
            "typical_checkout_to_shipped_ms": saga.median_shipping.as_millis(),
            "rebalances": rebalance_count,
            "longest_rebalance_ms": longest_rebalance,
            "cancelled_timeout": timeouts,
            "kafka_clients_replaced": replaced_clients(cluster),
        }));
        if targets.no_client_errors && tally.client_errors() > 0 {
            scenario.missed.push(format!(
                "{} client error(s): checkouts {:?}, cancellations {:?}",
                tally.client_errors(),
                tally.refused,
                tally.cancel_errors
            ));
        }
        if targets.no_timeouts && timeouts > 0 {
            scenario.missed.push(format!(
                "{timeouts} order(s) cancelled because their deadline passed"
            ));
        }
        scenario.publish();
        Ok(scenario)
    }
}

/// What the sagas of a window looked like from the order database.
#[derive(Debug, Default)]
struct SagaFigures {
    /// The longest stretch in which no order of the load changed status.
    longest_pause: Duration,
    /// When it began, from the fault.
    pause_began_after: Duration,
    /// Checkout → `shipping_scheduled`, for orders placed in the window: the slowest and the
    /// median.
    slowest_shipping: Duration,
    median_shipping: Duration,
}

async fn saga_figures(
    cluster: &Cluster,
    accepted: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<SagaFigures> {
    let pool = &cluster.pools["order"];
    let changes: Vec<(DateTime<Utc>,)> = sqlx::query_as(
        "SELECT at FROM order_status_history
          WHERE order_id::text = ANY($1) AND status <> 'pending' AND at BETWEEN $2 AND $3
          ORDER BY at",
    )
    .bind(accepted)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut figures = SagaFigures::default();
    let mut previous = from;
    for (at,) in changes.iter().chain(std::iter::once(&(to,))) {
        let gap = (*at - previous).to_std().unwrap_or_default();
        if gap > figures.longest_pause {
            figures.longest_pause = gap;
            figures.pause_began_after = (previous - from).to_std().unwrap_or_default();
        }
        previous = *at;
    }
    let mut shipping: Vec<f64> = sqlx::query_as::<_, (f64,)>(
        "SELECT EXTRACT(EPOCH FROM (h.at - o.created_at))::float8
           FROM orders o JOIN order_status_history h ON h.order_id = o.id
          WHERE o.id::text = ANY($1) AND h.status = 'shipping_scheduled'
            AND o.created_at BETWEEN $2 AND $3",
    )
    .bind(accepted)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(seconds,)| seconds)
    .collect();
    shipping.sort_by(f64::total_cmp);
    let at = |share: f64| {
        shipping
            .get(((shipping.len() as f64 - 1.0) * share).round() as usize)
            .map_or(Duration::ZERO, |seconds| {
                Duration::from_secs_f64(seconds.max(0.0))
            })
    };
    figures.slowest_shipping = at(1.0);
    figures.median_shipping = at(0.5);
    Ok(figures)
}

/// Cluster scenario 1: the broker leading the most partitions is SIGKILLed and never comes back.
/// Its partitions' leadership moves to the other two (both in every ISR, so min.insync.replicas
/// 2 still holds), and orders keep flowing.
pub async fn broker_killed_for_good(cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
    let mut run = ScaledRun::start(
        cluster,
        "cluster 1. one Kafka broker SIGKILLed, never restarted",
    )
    .await?;
    let node = busiest_node(&cluster.kafka).await?;
    let pending = cluster.pending_orders().await;
    run.fault_now(cluster).await?;
    own_brokers(cluster)?.kill(node)?;
    run.note(format!(
        "Kafka node {node} (leader of the most partitions) SIGKILLed with {pending} order(s) pending; it stays dead"
    ));
    run.recovered(cluster, 20, Duration::from_secs(120)).await?;
    // Orders keep flowing on two brokers.
    supervise_for(cluster, Duration::from_secs(15)).await?;
    run.finish(cluster, Targets::STRICT).await
}

/// Cluster scenario 2: one instance of every service SIGKILLed at the same moment. The other
/// takes over its partitions (after the 10 s session timeout), its relay's lock, its leased
/// payments and e-mails, and every HTTP request.
pub async fn instance_of_each_killed(cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
    let mut run = ScaledRun::start(
        cluster,
        "cluster 2. one instance of every service SIGKILLed at once",
    )
    .await?;
    let victims: Vec<String> = SERVICES
        .into_iter()
        .map(|service| cluster.instances[service][0].clone())
        .collect();
    let pending = cluster.pending_orders().await;
    run.fault_now(cluster).await?;
    let killed = Instant::now();
    for victim in &victims {
        cluster.process(victim).kill()?;
    }
    run.note(format!(
        "SIGKILLed {} with {pending} order(s) pending",
        victims.join(", ")
    ));
    for (service, group) in consuming_groups(cluster) {
        run.groups
            .settled(&group, 1, Duration::from_secs(60))
            .await?;
        let sample = run
            .groups
            .latest(&group)
            .ok_or_else(|| anyhow::anyhow!("no look at {group} yet"))?;
        run.note(format!(
            "{service}: the survivor holds all {} partitions {:.1}s after the kill",
            sample.members[0].partition_count(),
            killed.elapsed().as_secs_f64()
        ));
    }
    run.recovered(cluster, 20, Duration::from_secs(120)).await?;
    // The survivors carry the load alone for a while, then the dead come back.
    supervise_for(cluster, Duration::from_secs(10)).await?;
    for victim in &victims {
        cluster.process(victim).start()?;
    }
    for victim in &victims {
        cluster.wait_ready(victim, Duration::from_secs(90)).await?;
    }
    for group in consuming_groups(cluster).into_values() {
        run.groups
            .settled(&group, cluster.options.instances, Duration::from_secs(60))
            .await?;
    }
    run.note(format!(
        "restarted; every group back to {} members {:.1}s after the kill",
        cluster.options.instances,
        killed.elapsed().as_secs_f64()
    ));
    run.recovered(cluster, 10, Duration::from_secs(60)).await?;
    run.finish(
        cluster,
        Targets {
            no_client_errors: false,
            no_timeouts: true,
        },
    )
    .await
}

/// How many times the gateway has put the instance at `base_url` back into its rotation.
fn back_in_rotation(cluster: &Cluster, base_url: &str) -> usize {
    let log = std::fs::read_to_string(cluster.processes[GATEWAY].log_path()).unwrap_or_default();
    log.lines()
        .filter(|line| line.contains("back in the rotation") && line.contains(base_url))
        .count()
}

/// Cluster scenario 3: a rolling restart. Every instance of every service in turn gets SIGTERM
/// (it drains: unready, connections closed after each answer, then it stops accepting and
/// finishes what it has), is started again, and is back in service (ready, back in the
/// gateway's rotation, its group Stable with every member) before the next one goes. Clients
/// must see no error at all.
pub async fn rolling_restart(
    cluster: &mut Cluster,
    services: &[&'static str],
) -> anyhow::Result<ScenarioReport> {
    let mut run = ScaledRun::start(
        cluster,
        &format!(
            "cluster 3. rolling restart (SIGTERM, start), one instance at a time: {}",
            services.join(", ")
        ),
    )
    .await?;
    run.fault_now(cluster).await?;
    let groups = consuming_groups(cluster);
    let mut restarts = Vec::new();
    for service in services {
        for label in cluster.instances[service].clone() {
            let began = Instant::now();
            let base_url = cluster.processes[&label].base_url();
            let rotations = back_in_rotation(cluster, &base_url);
            let process = cluster.process(&label);
            tokio::task::block_in_place(|| process.terminate(Duration::from_secs(30)))?;
            let stopped_after = began.elapsed();
            cluster.process(&label).start()?;
            cluster.wait_ready(&label, Duration::from_secs(90)).await?;
            // The gateway balances over the services it routes to (not payment): wait until it
            // sends this instance requests again.
            if *service != "payment" {
                let deadline = Instant::now() + Duration::from_secs(30);
                while back_in_rotation(cluster, &base_url) <= rotations {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "the gateway did not put {label} back into its rotation within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if let Some(group) = groups.get(service) {
                run.groups
                    .settled(group, cluster.options.instances, Duration::from_secs(60))
                    .await?;
            }
            restarts.push(format!(
                "{label} {:.1}s (stopped after {:.1}s)",
                began.elapsed().as_secs_f64(),
                stopped_after.as_secs_f64()
            ));
        }
    }
    run.note(format!("restarted in turn: {}", restarts.join(", ")));
    run.recovered(cluster, 10, Duration::from_secs(60)).await?;
    run.finish(cluster, Targets::STRICT).await
}

/// Cluster scenario 4: the payment service (a consumer of two topics, and the charging worker)
/// scaled from one instance to three and back to one under load; each step waits for its group
/// to be Stable with every member holding partitions. No charge, refund or e-mail may happen
/// twice; the sagas may stall no longer than a rebalance.
pub async fn scale_payment(cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
    let service = "payment";
    let mut run = ScaledRun::start(
        cluster,
        "cluster 4. payment scaled from 1 to 3 instances and back to 1 under load",
    )
    .await?;
    let group = cluster.group_of(service);
    let mut steps = Vec::new();
    let labels = cluster.instances[service].clone();
    // Down to one.
    for label in &labels[1..] {
        let process = cluster.process(label);
        tokio::task::block_in_place(|| process.terminate(Duration::from_secs(30)))?;
    }
    run.groups
        .settled(&group, 1, Duration::from_secs(60))
        .await?;
    supervise_for(cluster, Duration::from_secs(10)).await?;
    run.fault_now(cluster).await?;
    // Up to three.
    let step = Instant::now();
    for label in &labels[1..] {
        cluster.process(label).start()?;
    }
    let mut running = labels.len();
    while running < 3 {
        cluster.add_instance(service).await?;
        running += 1;
    }
    for label in &cluster.instances[service].clone() {
        cluster.wait_ready(label, Duration::from_secs(90)).await?;
    }
    run.groups
        .settled(&group, 3, Duration::from_secs(60))
        .await?;
    steps.push(format!(
        "1 → 3 instances: group Stable with 3 members {:.1}s after the starts",
        step.elapsed().as_secs_f64()
    ));
    supervise_for(cluster, Duration::from_secs(15)).await?;
    // Back to one.
    let step = Instant::now();
    for label in &cluster.instances[service].clone()[1..] {
        let process = cluster.process(label);
        tokio::task::block_in_place(|| process.terminate(Duration::from_secs(30)))?;
    }
    run.groups
        .settled(&group, 1, Duration::from_secs(60))
        .await?;
    steps.push(format!(
        "3 → 1: group Stable with 1 member {:.1}s after the first SIGTERM",
        step.elapsed().as_secs_f64()
    ));
    supervise_for(cluster, Duration::from_secs(10)).await?;
    // And back to the cluster's two.
    let second = cluster.instances[service][1].clone();
    cluster.process(&second).start()?;
    cluster.wait_ready(&second, Duration::from_secs(90)).await?;
    run.groups
        .settled(&group, 2, Duration::from_secs(60))
        .await?;
    for step in steps {
        run.note(step);
    }
    let rebalances: Vec<String> = run
        .groups
        .rebalances(run.fault.map_or(run.run.started, |(at, _)| at))
        .get(&group)
        .map(|stretches| {
            stretches
                .iter()
                .map(|stretch| format!("{:.1}s", stretch.lasted.as_secs_f64()))
                .collect()
        })
        .unwrap_or_default();
    run.note(format!(
        "payment group rebalances: {}",
        rebalances.join(", ")
    ));
    run.recovered(cluster, 10, Duration::from_secs(60)).await?;
    run.finish(cluster, Targets::STRICT).await
}

/// Cluster scenario 5: the broker leading the most partitions is cut off from everyone (SIGSTOP:
/// its connections stay open, nothing answers) for 20 s, past its 4 s session with the
/// controllers, then healed. The others fence it and take over; it comes back as a follower.
pub async fn broker_partitioned(cluster: &mut Cluster) -> anyhow::Result<ScenarioReport> {
    let mut run = ScaledRun::start(
        cluster,
        "cluster 5. one Kafka broker cut off (SIGSTOP) for 20 s, then healed",
    )
    .await?;
    let node = busiest_node(&cluster.kafka).await?;
    let pending = cluster.pending_orders().await;
    run.fault_now(cluster).await?;
    own_brokers(cluster)?.pause(node)?;
    // The deliberate partition.
    supervise_for(cluster, Duration::from_secs(20)).await?;
    own_brokers(cluster)?.resume(node)?;
    run.note(format!(
        "Kafka node {node} (leader of the most partitions) frozen for 20 s with {pending} order(s) pending, then continued"
    ));
    run.recovered(cluster, 20, Duration::from_secs(120)).await?;
    supervise_for(cluster, Duration::from_secs(10)).await?;
    run.finish(cluster, Targets::STRICT).await
}
