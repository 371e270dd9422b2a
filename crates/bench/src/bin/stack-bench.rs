//! The headline benchmark: the real deployment, measured from outside.
//!
//! Drives a running Bazaar (the processes `scripts/run.sh --release` starts; `make bench`
//! starts them) only through the gateway, as customers would: an open-loop checkout load at a
//! ramp of rates until the knee, with part of the customers following their order's event
//! stream as the storefront does. For each rate it reports orders placed and errors, checkout →
//! 202, checkout → `paid` as seen on the stream, sustained `paid`/s and `shipping_scheduled`/s,
//! the consumer groups' lag when the load stops and how long it takes to drain, and CPU
//! milliseconds per order for each process of the stack, read from /proc. It also measures the
//! stack at idle, the transactions and statements each service's database spends per checkout
//! (pg_stat_statements), and the machine's floors (Kafka's EndToEndLatency, pgbench), then
//! writes docs/benchmarks.md, a JSON of the figures, and an SVG chart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use bazaar_bench::cpu::{self, Probe, Tracked};
use bazaar_bench::lag::LagProbe;
use bazaar_bench::load::{self, Customer, Flow, Gateway, LoadShape};
use bazaar_bench::pg::{self, Counters, Stats};
use bazaar_bench::report::{
    self, IdleReport, RateReport, RunReport, ServiceStatements, StatementReport,
};
use bazaar_bench::stalls::LogMarks;
use bazaar_bench::{Percentiles, kafka_end_to_end_latency};
use chrono::{DateTime, Utc};
use clap::Parser;
use procfs::Current as _;
use sqlx::PgPool;
use uuid::Uuid;

/// Benchmark a running Bazaar through its gateway: an open-loop checkout ramp until the knee,
/// checkout → paid as customers see it on the order's event stream, consumer lag, CPU per order
/// per process (from /proc), idle CPU, statements per checkout, and the machine's floors.
///
/// `make bench` builds the release binaries, starts the stack as `make run RELEASE=1` does,
/// runs this, and stops the services again. To measure a stack you started yourself (for
/// instance another checkout's build: `scripts/run.sh --release --detach --bin-dir DIR`), run
/// this binary directly.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// The order service's metrics: before the idle window the bench waits for its
    /// `order_event_streams_open` to reach 0 (a stream whose customer left is found out by the
    /// second keep-alive written into its closed connection: 30-60 s later).
    #[arg(long, default_value = "http://127.0.0.1:8083/metrics")]
    order_metrics: String,
    /// The checkout whose scripts started the stack: its run directory holds the pid files
    /// (`<repo>/.run/pids`, or BAZAAR_RUN_DIR), its infra/kafka/kafkactl.sh runs Kafka's tools.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// The run directory, if not `<repo>/.run`.
    #[arg(long, env = "BAZAAR_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Where the stack's binaries are (`auth-service create-admin` makes the admin that raises
    /// the stock). Default: the release target directory.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Offered checkout rates, per second, in order; the ramp stops after the first rate past
    /// the knee (see --no-stop).
    #[arg(long, value_delimiter = ',', default_values_t = [10.0, 25.0, 50.0, 100.0, 200.0, 300.0, 400.0])]
    rates: Vec<f64>,
    /// Seconds of load per rate.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of load before the ramp, not counted. Kafka's broker is a JVM that compiles its
    /// hot paths in its first minutes under load: right after a restart it spent 44 ms of CPU
    /// per order at 10/s, and 22 ms at the same rate two minutes later. The warm-up's own cost
    /// is reported in the notes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    warm_up_seconds: u64,
    /// Offered checkouts per second during the warm-up.
    #[arg(long, default_value_t = 25.0)]
    warm_up_rate: f64,
    /// Run every rate even past the knee.
    #[arg(long)]
    no_stop: bool,
    /// After the ramp, hold this rate for --sustain-seconds (the 300/s for 60 s).
    #[arg(long)]
    sustain_rate: Option<f64>,
    #[arg(long, default_value_t = 60)]
    sustain_seconds: u64,
    /// Customers (registered and logged in once, through the gateway, all from one address:
    /// `make bench` lifts the auth service's limit of registrations per address; a stack
    /// started otherwise allows 20 in 10 minutes).
    #[arg(long, default_value_t = 20)]
    customers: usize,
    /// Share of checkouts whose customer follows the order's event stream, as the storefront
    /// does (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    watch_share: f64,
    /// SKUs ordered, one line of one unit per order, in turn (their stock is raised first).
    #[arg(long, value_delimiter = ',', default_values_t = ["TEE-BLK-M".to_string(), "TEE-BLK-L".to_string(), "TOTE-NAT".to_string()])]
    skus: Vec<String>,
    /// A rate is past the knee when its p50 checkout → paid exceeds this many times the first
    /// rate's (or it has errors, paid/s below 90 % of offered, or lag not drained in 30 s).
    #[arg(long, default_value_t = 3.0)]
    knee_p50_factor: f64,
    /// Seconds without load, after the ramp, in which the idle CPU is measured (0 skips it).
    /// From 20 on, the first 11 are a settle that is not counted: the last commits and
    /// PostgreSQL's statistics arriving.
    #[arg(long, default_value_t = 31)]
    idle_seconds: u64,
    /// Orders placed for the statement counts (0 skips them).
    #[arg(long, default_value_t = 200)]
    statement_orders: usize,
    /// Rate of the statement-count orders, per second.
    #[arg(long, default_value_t = 20.0)]
    statement_rate: f64,
    /// Skip Kafka's EndToEndLatency and pgbench.
    #[arg(long)]
    skip_floors: bool,
    /// How long to wait after the load for the lag to drain and every order to be final.
    #[arg(long, default_value_t = 120)]
    drain_timeout: u64,
    /// How long one customer follows an order's stream before giving up.
    #[arg(long, default_value_t = 60)]
    stream_timeout: u64,
    #[arg(
        long,
        env = "BAZAAR__KAFKA__BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    kafka: String,
    #[arg(long, env = "BAZAAR__KAFKA__TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// The services' consumer groups.
    #[arg(long, value_delimiter = ',', default_values_t = ["bazaar-order".to_string(), "bazaar-inventory".to_string(), "bazaar-payment".to_string(), "bazaar-notification".to_string(), "bazaar-shipping".to_string()])]
    groups: Vec<String>,
    /// The topics they consume (without the prefix).
    #[arg(long, value_delimiter = ',', default_values_t = ["user-events".to_string(), "product-snapshots".to_string(), "order-events".to_string(), "inventory-events".to_string(), "payment-events".to_string(), "shipment-events".to_string()])]
    topics: Vec<String>,
    /// The order service's database, read only (statuses of the orders placed).
    #[arg(
        long,
        default_value = "postgres://bazaar_order:bazaar_order@127.0.0.1:5432/bazaar_order"
    )]
    order_db: String,
    /// Statistics reader (pg_read_all_stats, may reset pg_stat_statements): `pgctl.sh start`
    /// provisions it.
    #[arg(
        long,
        default_value = "postgres://bazaar_bench:bazaar_bench@127.0.0.1:5432/postgres"
    )]
    stats_db: String,
    /// Role that may create the scratch database pgbench runs in.
    #[arg(
        long,
        default_value = "postgres://bazaar_admin:bazaar_admin@127.0.0.1:5432/postgres"
    )]
    admin_db: String,
    /// PostgreSQL's port (its postmaster is found as the process listening there).
    #[arg(long, default_value_t = 5432)]
    pg_port: u16,
    /// Kafka's port (used when the run directory has no live kafka.pid).
    #[arg(long, default_value_t = 9092)]
    kafka_port: u16,
    /// Name of this run in the report, e.g. "before (5d73bb7)".
    #[arg(long)]
    label: Option<String>,
    /// The commit the stack's binaries were built from (default: the --repo checkout's HEAD;
    /// give it when the stack runs another checkout's build).
    #[arg(long)]
    commit: Option<String>,
    /// The markdown report; the chart is written beside it (benchmarks.svg).
    #[arg(long, default_value = "docs/benchmarks.md")]
    report: PathBuf,
    /// The figures as JSON (what --before reads).
    #[arg(long, default_value = "docs/benchmarks.json")]
    json: PathBuf,
    /// An earlier run's JSON to put beside this one (before/after tables, dashed in the chart).
    #[arg(long)]
    before: Option<PathBuf>,
}

