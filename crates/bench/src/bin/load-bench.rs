//! Load benchmark of the whole checkout: simulated customers register, log in, browse, fill a
//! cart and check out through the gateway, at increasing rates; every order is followed to its
//! final state. Prints sustained checkouts/s, checkout → paid latency, a per-hop breakdown from
//! the services' own event timestamps, and the floors of this machine (Kafka's EndToEndLatency
//! and pgbench), and writes `docs/benchmarks.md` with an SVG chart.
//!
//! Every service runs in this process (release build) against the real Kafka and PostgreSQL;
//! `make bench` starts them. This is a benchmark, not a test: it prints figures.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bazaar_bench::{Percentiles, kafka_end_to_end_latency};
use bazaar_integration_tests::stack::{Stack, StackOptions};
use chrono::{DateTime, Utc};
use clap::Parser;
use reqwest::Method;
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

/// Drive simulated customers through checkout at increasing rates and report what holds.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Simulated customers (each registered and logged in once).
    #[arg(long, default_value_t = 150)]
    customers: usize,
    /// Offered checkout rates to try, per second, in order.
    #[arg(long, value_delimiter = ',', default_values_t = [50, 100, 200, 300, 400])]
    rates: Vec<u32>,
    /// Seconds of load per rate.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Where to write the report (markdown); the chart goes beside it.
    #[arg(long, default_value = "docs/benchmarks.md")]
    report: PathBuf,
}

#[derive(Debug, Clone)]
struct Customer {
    token: String,
}

#[derive(Debug, Default)]
struct RunRecord {
    /// Order id and the wall-clock time its checkout request was sent.
    placed: Vec<(Uuid, SystemTime)>,
    errors: Vec<String>,
}

#[derive(Debug, Clone)]
struct RateResult {
    offered: u32,
    placed: usize,
    errors: usize,
    unfinished: usize,
    sustained: f64,
    to_paid: Option<Percentiles>,
    accept: Option<Percentiles>,
    hops: Vec<(String, Percentiles)>,
}

