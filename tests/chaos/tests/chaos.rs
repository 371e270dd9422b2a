//! The fault scenarios, against the real service binaries (`cargo build --workspace --bins`
//! first; `make test` and `make chaos` do).
//!
//! - `a_short_subset_of_faults_keeps_every_invariant` runs in `make test`: one cluster, scenario
//!   1 for the payment service, 2, 3 and 6, without touching the shared broker or PostgreSQL.
//! - `the_scaled_out_cluster_survives_a_rolling_restart_and_a_killed_instance` is the scaled-out
//!   cluster's short subset: two instances of every service behind the gateway on the shared
//!   broker, at 4 checkouts/s, a rolling restart of order and payment (no client error
//!   allowed), then one instance of every service SIGKILLed. It is ignored (`make chaos` runs
//!   it): on two cores shared with the rest of `make test` its 16 debug processes time out.
//! - The `scenario_*` and `cluster_*` tests are ignored by default; `make chaos` runs them one at
//!   a time, each on a fresh cluster. Scenarios 4 and 5 kill and restart the shared broker and
//!   PostgreSQL server, breaking any other test running at the time; the `cluster_*` ones break
//!   only Kafka nodes of their own.

use std::time::{Duration, Instant};

use bazaar_chaos::cluster::{Cluster, ClusterOptions};
use bazaar_chaos::scale;
use bazaar_chaos::scenarios::{self, ScenarioReport};

/// One cluster at a time: two at once would share two cores and measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn assert_clean(reports: &[ScenarioReport]) {
    let failed: Vec<String> = reports
        .iter()
        .filter(|report| !report.is_clean())
        .map(ScenarioReport::to_text)
        .collect();
    assert!(
        failed.is_empty(),
        "invariants broken:\n{}",
        failed.join("\n")
    );
}

async fn on_a_fresh_cluster<F, Fut>(scenario: F)
where
    F: FnOnce(Cluster) -> Fut,
    Fut: Future<Output = (Cluster, anyhow::Result<ScenarioReport>)>,
{
    on_a_fresh(ClusterOptions::default(), scenario).await;
}

async fn on_a_fresh<F, Fut>(options: ClusterOptions, scenario: F)
where
    F: FnOnce(Cluster) -> Fut,
    Fut: Future<Output = (Cluster, anyhow::Result<ScenarioReport>)>,
{
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(options).await.expect("cluster starts");
    let (cluster, report) = scenario(cluster).await;
    let clean = report.as_ref().is_ok_and(ScenarioReport::is_clean);
    cluster.stop(!clean).await.expect("cluster stops");
    assert_clean(&[report.expect("scenario runs")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_subset_of_faults_keeps_every_invariant() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::default())
        .await
        .expect("cluster starts");
    let mut reports = Vec::new();
    reports.push(
        scenarios::sigkill_each(&mut cluster, &["payment"])
            .await
            .expect("scenario 1"),
    );
    reports.push(
        scenarios::relay_crash(
            &mut cluster,
            &["order", "inventory", "payment"],
            0.2,
            Duration::from_secs(6),
        )
        .await
        .expect("scenario 2"),
    );
    reports.push(
        scenarios::consumer_crash(
            &mut cluster,
            &["inventory", "payment"],
            0.1,
            Duration::from_secs(8),
        )
        .await
        .expect("scenario 3"),
    );
    reports.push(scenarios::poison(&mut cluster).await.expect("scenario 6"));
    let clean = reports.iter().all(ScenarioReport::is_clean);
    cluster.stop(!clean).await.expect("cluster stops");
    println!(
        "short chaos subset: {} scenarios in {:.0}s",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    assert_clean(&reports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn scenario_1_sigkill_each_service_mid_saga() {
    on_a_fresh_cluster(|mut cluster| async move {
        let report = scenarios::sigkill_each(
            &mut cluster,
            &[
                "order",
                "inventory",
                "payment",
                "notification",
                "shipping",
                "product",
                "auth",
            ],
        )
        .await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn scenario_2_relay_crash_after_ack() {
    on_a_fresh_cluster(|mut cluster| async move {
        let report = scenarios::relay_crash(
            &mut cluster,
            &["order", "inventory", "payment", "shipping"],
            0.2,
            Duration::from_secs(20),
        )
        .await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn scenario_3_consumer_crash_after_commit() {
    on_a_fresh_cluster(|mut cluster| async move {
        let report = scenarios::consumer_crash(
            &mut cluster,
            &["order", "inventory", "payment", "notification", "shipping"],
            0.05,
            Duration::from_secs(30),
        )
        .await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos: kills the shared broker"]
async fn scenario_4_broker_killed_and_frozen() {
    on_a_fresh_cluster(|mut cluster| async move {
        let report = scenarios::broker_outage(&mut cluster).await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos: restarts the shared PostgreSQL server"]
async fn scenario_5_postgres_immediate_restart() {
    on_a_fresh_cluster(|mut cluster| async move {
        let report = scenarios::postgres_restart(&mut cluster).await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn scenario_6_poison_messages() {
    on_a_fresh_cluster(|mut cluster| async move {
        let report = scenarios::poison(&mut cluster).await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn scenario_7_payment_gateway_timeouts_and_failures() {
    on_a_fresh_cluster(|mut cluster| async move {
        let report = scenarios::gateway_faults(&mut cluster, Duration::from_secs(20)).await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn scenario_8_replay_everything_from_the_beginning() {
    on_a_fresh_cluster(|mut cluster| async move {
        let report = scenarios::replay_everything(&mut cluster).await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos: 16 debug processes saturate two cores shared with other test runs \
            (checkouts timed out at the gateway even at 4/s); not reliable enough for make test"]
async fn the_scaled_out_cluster_survives_a_rolling_restart_and_a_killed_instance() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::scaled_light())
        .await
        .expect("the scaled-out cluster starts");
    let mut reports = Vec::new();
    reports.push(
        scale::rolling_restart(&mut cluster, &["order", "payment"])
            .await
            .expect("rolling restart"),
    );
    reports.push(
        scale::instance_of_each_killed(&mut cluster)
            .await
            .expect("an instance of every service killed"),
    );
    let clean = reports.iter().all(ScenarioReport::is_clean);
    cluster.stop(!clean).await.expect("cluster stops");
    println!(
        "scaled-out subset: {} scenarios in {:.0}s",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    assert_clean(&reports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn cluster_1_broker_killed_for_good() {
    on_a_fresh(ClusterOptions::scaled(), |mut cluster| async move {
        let report = scale::broker_killed_for_good(&mut cluster).await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn cluster_2_one_instance_of_each_service_killed() {
    on_a_fresh(ClusterOptions::scaled(), |mut cluster| async move {
        let report = scale::instance_of_each_killed(&mut cluster).await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn cluster_3_rolling_restart_of_every_service() {
    on_a_fresh(ClusterOptions::scaled(), |mut cluster| async move {
        let report = scale::rolling_restart(&mut cluster, &bazaar_chaos::cluster::SERVICES).await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn cluster_4_payment_scaled_from_one_to_three_and_back() {
    on_a_fresh(ClusterOptions::scaled(), |mut cluster| async move {
        let report = scale::scale_payment(&mut cluster).await;
        (cluster, report)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "make chaos"]
async fn cluster_5_broker_partitioned_then_healed() {
    on_a_fresh(ClusterOptions::scaled(), |mut cluster| async move {
        let report = scale::broker_partitioned(&mut cluster).await;
        (cluster, report)
    })
    .await;
}