/// The broker's label among the tracked processes; a cluster's brokers are "Kafka #1", ….
const KAFKA: &str = "Kafka";

const SERVICES: [(&str, &str); 10] = [
    ("gateway", "gateway"),
    ("auth", "auth"),
    ("product", "product"),
    ("order", "order"),
    ("inventory", "inventory"),
    ("payment", "payment"),
    ("notification", "notification"),
    ("shipping", "shipping"),
    ("registry", "schema registry"),
    ("payment-gateway", "payment-gateway simulator"),
];

const DATABASES: [&str; 8] = [
    "bazaar_auth",
    "bazaar_product",
    "bazaar_order",
    "bazaar_inventory",
    "bazaar_payment",
    "bazaar_notification",
    "bazaar_shipping",
    "bazaar_registry",
];

struct Bench {
    args: Args,
    /// The services' logs, read for the slow statements of each rate.
    log_dir: PathBuf,
    gateway: Gateway,
    customers: Arc<Vec<Customer>>,
    probe: Probe,
    lag: Arc<LagProbe>,
    order_db: PgPool,
}

fn say(text: impl std::fmt::Display) {
    println!("==> {text}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.rates.is_empty(), "--rates is empty");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.watch_share),
        "--watch-share must be between 0 and 1"
    );
    anyhow::ensure!(args.customers > 0, "--customers must be at least 1");
    anyhow::ensure!(
        args.rates
            .iter()
            .chain([&args.warm_up_rate])
            .all(|rate| *rate > 0.0),
        "--rates and --warm-up-rate must be above 0"
    );
    let repo = std::fs::canonicalize(&args.repo)
        .with_context(|| format!("--repo {}", args.repo.display()))?;
    let run_dir = args.run_dir.clone().unwrap_or_else(|| repo.join(".run"));
    let bin_dir = args.bin_dir.clone().unwrap_or_else(default_bin_dir);
    let started = Instant::now();

    let gateway = Gateway::new(&args.gateway)?;
    say(format!("waiting for the gateway at {}", args.gateway));
    gateway.wait_ready(Duration::from_secs(60)).await?;

    let probe = find_processes(&args, &run_dir)?;
    for tracked in &probe.processes {
        println!("    {:<40} pid {}", tracked.label, tracked.pid);
    }
    println!(
        "    {:<40} pid {}",
        "PostgreSQL postmaster",
        probe.postmaster.map_or("?".into(), |p| p.to_string())
    );
    let topics: Vec<String> = args
        .topics
        .iter()
        .map(|t| format!("{}{t}", args.topic_prefix))
        .collect();
    let lag = Arc::new({
        let (kafka, groups) = (args.kafka.clone(), args.groups.clone());
        tokio::task::spawn_blocking(move || LagProbe::new(&kafka, &groups, &topics)).await??
    });
    let order_db = pg::read_only_pool(&args.order_db)
        .await
        .with_context(|| format!("connecting to the order database ({})", args.order_db))?;

    say("raising the stock of the SKUs ordered (an admin made with auth-service create-admin)");
    let admin = make_admin(&gateway, &bin_dir, &repo).await?;
    for sku in &args.skus {
        gateway.set_stock(&admin, sku, 1_000_000_000).await?;
    }
    say(format!(
        "registering and logging in {} customers",
        args.customers
    ));
    let mut customers = Vec::new();
    let run = Uuid::now_v7().simple().to_string();
    for n in 0..args.customers {
        let email = format!("bench-{n}-{run}@example.com");
        customers.push(
            gateway
                .login(&email, "correct horse battery staple", true)
                .await?,
        );
    }
    let mut bench = Bench {
        args,
        log_dir: run_dir.join("logs"),
        gateway,
        customers: Arc::new(customers),
        probe,
        lag,
        order_db,
    };

    let (warm_up_rate, warm_up_seconds) = (bench.args.warm_up_rate, bench.args.warm_up_seconds);
    say(format!(
        "warm-up: {warm_up_seconds} s at {warm_up_rate}/s, each order followed to a final status; not counted"
    ));
    let warm = bench
        .run_rate(warm_up_rate, Duration::from_secs(warm_up_seconds), false)
        .await?;
    anyhow::ensure!(
        warm.error_count == 0 && warm.open_at_deadline == 0,
        "the warm-up failed: {:?} errors, {} orders not final",
        warm.errors,
        warm.open_at_deadline
    );

    let stats = match Stats::connect(
        &bench.args.stats_db,
        DATABASES.iter().map(|d| (*d).to_owned()).collect(),
    )
    .await
    {
        Ok(stats) => match stats.available().await {
            Ok(()) => Some(stats),
            Err(error) => {
                println!(
                    "    pg_stat_statements is not available ({error}); statement counts skipped. \
                     `infra/postgres/pgctl.sh restart` loads it once."
                );
                None
            }
        },
        Err(error) => {
            println!(
                "    cannot connect as the statistics reader ({error}); statement counts skipped. \
                 `infra/postgres/pgctl.sh start` provisions role bazaar_bench."
            );
            None
        }
    };

    let mut notes = vec![format!(
        "Warm-up before the ramp, not counted: {} checkouts at {warm_up_rate}/s over {warm_up_seconds} s, \
         at {:.1} ms of the stack's CPU per order, Kafka {:.1} ms of it. A broker just started compiles its hot \
         paths under its first minutes of load, so this is the cold cost: the rates below measure a broker \
         past it.",
        warm.placed,
        warm.cpu_total_ms_per_order,
        warm.cpu_ms_per_order
            .iter()
            .filter(|(label, _)| label.starts_with(KAFKA))
            .map(|(_, ms)| ms)
            .sum::<f64>(),
    )];
    let mut rates = Vec::new();
    let mut first_p50: Option<f64> = None;
    let rate_list = bench.args.rates.clone();
    for offered in rate_list {
        bench.refresh_tokens().await?;
        say(format!(
            "offering {offered:.0} checkouts/s for {} s",
            bench.args.seconds
        ));
        let mut result = bench
            .run_rate(offered, Duration::from_secs(bench.args.seconds), true)
            .await?;
        let p50 = result.paid_on_stream.map(|p| p.p50);
        if first_p50.is_none() {
            first_p50 = p50;
        }
        result.past_knee = past_knee(&result, first_p50, bench.args.knee_p50_factor);
        print_rate(&result);
        let past = !result.past_knee.is_empty();
        if past {
            println!("    past the knee: {}", result.past_knee.join("; "));
        }
        let drained = result.lag_drain_s.is_some() && result.open_at_deadline == 0;
        rates.push(result);
        if past && !bench.args.no_stop {
            println!("    stopping the ramp");
            break;
        }
        if !drained {
            println!("    the stack did not drain; stopping the ramp");
            break;
        }
    }
    let knee = rates
        .iter()
        .take_while(|r| r.past_knee.is_empty())
        .map(|r| r.offered)
        .last();

    let sustain = match bench.args.sustain_rate {
        Some(rate) => {
            bench.refresh_tokens().await?;
            say(format!(
                "sustaining {rate:.0} checkouts/s for {} s",
                bench.args.sustain_seconds
            ));
            let mut result = bench
                .run_rate(rate, Duration::from_secs(bench.args.sustain_seconds), true)
                .await?;
            result.past_knee = past_knee(&result, first_p50, bench.args.knee_p50_factor);
            print_rate(&result);
            Some(result)
        }
        None => None,
    };

    // Idle after the load, not before it: a broker started a minute earlier still compiles its
    // hot paths (Kafka burnt 6.6 % of a core idle 90 s after its start, 2.5 % four minutes on).
    let idle = if bench.args.idle_seconds > 0 {
        Some(bench.idle(stats.as_ref()).await?)
    } else {
        None
    };
    let idle_counters = idle
        .as_ref()
        .map(|(_, counters, seconds)| (counters.clone(), *seconds));
    let idle = idle.map(|(report, _, _)| report);

    let statements = match (&stats, bench.args.statement_orders) {
        (Some(stats), orders) if orders > 0 => {
            Some(bench.statements(stats, idle_counters.as_ref()).await?)
        }
        _ => None,
    };

    let floors = if bench.args.skip_floors {
        report::Floors::default()
    } else {
        say("floors: Kafka's EndToEndLatency and pgbench");
        floors(&bench.args, &repo).await
    };

    let (load_now, rustc_now) = cpu::machine_load();
    notes.push(format!(
        "Machine load at the end: {load_now:.2} (1-minute average), {rustc_now} rustc processes running. \
         The machine is shared: other people's builds and tests (and their use of the same Kafka broker and \
         PostgreSQL server) add noise; PostgreSQL backends of other databases are left out, Kafka cannot be split."
    ));
    if let Some(stats) = &stats
        && let Ok(count) = stats.database_count().await
    {
        notes.push(format!(
            "Databases on the PostgreSQL server: {count} (Bazaar's own are 8; `make bench` drops test databases \
             more than an hour old first). Each costs the autovacuum launcher a worker start a minute: 1,500 left \
             by test runs kept it at ~5 % of a core."
        ));
    }
    notes.push(
        "PostgreSQL's CPU counts the postmaster and its children that existed at both ends of a window: \
         short-lived connections and autovacuum workers are missed."
            .into(),
    );
    notes.push(
        "Consumer lag is read from the groups' committed offsets, which the services commit every 500 ms: \
         \"lag → 0\" has that resolution."
            .into(),
    );
    notes.push(
        "The payment-gateway simulator (the card processor; Stripe in production) and the load generator are \
         measured but left out of the stack's total."
            .into(),
    );
    notes.push(format!(
        "Whole run: {:.0} s.",
        started.elapsed().as_secs_f64()
    ));

    let commit = bench
        .args
        .commit
        .clone()
        .unwrap_or_else(|| git_commit(&repo));
    let report = RunReport {
        label: bench.args.label.clone().unwrap_or_else(|| {
            format!(
                "{} ({commit})",
                if bench.args.before.is_some() {
                    "after"
                } else {
                    "run"
                }
            )
        }),
        commit,
        date: Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        command: std::env::var("BAZAAR_BENCH_COMMAND")
            .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" ")),
        machine: machine(),
        customers: bench.args.customers,
        watch_share: bench.args.watch_share,
        seconds_per_rate: bench.args.seconds as f64,
        idle,
        statements,
        rates,
        sustain,
        knee,
        floors,
        notes,
    };
    write_report(&bench.args, &report)?;
    Ok(())
}