const SKUS: [&str; 3] = ["TEE-BLK-M", "TEE-BLK-L", "TOTE-NAT"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bazaar_integration_tests::init_test_logging();
    let repo_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    println!("starting every service in this process...");
    let stack = Arc::new(
        Stack::start(StackOptions {
            fulfilment: true,
            auth_service: true,
            order_deadline: Duration::from_secs(600),
            reservation_ttl: Duration::from_secs(600),
            provider_timeout: Duration::from_secs(5),
        })
        .await?,
    );
    stack.seed_demo().await?;
    for sku in SKUS {
        stack.set_stock(sku, 10_000_000).await?;
    }

    println!("registering and logging in {} customers...", args.customers);
    let mut logins = Vec::new();
    let mut customers = Vec::new();
    for n in 0..args.customers {
        let email = format!("load-{n}-{}@example.com", Uuid::now_v7().simple());
        let password = "correct horse battery staple";
        let registered = stack
            .call(
                Method::POST,
                "/api/auth/register",
                None,
                Some(&json!({"email": email, "password": password, "name": format!("Load {n}")})),
            )
            .await?;
        anyhow::ensure!(
            registered.status == 201,
            "register: {} {}",
            registered.status,
            registered.body
        );
        let started = Instant::now();
        let login = stack
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(&json!({"email": email, "password": password})),
            )
            .await?;
        logins.push(started.elapsed());
        anyhow::ensure!(
            login.status == 200,
            "login: {} {}",
            login.status,
            login.body
        );
        let token = login.body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        customers.push(Customer { token });
    }
    let login = Percentiles::of(&mut logins);

    // Warm-up: every consumer has joined its group and cached its schema ids.
    let warm = run_rate(&stack, &customers, 10, Duration::from_secs(3)).await;
    wait_until_final(&stack, &warm.placed, Duration::from_secs(60)).await?;

    let mut results = Vec::new();
    for &rate in &args.rates {
        println!("offering {rate} checkouts/s for {} s...", args.seconds);
        let record = run_rate(&stack, &customers, rate, Duration::from_secs(args.seconds)).await;
        let unfinished = wait_until_final(&stack, &record.placed, Duration::from_secs(120)).await?;
        let result = measure(&stack, rate, &record, unfinished).await?;
        println!(
            "  placed {}, errors {}, unfinished {}, sustained {:.0}/s, to paid p50 {:.1} ms p99 {:.1} ms",
            result.placed,
            result.errors,
            result.unfinished,
            result.sustained,
            result.to_paid.map_or(f64::NAN, |p| p.p50),
            result.to_paid.map_or(f64::NAN, |p| p.p99),
        );
        for error in record.errors.iter().take(3) {
            println!("    error: {error}");
        }
        let saturated =
            result.errors > 0 || result.unfinished > 0 || result.sustained < f64::from(rate) * 0.9;
        results.push(result);
        if saturated {
            println!("  saturated at {rate}/s; stopping the ramp");
            break;
        }
    }

    println!("measuring this machine's floors...");
    let kafka = kafka_end_to_end_latency(
        &repo_root,
        &stack.kafka.bootstrap_servers,
        &stack.kafka.topic("e2e-latency"),
        5_000,
        200,
    )
    .unwrap_or_else(|error| {
        println!("  EndToEndLatency failed: {error:#}");
        (f64::NAN, f64::NAN, f64::NAN)
    });
    let pgbench_tps = pgbench().await.unwrap_or_else(|error| {
        println!("  pgbench failed: {error:#}");
        f64::NAN
    });

    let report = render(&args, &results, login, kafka, pgbench_tps);
    println!("\n{report}");
    if let Some(dir) = args.report.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.report, &report)?;
    let chart = args.report.with_file_name("benchmarks-latency.svg");
    std::fs::write(&chart, svg_chart(&results))?;
    println!("wrote {} and {}", args.report.display(), chart.display());
    match Arc::try_unwrap(stack) {
        Ok(stack) => stack.stop().await?,
        Err(_) => anyhow::bail!("the stack is still shared"),
    }
    Ok(())
}

/// Offers `rate` checkouts per second for `duration`. Each checkout takes an idle customer, so
/// one customer never has two carts in flight.
async fn run_rate(
    stack: &Arc<Stack>,
    customers: &[Customer],
    rate: u32,
    duration: Duration,
) -> RunRecord {
    let (idle_tx, idle_rx) = async_channel(customers);
    let record = Arc::new(Mutex::new(RunRecord::default()));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut flows = tokio::task::JoinSet::new();
    while started.elapsed() < duration {
        ticker.tick().await;
        let stack = stack.clone();
        let record = record.clone();
        let idle_rx = idle_rx.clone();
        let idle_tx = idle_tx.clone();
        flows.spawn(async move {
            let Some(customer) = idle_rx.lock().await.recv().await else {
                return;
            };
            let sku = SKUS[usize::from(rand_byte()) % SKUS.len()];
            let outcome = checkout_flow(&stack, &customer, sku).await;
            let mut record = record.lock().await;
            match outcome {
                Ok(placed) => record.placed.push(placed),
                Err(error) => record.errors.push(format!("{error:#}")),
            }
            let _ = idle_tx.send(customer).await;
        });
    }
    while flows.join_next().await.is_some() {}
    Arc::try_unwrap(record)
        .map(Mutex::into_inner)
        .unwrap_or_default()
}

type Idle = (
    tokio::sync::mpsc::Sender<Customer>,
    Arc<Mutex<tokio::sync::mpsc::Receiver<Customer>>>,
);

fn async_channel(customers: &[Customer]) -> Idle {
    let (tx, rx) = tokio::sync::mpsc::channel(customers.len().max(1));
    for customer in customers {
        let _ = tx.try_send(customer.clone());
    }
    (tx, Arc::new(Mutex::new(rx)))
}

