//! End-to-end latency of the happy checkout path on this machine: from the order's creation
//! (`pending`) to `paid`, measured from the order service's own status history, for orders
//! placed at a steady rate. Every service runs in this process against the real Kafka and
//! PostgreSQL (`make bench-checkout` starts them). A micro-benchmark: the headline figures come from
//! `make bench` (crates/bench, stack-bench), which drives the real processes through the gateway.

use std::time::{Duration, Instant};

use bazaar_bench::Percentiles;
use bazaar_integration_tests::stack::{Stack, StackOptions};
use clap::Parser;

/// Measure checkout → paid latency over a number of orders.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Orders to place.
    #[arg(long, default_value_t = 200)]
    orders: usize,
    /// Orders per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = Stack::start(StackOptions::default()).await?;
    stack.seed_demo().await?;
    stack.set_stock("TEE-BLK-M", 1_000_000).await?;
    let customer = stack.customer();

    // Warm-up: consumers join their groups, schema ids get cached.
    let warm = stack
        .checkout(&customer, &[("TEE-BLK-M", 1)], "tok_visa")
        .await?;
    stack.wait_for_status(&customer, &warm, &["paid"]).await;

    println!("placing {} orders at {}/s...", args.orders, args.rate);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    let mut placed = Vec::with_capacity(args.orders);
    let mut accept_latencies = Vec::with_capacity(args.orders);
    for _ in 0..args.orders {
        ticker.tick().await;
        let sent = Instant::now();
        placed.push(
            stack
                .checkout(&customer, &[("TEE-BLK-M", 1)], "tok_visa")
                .await?,
        );
        accept_latencies.push(sent.elapsed());
    }
    for order_id in &placed {
        stack.wait_for_status(&customer, order_id, &["paid"]).await;
    }
    let elapsed = started.elapsed();

    let ids: Vec<uuid::Uuid> = placed
        .iter()
        .filter_map(|id| uuid::Uuid::parse_str(id).ok())
        .collect();
    let rows: Vec<(f64,)> = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM paid.at - pending.at)::float8
           FROM order_status_history pending
           JOIN order_status_history paid ON paid.order_id = pending.order_id AND paid.status = 'paid'
          WHERE pending.status = 'pending' AND pending.order_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&stack.order.pool)
    .await?;
    let mut to_paid: Vec<Duration> = rows
        .into_iter()
        .map(|(secs,)| Duration::from_secs_f64(secs.max(0.0)))
        .collect();
    let paid = Percentiles::of(&mut to_paid).ok_or_else(|| anyhow::anyhow!("no paid orders"))?;
    let accepted =
        Percentiles::of(&mut accept_latencies).ok_or_else(|| anyhow::anyhow!("no orders"))?;

    println!();
    println!(
        "| measure ({} orders at {}/s, {:.1} s) | p50 | p95 | p99 | max |",
        paid.count,
        args.rate,
        elapsed.as_secs_f64()
    );
    println!("|---|---|---|---|---|");
    println!(
        "| checkout request → 202 | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
        accepted.p50, accepted.p95, accepted.p99, accepted.max
    );
    println!(
        "| pending → paid (order service clock) | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
        paid.p50, paid.p95, paid.p99, paid.max
    );
    stack.stop().await?;
    Ok(())
}