fn default_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BAZAAR_BIN_DIR")
        && !dir.is_empty()
    {
        return PathBuf::from(dir);
    }
    let target = std::env::var("BAZAAR_RELEASE_TARGET_DIR").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/bazaar/target-release")
    });
    Path::new(&target).join("release")
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn find_processes(args: &Args, run_dir: &Path) -> anyhow::Result<Probe> {
    let pids = run_dir.join("pids");
    let mut processes = Vec::new();
    // `scripts/run.sh --cluster` runs several instances (`order-1.pid`, `order-2.pid`) and
    // several brokers (`kafka-1.pid`...): each is tracked, as `<label> #i`.
    let instances = |name: &str| -> Vec<(usize, i32)> {
        (1..=9)
            .filter_map(|i| {
                read_pid(&pids.join(format!("{name}-{i}.pid")))
                    .filter(|pid| cpu::alive(*pid))
                    .map(|pid| (i, pid))
            })
            .collect()
    };
    for (name, label) in SERVICES {
        let file = pids.join(format!("{name}.pid"));
        if let Some(pid) = read_pid(&file).filter(|pid| cpu::alive(*pid)) {
            processes.push(Tracked {
                label: label.to_owned(),
                pid,
                in_total: name != "payment-gateway",
            });
            continue;
        }
        let several = instances(name);
        anyhow::ensure!(
            !several.is_empty(),
            "no live process for {name} ({}): start the stack with `scripts/run.sh --release --detach` \
             (or pass --repo / --run-dir of the checkout that started it)",
            file.display()
        );
        for (i, pid) in several {
            processes.push(Tracked {
                label: format!("{label} #{i}"),
                pid,
                in_total: name != "payment-gateway",
            });
        }
    }
    let kafka = read_pid(&pids.join("kafka.pid")).filter(|pid| cpu::alive(*pid));
    let nodes = instances("kafka");
    if kafka.is_none() && !nodes.is_empty() {
        for (i, pid) in nodes {
            processes.push(Tracked {
                label: format!("{KAFKA} #{i}"),
                pid,
                in_total: true,
            });
        }
    } else {
        let kafka = kafka
            .or_else(|| cpu::pid_listening_on(args.kafka_port))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no Kafka broker found (kafka.pid, kafka-N.pid, or a listener on :{})",
                    args.kafka_port
                )
            })?;
        processes.push(Tracked {
            label: KAFKA.into(),
            pid: kafka,
            in_total: true,
        });
    }
    processes.push(Tracked {
        label: "load generator (this benchmark)".into(),
        pid: std::process::id() as i32,
        in_total: false,
    });
    let postmaster = cpu::pid_listening_on(args.pg_port);
    if postmaster.is_none() {
        println!(
            "    PostgreSQL's postmaster not found (no listener on :{} visible): its CPU is not measured",
            args.pg_port
        );
    }
    Ok(Probe::new(
        processes,
        postmaster,
        DATABASES.iter().map(|d| (*d).to_owned()).collect(),
    ))
}