fn rand_byte() -> u8 {
    Uuid::new_v4().as_bytes()[0]
}

/// Browse, add to cart, check out the cart. Returns the order and when its checkout was sent.
async fn checkout_flow(
    stack: &Stack,
    customer: &Customer,
    sku: &str,
) -> anyhow::Result<(Uuid, SystemTime)> {
    let browse = stack
        .call(Method::GET, "/api/products?limit=5", None, None)
        .await?;
    anyhow::ensure!(browse.status == 200, "browse: {}", browse.status);
    let cart = stack
        .call(
            Method::PUT,
            &format!("/api/cart/items/{sku}"),
            Some(&customer.token),
            Some(&json!({"quantity": 1})),
        )
        .await?;
    anyhow::ensure!(cart.status == 200, "cart: {} {}", cart.status, cart.body);
    let key = Uuid::now_v7().to_string();
    let sent = SystemTime::now();
    let order = stack
        .call_with(
            Method::POST,
            "/api/orders",
            Some(&customer.token),
            Some(&json!({"payment_token": "tok_visa", "shipping_address": "1 Load Street"})),
            &[("Idempotency-Key", key.as_str())],
        )
        .await?;
    anyhow::ensure!(
        order.status == 202,
        "checkout: {} {}",
        order.status,
        order.body
    );
    let id = order.body["id"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok());
    Ok((id.ok_or_else(|| anyhow::anyhow!("no order id"))?, sent))
}

