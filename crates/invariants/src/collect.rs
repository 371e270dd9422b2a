//! Reading the sources: each service database in one read-only, repeatable-read transaction (a
//! consistent picture of that database, and no way to change it), the processor's ledger over
//! HTTP, and the mail folder.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use sqlx::{PgPool, Postgres, Transaction};

use crate::model::{
    InventoryDb, Ledger, Notification, Order, Payment, PaymentDb, Reservation, Shipment, Snapshot,
    Stock, Transaction as PaymentTransaction,
};

/// Where to look. Only the order database is required; the rules of a missing source are
/// skipped. Without a shipping database, `paid` counts as final.
#[derive(Debug, Clone)]
pub struct Sources {
    pub order: PgPool,
    pub inventory: Option<PgPool>,
    pub payment: Option<PgPool>,
    pub shipping: Option<PgPool>,
    pub notification: Option<PgPool>,
    /// Base URL of the payment gateway simulator, whose `/_sim/charges` is the ledger.
    pub payment_gateway: Option<String>,
    /// The notification service's mail folder (`mail.file.dir`).
    pub mail_dir: Option<PathBuf>,
}

/// A status or kind as the services store it, read back with their rules' spelling.
fn parse<T: std::str::FromStr<Err = String>>(text: &str) -> anyhow::Result<T> {
    text.parse().map_err(|why: String| anyhow::anyhow!(why))
}

async fn read_only(pool: &PgPool, what: &str) -> anyhow::Result<Transaction<'static, Postgres>> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .with_context(|| format!("opening a read-only transaction on the {what} database"))
}

type OrderRow = (String, String, Option<String>, i64, bool, Option<String>);

async fn orders(pool: &PgPool, only: Option<&[String]>) -> anyhow::Result<Vec<Order>> {
    let mut tx = read_only(pool, "order").await?;
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT o.id::text, o.status, o.reason, o.total_minor, o.refunded, s.shipment_id
           FROM orders o LEFT JOIN order_shipments s ON s.order_id = o.id
          WHERE $1::text[] IS NULL OR o.id::text = ANY($1)",
    )
    .bind(only)
    .fetch_all(&mut *tx)
    .await
    .context("reading orders")?;
    let lines: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT order_id::text, sku, quantity::bigint FROM order_lines
          WHERE $1::text[] IS NULL OR order_id::text = ANY($1)",
    )
    .bind(only)
    .fetch_all(&mut *tx)
    .await
    .context("reading order lines")?;
    tx.rollback().await?;
    let mut by_order: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (order, sku, quantity) in lines {
        *by_order.entry(order).or_default().entry(sku).or_default() += quantity;
    }
    rows.into_iter()
        .map(|(id, status, reason, total_minor, refunded, shipment_id)| {
            Ok(Order {
                lines: by_order.remove(&id).unwrap_or_default(),
                status: parse(&status).with_context(|| format!("order {id}"))?,
                id,
                reason,
                total_minor,
                refunded,
                shipment_id,
            })
        })
        .collect()
}

async fn inventory(pool: &PgPool) -> anyhow::Result<InventoryDb> {
    let mut tx = read_only(pool, "inventory").await?;
    let stock: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT sku, on_hand, reserved FROM stock ORDER BY sku")
            .fetch_all(&mut *tx)
            .await
            .context("reading stock")?;
    let rows: Vec<(String, String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT r.order_id, r.status, l.sku, l.quantity
           FROM reservations r LEFT JOIN reservation_lines l USING (order_id)",
    )
    .fetch_all(&mut *tx)
    .await
    .context("reading reservations")?;
    tx.rollback().await?;
    let mut reservations: BTreeMap<String, Reservation> = BTreeMap::new();
    for (order_id, status, sku, quantity) in rows {
        let status = parse(&status).with_context(|| format!("reservation of {order_id}"))?;
        let reservation = reservations
            .entry(order_id.clone())
            .or_insert_with(|| Reservation {
                order_id,
                status,
                lines: BTreeMap::new(),
            });
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            *reservation.lines.entry(sku).or_default() += quantity;
        }
    }
    Ok(InventoryDb {
        stock: stock
            .into_iter()
            .map(|(sku, on_hand, reserved)| Stock {
                sku,
                on_hand,
                reserved,
            })
            .collect(),
        reservations: reservations.into_values().collect(),
    })
}