async fn make_admin(gateway: &Gateway, bin_dir: &Path, repo: &Path) -> anyhow::Result<Customer> {
    let email = format!("bench-admin-{}@example.com", Uuid::now_v7().simple());
    let password = format!("bench-{}", Uuid::new_v4().simple());
    let binary = bin_dir.join("auth-service");
    let output = {
        let (command, email, password, repo) = (
            binary.clone(),
            email.clone(),
            password.clone(),
            repo.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(&command)
                .args(["create-admin", "--email", &email, "--name", "Bench admin"])
                .env("BAZAAR_ADMIN_PASSWORD", &password)
                .current_dir(&repo)
                .output()
        })
        .await?
        .with_context(|| format!("running {} (set --bin-dir)", binary.display()))?
    };
    anyhow::ensure!(
        output.status.success(),
        "auth-service create-admin failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    gateway.login(&email, &password, false).await
}

fn past_knee(rate: &RateReport, first_p50: Option<f64>, factor: f64) -> Vec<String> {
    let mut reasons = Vec::new();
    if rate.error_count > 0 {
        reasons.push(format!("{} errors", rate.error_count));
    }
    if rate.paid_per_s < 0.9 * rate.offered {
        reasons.push(format!(
            "{:.1} paid/s is below 90 % of the {:.0} offered",
            rate.paid_per_s, rate.offered
        ));
    }
    match rate.lag_drain_s {
        Some(drain) if drain <= 30.0 => {}
        Some(drain) => reasons.push(format!("lag took {drain:.0} s to drain")),
        None => reasons.push("lag did not drain".into()),
    }
    if let (Some(first), Some(p)) = (first_p50, rate.paid_on_stream)
        && p.p50 > factor * first
    {
        reasons.push(format!(
            "p50 to paid {:.0} ms is more than {factor} × the first rate's {first:.0} ms",
            p.p50
        ));
    }
    reasons
}