/// Waits until every order is in a final state (here, with shipping running: shipping
/// scheduled, rejected or cancelled); returns how many are not, at the deadline.
async fn wait_until_final(
    stack: &Stack,
    placed: &[(Uuid, SystemTime)],
    deadline: Duration,
) -> anyhow::Result<usize> {
    let ids: Vec<Uuid> = placed.iter().map(|(id, _)| *id).collect();
    let started = Instant::now();
    loop {
        let (open,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM orders WHERE id = ANY($1) AND status NOT IN ('shipping_scheduled', 'rejected', 'cancelled')",
        )
        .bind(&ids)
        .fetch_one(&stack.order.pool)
        .await?;
        if open == 0 || started.elapsed() > deadline {
            return Ok(usize::try_from(open).unwrap_or(usize::MAX));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

async fn measure(
    stack: &Stack,
    offered: u32,
    record: &RunRecord,
    unfinished: usize,
) -> anyhow::Result<RateResult> {
    let ids: Vec<Uuid> = record.placed.iter().map(|(id, _)| *id).collect();
    let sent: HashMap<Uuid, SystemTime> = record.placed.iter().copied().collect();
    let paid: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT order_id, at FROM order_status_history WHERE status = 'paid' AND order_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&stack.order.pool)
    .await?;
    let mut to_paid: Vec<Duration> = paid
        .iter()
        .filter_map(|(id, at)| {
            sent.get(id)
                .map(|sent| between(DateTime::<Utc>::from(*sent), *at))
        })
        .collect();
    let first = record.placed.iter().map(|(_, at)| *at).min();
    let last_paid = paid.iter().map(|(_, at)| *at).max();
    let sustained = match (first, last_paid) {
        (Some(first), Some(last)) => {
            paid.len() as f64
                / between(DateTime::<Utc>::from(first), last)
                    .as_secs_f64()
                    .max(0.001)
        }
        _ => 0.0,
    };
    let mut accept: Vec<Duration> = Vec::new();
    let created: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT order_id, at FROM order_status_history WHERE status = 'pending' AND order_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&stack.order.pool)
    .await?;
    for (id, at) in &created {
        if let Some(sent) = sent.get(id) {
            accept.push(between(DateTime::<Utc>::from(*sent), *at));
        }
    }
    Ok(RateResult {
        offered,
        placed: record.placed.len(),
        errors: record.errors.len(),
        unfinished,
        sustained,
        to_paid: Percentiles::of(&mut to_paid),
        accept: Percentiles::of(&mut accept),
        hops: hops(stack, &ids).await?,
    })
}

/// Per-hop latencies from the services' own tables: when each event was appended to an outbox
/// and when the next service's consumer recorded it in its inbox.
async fn hops(stack: &Stack, ids: &[Uuid]) -> anyhow::Result<Vec<(String, Percentiles)>> {
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    type Appended = Vec<(String, Uuid, DateTime<Utc>)>;
    let outbox = |pool: sqlx::PgPool, event_type: &'static str| {
        let keys = keys.clone();
        async move {
            sqlx::query_as::<sqlx::Postgres, (String, Uuid, DateTime<Utc>)>(
                "SELECT message_key, event_id, created_at FROM messaging_outbox WHERE event_type = $1 AND message_key = ANY($2)",
            )
            .bind(event_type)
            .bind(&keys)
            .fetch_all(&pool)
            .await
        }
    };
    let inbox = |pool: sqlx::PgPool, events: Vec<Uuid>| async move {
        sqlx::query_as::<sqlx::Postgres, (Uuid, DateTime<Utc>)>(
            "SELECT event_id, handled_at FROM messaging_inbox WHERE event_id = ANY($1)",
        )
        .bind(&events)
        .fetch_all(&pool)
        .await
        .map(|rows| rows.into_iter().collect::<HashMap<_, _>>())
    };
    let created: Appended = outbox(stack.order.pool.clone(), "OrderCreated").await?;
    let reserved: Appended = outbox(stack.inventory.pool.clone(), "StockReserved").await?;
    let succeeded: Appended = outbox(stack.payment.pool.clone(), "PaymentSucceeded").await?;
    let committed: Appended = outbox(stack.inventory.pool.clone(), "StockCommitted").await?;
    let ids_of = |rows: &Appended| rows.iter().map(|(_, id, _)| *id).collect::<Vec<_>>();
    let inventory_got_created = inbox(stack.inventory.pool.clone(), ids_of(&created)).await?;
    let payment_got_reserved = inbox(stack.payment.pool.clone(), ids_of(&reserved)).await?;
    let inventory_got_paid = inbox(stack.inventory.pool.clone(), ids_of(&succeeded)).await?;
    let order_got_committed = inbox(stack.order.pool.clone(), ids_of(&committed)).await?;
    let order_got_paid = inbox(stack.order.pool.clone(), ids_of(&succeeded)).await?;
    let by_key = |rows: &Appended| {
        rows.iter()
            .map(|(key, id, at)| (key.clone(), (*id, *at)))
            .collect::<HashMap<_, _>>()
    };
    let (created, reserved, succeeded, committed) = (
        by_key(&created),
        by_key(&reserved),
        by_key(&succeeded),
        by_key(&committed),
    );
    let mut series: Vec<(String, Vec<Duration>)> = vec![
        (
            "order: OrderCreated → inventory handles it".into(),
            Vec::new(),
        ),
        (
            "inventory: StockReserved → payment handles it".into(),
            Vec::new(),
        ),
        (
            "payment: charge (worker + gateway) → PaymentSucceeded".into(),
            Vec::new(),
        ),
        (
            "payment: PaymentSucceeded → inventory commits".into(),
            Vec::new(),
        ),
        (
            "inventory: StockCommitted → order handles it".into(),
            Vec::new(),
        ),
        (
            "payment: PaymentSucceeded → order handles it".into(),
            Vec::new(),
        ),
    ];
    for key in &keys {
        let (Some(c), Some(r), Some(s), Some(k)) = (
            created.get(key),
            reserved.get(key),
            succeeded.get(key),
            committed.get(key),
        ) else {
            continue;
        };
        let pairs = [
            (Some(c.1), inventory_got_created.get(&c.0).copied()),
            (Some(r.1), payment_got_reserved.get(&r.0).copied()),
            (payment_got_reserved.get(&r.0).copied(), Some(s.1)),
            (Some(s.1), inventory_got_paid.get(&s.0).copied()),
            (Some(k.1), order_got_committed.get(&k.0).copied()),
            (Some(s.1), order_got_paid.get(&s.0).copied()),
        ];
        for ((_, samples), pair) in series.iter_mut().zip(pairs) {
            if let (Some(from), Some(to)) = pair {
                samples.push(between(from, to));
            }
        }
    }
    Ok(series
        .into_iter()
        .filter_map(|(name, mut samples)| Percentiles::of(&mut samples).map(|p| (name, p)))
        .collect())
}