async fn payment(pool: &PgPool) -> anyhow::Result<PaymentDb> {
    let mut tx = read_only(pool, "payment").await?;
    let payments: Vec<(String, String, String)> =
        sqlx::query_as("SELECT order_id, charge_status, refund_status FROM payments")
            .fetch_all(&mut *tx)
            .await
            .context("reading payments")?;
    let transactions: Vec<(String, String, String, i64, Option<String>)> = sqlx::query_as(
        "SELECT order_id::text, kind, status, amount_minor, provider_reference
           FROM payment_transactions ORDER BY created_at, id",
    )
    .fetch_all(&mut *tx)
    .await
    .context("reading payment transactions")?;
    tx.rollback().await?;
    Ok(PaymentDb {
        payments: payments
            .into_iter()
            .map(|(order_id, charge_status, refund_status)| {
                Ok(Payment {
                    charge_status: parse(&charge_status)
                        .with_context(|| format!("payment of {order_id}"))?,
                    refund_status: parse(&refund_status)
                        .with_context(|| format!("payment of {order_id}"))?,
                    order_id,
                })
            })
            .collect::<anyhow::Result<_>>()?,
        transactions: transactions
            .into_iter()
            .map(
                |(order_id, kind, status, amount_minor, provider_reference)| {
                    Ok(PaymentTransaction {
                        kind: parse(&kind).with_context(|| format!("transaction of {order_id}"))?,
                        status: parse(&status)
                            .with_context(|| format!("transaction of {order_id}"))?,
                        order_id,
                        amount_minor,
                        provider_reference,
                    })
                },
            )
            .collect::<anyhow::Result<_>>()?,
    })
}

async fn shipments(pool: &PgPool) -> anyhow::Result<Vec<Shipment>> {
    let mut tx = read_only(pool, "shipping").await?;
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id::text, order_id::text, status FROM shipments")
            .fetch_all(&mut *tx)
            .await
            .context("reading shipments")?;
    tx.rollback().await?;
    rows.into_iter()
        .map(|(id, order_id, status)| {
            Ok(Shipment {
                status: parse(&status).with_context(|| format!("shipment {id}"))?,
                id,
                order_id,
            })
        })
        .collect()
}

type NotificationRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

async fn notifications(pool: &PgPool) -> anyhow::Result<Vec<Notification>> {
    let mut tx = read_only(pool, "notification").await?;
    let rows: Vec<NotificationRow> = sqlx::query_as(
        "SELECT n.id::text, n.order_id::text, n.kind, n.source_event_id::text, e.status
           FROM notifications n LEFT JOIN outgoing_emails e ON e.notification_id = n.id",
    )
    .fetch_all(&mut *tx)
    .await
    .context("reading notifications")?;
    tx.rollback().await?;
    rows.into_iter()
        .map(|(id, order_id, kind, source_event_id, email_status)| {
            Ok(Notification {
                kind: parse(&kind).with_context(|| format!("notification {id}"))?,
                email_status: email_status
                    .as_deref()
                    .map(parse)
                    .transpose()
                    .with_context(|| format!("e-mail of notification {id}"))?,
                id,
                order_id,
                source_event_id,
            })
        })
        .collect()
}

async fn ledger(http: &reqwest::Client, base_url: &str) -> anyhow::Result<Ledger> {
    let url = format!("{}/_sim/charges", base_url.trim_end_matches('/'));
    let answer = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("reading the processor's ledger at {url}"))?;
    anyhow::ensure!(
        answer.status().is_success(),
        "the processor's ledger at {url} answered {}",
        answer.status()
    );
    answer
        .json()
        .await
        .with_context(|| format!("the processor's ledger at {url} is not the expected JSON"))
}

/// The stems of the `.eml` files in the mail folder; a folder not created yet holds none.
fn mail_files(dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("reading the mail folder {}", dir.display()));
        }
    };
    let mut stems = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".eml")) {
            stems.push(stem.to_owned());
        }
    }
    stems.sort();
    Ok(stems)
}

/// Reads every configured source once, in the saga's causal order (see [`crate::rules`]).
pub async fn snapshot(
    sources: &Sources,
    http: &reqwest::Client,
    only: Option<&[String]>,
) -> anyhow::Result<Snapshot> {
    let orders = orders(&sources.order, only).await?;
    let inventory = match &sources.inventory {
        Some(pool) => Some(inventory(pool).await?),
        None => None,
    };
    let payment = match &sources.payment {
        Some(pool) => Some(payment(pool).await?),
        None => None,
    };
    let shipments = match &sources.shipping {
        Some(pool) => Some(shipments(pool).await?),
        None => None,
    };
    let notifications = match &sources.notification {
        Some(pool) => Some(notifications(pool).await?),
        None => None,
    };
    let mail_files = match &sources.mail_dir {
        Some(dir) => Some(mail_files(dir)?),
        None => None,
    };
    let ledger = match &sources.payment_gateway {
        Some(url) => Some(ledger(http, url).await?),
        None => None,
    };
    Ok(Snapshot {
        orders,
        inventory,
        payment,
        ledger,
        shipments,
        notifications,
        mail_files,
    })
}