fn print_rate(r: &RateReport) {
    let lag: i64 = r.lag_at_end.values().sum();
    println!(
        "    placed {} of {}, errors {}, late sends {} (max {:.0} ms)",
        r.placed, r.scheduled, r.error_count, r.late_sends, r.max_late_ms
    );
    for (kind, n) in &r.errors {
        println!("      {n} × {kind}");
    }
    let p = |p: Option<Percentiles>| {
        p.map_or("–".into(), |p| {
            format!("p50 {:.1} / p95 {:.1} / p99 {:.1} ms", p.p50, p.p95, p.p99)
        })
    };
    println!("    checkout → 202: {}", p(r.accept));
    println!(
        "    checkout → paid on the stream ({} watched): {}",
        r.watched,
        p(r.paid_on_stream)
    );
    println!(
        "    paid {:.1}/s, shipping_scheduled {:.1}/s in the window; lag at end {lag} ({:?}); lag → 0 after {}; all final after {}",
        r.paid_per_s,
        r.shipped_per_s,
        r.lag_at_end,
        r.lag_drain_s.map_or("–".into(), |s| format!("{s:.1} s")),
        r.final_after_s.map_or("–".into(), |s| format!("{s:.1} s")),
    );
    let mut by_cost: Vec<(&String, &f64)> = r
        .cpu_ms_per_order
        .iter()
        .filter(|(label, _)| cpu::counts_in_total(label))
        .collect();
    by_cost.sort_by(|a, b| b.1.total_cmp(a.1));
    let parts: Vec<String> = by_cost
        .iter()
        .filter(|(_, ms)| **ms >= 0.05)
        .map(|(label, ms)| format!("{label} {ms:.2}"))
        .collect();
    println!(
        "    CPU {:.2} ms/order ({:.2} cores): {}",
        r.cpu_total_ms_per_order,
        r.cpu_cores,
        parts.join(", ")
    );
}

impl Bench {
    async fn refresh_tokens(&mut self) -> anyhow::Result<()> {
        if self
            .customers
            .iter()
            .all(|c| c.since.elapsed() < Duration::from_secs(600))
        {
            return Ok(());
        }
        let mut fresh = Vec::with_capacity(self.customers.len());
        for customer in self.customers.iter() {
            fresh.push(self.gateway.refresh(customer).await?);
        }
        self.customers = Arc::new(fresh);
        Ok(())
    }