/// PostgreSQL's commit rate on this machine: pgbench's simple-update workload for 10 s.
async fn pgbench() -> anyhow::Result<f64> {
    let database = bazaar_integration_tests::fresh_database("pgbench").await?;
    let url = database.url().to_owned();
    let binary = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin/pgbench"))
        .find(|path| path.exists())
        .ok_or_else(|| anyhow::anyhow!("pgbench not found under /usr/lib/postgresql"))?;
    tokio::task::spawn_blocking(move || {
        let init = std::process::Command::new(&binary)
            .args(["-i", "-q", "-s", "1", &url])
            .output()?;
        anyhow::ensure!(
            init.status.success(),
            "pgbench -i: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let run = std::process::Command::new(&binary)
            .args(["-N", "-n", "-c", "4", "-j", "2", "-T", "10", &url])
            .output()?;
        let text = String::from_utf8_lossy(&run.stdout);
        anyhow::ensure!(
            run.status.success(),
            "pgbench: {text}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        text.lines()
            .find(|line| line.starts_with("tps = "))
            .and_then(|line| line.trim_start_matches("tps = ").split_whitespace().next())
            .and_then(|tps| tps.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {text}"))
    })
    .await?
}

fn ms(p: Option<Percentiles>, pick: fn(&Percentiles) -> f64) -> String {
    p.map_or("–".into(), |p| format!("{:.1}", pick(&p)))
}

fn render(
    args: &Args,
    results: &[RateResult],
    login: Option<Percentiles>,
    kafka: (f64, f64, f64),
    pgbench_tps: f64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Produced by `make bench` (`crates/bench/src/bin/load-bench.rs`) on {}: one 2-core machine running PostgreSQL, \
         one Kafka broker, every Bazaar service (in one process, release build) and the load generator itself. \
         {} customers, {} s per offered rate. Latency is from sending the checkout request to the order's `paid` \
         status as recorded by the order service.\n",
        Utc::now().format("%Y-%m-%d"),
        args.customers,
        args.seconds
    );
    let _ = writeln!(out, "## Checkout under load\n");
    let _ = writeln!(
        out,
        "| offered /s | placed | errors | unfinished | sustained paid /s | accept p50 ms | to paid p50 ms | p95 ms | p99 ms | max ms |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            r.offered,
            r.placed,
            r.errors,
            r.unfinished,
            r.sustained,
            ms(r.accept, |p| p.p50),
            ms(r.to_paid, |p| p.p50),
            ms(r.to_paid, |p| p.p95),
            ms(r.to_paid, |p| p.p99),
            ms(r.to_paid, |p| p.max),
        );
    }
    let _ = writeln!(
        out,
        "\n![checkout → paid latency by offered rate](benchmarks-latency.svg)\n"
    );
    if let Some(reference) = results
        .iter()
        .rev()
        .find(|r| r.errors == 0 && r.unfinished == 0)
    {
        let _ = writeln!(
            out,
            "## Per hop at {} checkouts/s (from outbox and inbox timestamps)\n",
            reference.offered
        );
        let _ = writeln!(out, "| hop | p50 ms | p95 ms | p99 ms |");
        let _ = writeln!(out, "|---|---|---|---|");
        for (name, p) in &reference.hops {
            let _ = writeln!(
                out,
                "| {name} | {:.1} | {:.1} | {:.1} |",
                p.p50, p.p95, p.p99
            );
        }
    }
    let (kafka_avg, kafka_p50, kafka_p99) = kafka;
    let _ = writeln!(out, "\n## Floors of this machine\n");
    let _ = writeln!(out, "| measure | value |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(
        out,
        "| Kafka EndToEndLatency (acks=all, 5000 × 200 B): avg / p50 / p99 | {kafka_avg:.2} / {kafka_p50:.0} / {kafka_p99:.0} ms |"
    );
    let _ = writeln!(
        out,
        "| pgbench simple-update (4 clients, 10 s) | {pgbench_tps:.0} transactions/s |"
    );
    if let Some(login) = login {
        let _ = writeln!(
            out,
            "| login (argon2id verify) p50 / p99 | {:.1} / {:.1} ms |",
            login.p50, login.p99
        );
    }
    if let Some(best) = results
        .iter()
        .filter(|r| r.errors == 0 && r.unfinished == 0)
        .max_by(|a, b| a.sustained.total_cmp(&b.sustained))
    {
        let p50 = best.to_paid.map_or(f64::NAN, |p| p.p50);
        // A paid checkout crosses five Kafka hops and about ten commits.
        let _ = writeln!(
            out,
            "| best sustained rate as a share of pgbench's commit rate | {:.1} % ({:.0}/s; a checkout commits ~10 transactions) |",
            100.0 * best.sustained / pgbench_tps,
            best.sustained
        );
        let _ = writeln!(
            out,
            "| to-paid p50 in Kafka average hops | {:.1} × ({p50:.1} ms over {kafka_avg:.2} ms) |",
            p50 / kafka_avg
        );
    }
    out
}

/// A small SVG line chart: p50, p95 and p99 of checkout → paid by offered rate.
fn svg_chart(results: &[RateResult]) -> String {
    let (width, height, margin) = (640.0, 360.0, 50.0);
    let points: Vec<(f64, Percentiles)> = results
        .iter()
        .filter_map(|r| r.to_paid.map(|p| (f64::from(r.offered), p)))
        .collect();
    let max_x = points.iter().map(|(x, _)| *x).fold(1.0, f64::max);
    let max_y = points.iter().map(|(_, p)| p.p99).fold(1.0, f64::max) * 1.1;
    let sx = |x: f64| margin + x / max_x * (width - 2.0 * margin);
    let sy = |y: f64| height - margin - y / max_y * (height - 2.0 * margin);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{margin}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{margin}\" y1=\"{margin}\" x2=\"{margin}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered checkouts/s</text>\n\
         <text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">checkout → paid (ms)</text>\n",
        height - margin,
        width - margin,
        height - margin,
        height - margin,
        width / 2.0,
        height - 12.0,
        height / 2.0,
        height / 2.0
    );
    for tick in 0..=4 {
        let y = max_y * f64::from(tick) / 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{y:.0}</text>",
            margin - 4.0,
            sy(y) + 4.0
        );
    }
    for (x, _) in &points {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x:.0}</text>",
            sx(*x),
            height - margin + 16.0
        );
    }
    for (label, colour, pick) in [
        (
            "p50",
            "#1f77b4",
            (|p: &Percentiles| p.p50) as fn(&Percentiles) -> f64,
        ),
        ("p95", "#ff7f0e", |p: &Percentiles| p.p95),
        ("p99", "#d62728", |p: &Percentiles| p.p99),
    ] {
        let path: Vec<String> = points
            .iter()
            .map(|(x, p)| format!("{:.1},{:.1}", sx(*x), sy(pick(p))))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        if let Some((x, p)) = points.last() {
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{label}</text>",
                sx(*x) + 4.0,
                sy(pick(p))
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