    async fn lag_now(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        let lag = self.lag.clone();
        tokio::task::spawn_blocking(move || lag.lag()).await?
    }

    /// Polls until every group's lag is 0; the time it took from `since`, or None at the deadline.
    async fn wait_lag_zero(
        &self,
        since: Instant,
        deadline: Duration,
    ) -> anyhow::Result<Option<Duration>> {
        loop {
            let lag = self.lag_now().await?;
            if lag.values().all(|l| *l == 0) {
                return Ok(Some(since.elapsed()));
            }
            if since.elapsed() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn run_rate(
        &self,
        offered: f64,
        duration: Duration,
        measure: bool,
    ) -> anyhow::Result<RateReport> {
        let shape = LoadShape {
            rate: offered,
            duration,
            watch_share: self.args.watch_share,
            skus: self.args.skus.clone(),
            stream_timeout: Duration::from_secs(self.args.stream_timeout),
        };
        let cpu_start = self.probe.sample();
        let log_marks = LogMarks::now(&self.log_dir);
        let mut running = load::open_loop(&self.gateway, &self.customers, &shape).await;
        let load_end = Instant::now();
        let load_end_at = SystemTime::now();
        let lag_at_end = if measure {
            self.lag_now().await?
        } else {
            BTreeMap::new()
        };
        let deadline = Duration::from_secs(self.args.drain_timeout);
        let drain = self.wait_lag_zero(load_end, deadline).await?;
        let mut flows: Vec<Flow> = Vec::with_capacity(running.scheduled);
        while let Some(flow) = running.flows.join_next().await {
            flows.push(flow?);
        }
        let orders: Vec<Uuid> = flows.iter().filter_map(|f| f.order).collect();
        let (final_after, open) =
            pg::wait_final(&self.order_db, &orders, load_end, deadline).await?;
        let cpu_end = self.probe.sample();
        let used = self.probe.between(&cpu_start, &cpu_end);
        let (load_average, rustc_running) = cpu::machine_load();
        let slow_statements = log_marks.slow_statements_since();
        if slow_statements.count > 0 {
            println!(
                "    {} statements over 1 s during this rate (slowest {:.1} s): disk stalls; its figures are disturbed",
                slow_statements.count, slow_statements.slowest_s
            );
        }

        // paid/s and shipping_scheduled/s over the steady part of the window: the first
        // quarter (at most 2 s) is left out, while the first orders are still on their way.
        let skip = (duration / 4).min(Duration::from_secs(2));
        let steady_from = running.started_at + skip;
        let window = load_end
            .duration_since(running.started + skip)
            .as_secs_f64()
            .max(0.001);
        let counts = pg::status_counts(
            &self.order_db,
            &orders,
            DateTime::<Utc>::from(steady_from),
            DateTime::<Utc>::from(load_end_at),
        )
        .await?;
        let within = |status: &str| counts.get(status).map_or(0, |c| c.0);
        let all = |status: &str| counts.get(status).map_or(0, |c| c.1);
        let rejected = all("rejected") + all("cancelled");
        let mut errors = load::error_kinds(&flows);
        if rejected > 0 {
            errors.insert(
                "order rejected or cancelled (order database)".into(),
                rejected as usize,
            );
        }
        let placed = orders.len();
        let per_order = |seconds: f64| seconds * 1000.0 / placed.max(1) as f64;
        let late = flows
            .iter()
            .filter(|f| f.late > Duration::from_millis(10))
            .count();
        let max_late = flows.iter().map(|f| f.late).max().unwrap_or_default();
        let mut accept: Vec<Duration> = flows.iter().filter_map(|f| f.accepted).collect();
        let mut paid: Vec<Duration> = flows.iter().filter_map(|f| f.paid_on_stream).collect();
        let mut shipped: Vec<Duration> = flows.iter().filter_map(|f| f.shipped_on_stream).collect();
        let paid_written = pg::status_written_at(&self.order_db, &orders, "paid").await?;
        let mut pushed: Vec<Duration> = flows
            .iter()
            .filter_map(|f| {
                let seen = f.sent_at? + f.paid_on_stream?;
                let written = SystemTime::from(*paid_written.get(&f.order?)?);
                seen.duration_since(written).ok()
            })
            .collect();
        Ok(RateReport {
            offered,
            seconds: duration.as_secs_f64(),
            scheduled: running.scheduled,
            placed,
            error_count: errors.values().sum(),
            errors,
            late_sends: late,
            max_late_ms: max_late.as_secs_f64() * 1000.0,
            accept: Percentiles::of(&mut accept),
            watched: flows.iter().filter(|f| f.watched).count(),
            paid_on_stream: Percentiles::of(&mut paid),
            paid_pushed: Percentiles::of(&mut pushed),
            shipped_on_stream: Percentiles::of(&mut shipped),
            paid_per_s: within("paid") as f64 / window,
            shipped_per_s: within("shipping_scheduled") as f64 / window,
            paid_total: all("paid"),
            shipped_total: all("shipping_scheduled"),
            rejected,
            lag_at_end,
            lag_drain_s: drain.map(|d| d.as_secs_f64()),
            final_after_s: final_after.map(|d| d.as_secs_f64()),
            open_at_deadline: open,
            cpu_ms_per_order: used
                .by_label
                .iter()
                .map(|(label, seconds)| (label.clone(), per_order(*seconds)))
                .collect(),
            cpu_total_ms_per_order: per_order(used.total()),
            cpu_cores: used.total() / used.seconds.max(0.001),
            cpu_window_s: used.seconds,
            load_average,
            rustc_running,
            slow_statements,
            past_knee: Vec::new(),
        })
    }

    /// Waits until the order service holds no event stream, or `deadline` passes (then says
    /// how many are left: the idle figure includes them).
    async fn wait_streams_closed(&self, deadline: Duration) {
        let started = Instant::now();
        let mut open = None;
        while started.elapsed() < deadline {
            open = match self.gateway.http.get(&self.args.order_metrics).send().await {
                Ok(answer) => answer.text().await.ok().and_then(|text| {
                    text.lines()
                        .find_map(|line| line.strip_prefix("order_event_streams_open "))
                        .and_then(|value| value.trim().parse::<f64>().ok())
                }),
                Err(_) => None,
            };
            match open {
                Some(count) if count <= 0.0 => return,
                // No such metric (an older build, or another address): nothing to wait for.
                None => return,
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        if let Some(count) = open {
            println!(
                "    {count:.0} event streams still open after {deadline:?}; the idle window includes them"
            );
        }
    }

    /// CPU and database activity with no load at all.
    async fn idle(&self, stats: Option<&Stats>) -> anyhow::Result<(IdleReport, Counters, f64)> {
        self.wait_lag_zero(Instant::now(), Duration::from_secs(self.args.drain_timeout))
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!("the consumer groups did not drain before the idle window")
            })?;
        self.wait_streams_closed(Duration::from_secs(90)).await;
        say(format!(
            "idle: measuring the stack with no load for {} s",
            self.args.idle_seconds
        ));
        if let Some(stats) = stats {
            stats.reset().await?;
        }
        let reset_at = Instant::now();
        // The deliberate idle window. pg_stat_database learns of a backend's transactions up
        // to 10 s after it went idle (PostgreSQL 15), so the warm-up's may still arrive in the
        // first 10 s: the CPU and the transaction rate are taken over the rest of the window.
        let settle = if self.args.idle_seconds >= 20 { 11 } else { 0 };
        tokio::time::sleep(Duration::from_secs(settle)).await;
        let from = self.probe.sample();
        let before = match stats {
            Some(stats) => stats.read().await?,
            None => Counters::default(),
        };
        let counted_from = Instant::now();
        tokio::time::sleep(Duration::from_secs(self.args.idle_seconds - settle)).await;
        let to = self.probe.sample();
        let after = match stats {
            Some(stats) => stats.read().await?,
            None => Counters::default(),
        };
        let counted = counted_from.elapsed().as_secs_f64().max(0.001);
        let since_reset = reset_at.elapsed().as_secs_f64().max(0.001);
        let used = self.probe.between(&from, &to);
        let seconds = used.seconds;
        let (load_average, rustc_running) = cpu::machine_load();
        let mut statements_per_s = BTreeMap::new();
        for call in &after.statements {
            if !pg::is_transaction_control(&call.query) {
                *statements_per_s.entry(call.database.clone()).or_default() +=
                    call.calls as f64 / since_reset;
            }
        }
        let transactions_per_s: BTreeMap<String, f64> = after
            .transactions
            .iter()
            .map(|(db, n)| {
                (
                    db.clone(),
                    (n - before.transactions.get(db).copied().unwrap_or(*n)) as f64 / counted,
                )
            })
            .collect();
        let report = IdleReport {
            seconds,
            cpu_percent: used
                .by_label
                .iter()
                .map(|(label, cpu)| (label.clone(), cpu / seconds * 100.0))
                .collect(),
            total_percent: used.total() / seconds * 100.0,
            statements_per_s,
            transactions_per_s: transactions_per_s.clone(),
            load_average,
            rustc_running,
        };
        let mut rows: Vec<(&String, &f64)> = report.cpu_percent.iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(a.1));
        println!("    whole stack {:.1} % of one core", report.total_percent);
        for (label, percent) in rows {
            println!("      {label:<45} {percent:5.1} %");
        }
        // The idle counters over the window since the reset: statements counted, transactions
        // at the rate measured.
        let mut idle_counters = after.clone();
        for (db, n) in idle_counters.transactions.iter_mut() {
            *n = (transactions_per_s.get(db).copied().unwrap_or(0.0) * since_reset).round() as i64;
        }
        Ok((report, idle_counters, since_reset))
    }

    /// Transactions and statements per checkout, per service database.
    async fn statements(
        &self,
        stats: &Stats,
        idle: Option<&(Counters, f64)>,
    ) -> anyhow::Result<StatementReport> {
        let orders = self.args.statement_orders;
        let rate = self.args.statement_rate;
        say(format!(
            "statement counts: {orders} checkouts at {rate:.0}/s, each followed to a final status"
        ));
        stats.reset().await?;
        let before = stats.read().await?;
        let started = Instant::now();
        let report = self
            .run_rate(rate, Duration::from_secs_f64(orders as f64 / rate), false)
            .await?;
        self.wait_lag_zero(Instant::now(), Duration::from_secs(self.args.drain_timeout))
            .await?;
        // PostgreSQL 15 flushes a backend's transaction counters to pg_stat_database within 10 s
        // of it going idle: a deliberate settle, corrected for idle activity below.
        println!("    letting PostgreSQL flush its transaction counters (11 s)");
        tokio::time::sleep(Duration::from_secs(11)).await;
        let after = stats.read().await?;
        let window = started.elapsed().as_secs_f64();
        let placed = report.placed.max(1) as f64;
        let idle_rate = |db: &str, query: Option<&str>| -> f64 {
            let Some((counters, seconds)) = idle else {
                return 0.0;
            };
            match query {
                Some(query) => {
                    counters
                        .statements
                        .iter()
                        .filter(|c| c.database == db && c.query == query)
                        .map(|c| c.calls as f64)
                        .sum::<f64>()
                        / seconds
                }
                None => counters.transactions.get(db).copied().unwrap_or(0) as f64 / seconds,
            }
        };
        let mut services = Vec::new();
        for db in DATABASES {
            let transactions = after.transactions.get(db).copied().unwrap_or(0)
                - before.transactions.get(db).copied().unwrap_or(0);
            let transactions =
                (transactions as f64 - idle_rate(db, None) * window).max(0.0) / placed;
            let mut statements = 0.0;
            let mut control = 0.0;
            let mut top: Vec<(String, f64)> = Vec::new();
            for call in after.statements.iter().filter(|c| c.database == db) {
                let net = (call.calls as f64 - idle_rate(db, Some(&call.query)) * window).max(0.0)
                    / placed;
                if pg::is_transaction_control(&call.query) {
                    control += net;
                } else {
                    statements += net;
                    top.push((call.query.clone(), net));
                }
            }
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            top.retain(|(_, n)| *n >= 0.01);
            top.truncate(10);
            services.push(ServiceStatements {
                database: db.to_owned(),
                transactions_per_order: transactions,
                statements_per_order: statements,
                transaction_control_per_order: control,
                top,
            });
        }
        println!(
            "    per order: database, transactions, statements (without BEGIN/COMMIT), BEGIN/COMMIT"
        );
        for s in &services {
            println!(
                "      {:<22} {:6.1} {:6.1} {:6.1}",
                s.database,
                s.transactions_per_order,
                s.statements_per_order,
                s.transaction_control_per_order
            );
        }
        Ok(StatementReport {
            orders: report.placed,
            rate,
            window_s: window,
            services,
        })
    }
}

async fn floors(args: &Args, repo: &Path) -> report::Floors {
    let mut floors = report::Floors::default();
    let (repo, kafka) = (repo.to_owned(), args.kafka.clone());
    let topic = format!("{}bench.e2e-latency", args.topic_prefix);
    match tokio::task::spawn_blocking(move || {
        kafka_end_to_end_latency(&repo, &kafka, &topic, 5_000, 200)
    })
    .await
    {
        Ok(Ok(figures)) => {
            println!(
                "    Kafka EndToEndLatency avg {:.2} ms, p50 {:.0} ms, p99 {:.0} ms",
                figures.0, figures.1, figures.2
            );
            floors.kafka_e2e_ms = Some(figures);
        }
        Ok(Err(error)) => floors.errors.push(format!("EndToEndLatency: {error:#}")),
        Err(error) => floors.errors.push(format!("EndToEndLatency: {error}")),
    }
    match pg::pgbench(&args.admin_db, 10).await {
        Ok(tps) => {
            println!("    pgbench {tps:.0} transactions/s");
            floors.pgbench_tps = Some(tps);
        }
        Err(error) => floors.errors.push(format!("pgbench: {error:#}")),
    }
    for error in &floors.errors {
        println!("    {error}");
    }
    floors
}

fn git_commit(repo: &Path) -> String {
    std::process::Command::new("git")
        .args(["-C"])
        .arg(repo)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> report::Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".into(), |(_, v)| v.trim().to_owned());
    let memory_gb = procfs::Meminfo::current()
        .map(|m| m.mem_total as f64 / 1e9)
        .unwrap_or(f64::NAN);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    report::Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        memory_gb,
        kernel,
    }
}

fn write_report(args: &Args, run: &RunReport) -> anyhow::Result<()> {
    let before: Option<RunReport> = match &args.before {
        Some(path) => Some(
            serde_json::from_str(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("parsing {}", path.display()))?,
        ),
        None => None,
    };
    if let Some(dir) = args.report.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let chart = args.report.with_file_name("benchmarks.svg");
    let chart_name = chart.file_name().map_or("benchmarks.svg".into(), |n| {
        n.to_string_lossy().into_owned()
    });
    let existing = std::fs::read_to_string(&args.report).unwrap_or_default();
    let text = report::render(
        run,
        before.as_ref(),
        &report::analysis_section(&existing),
        &report::micro_section(&existing),
        &chart_name,
    );
    std::fs::write(&args.report, &text)?;
    std::fs::write(&chart, report::svg_chart(run, before.as_ref()))?;
    std::fs::write(&args.json, serde_json::to_string_pretty(run)?)?;
    println!("\n{text}");
    println!(
        "wrote {}, {} and {}",
        args.report.display(),
        chart.display(),
        args.json.display()
    );
    Ok(())
}
