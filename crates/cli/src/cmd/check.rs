//! `bazaar check`: Bazaar's global invariants, read from every service's database (in read-only
//! transactions) and the payment gateway simulator's ledger. Exits 1 on any violation.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bazaar_invariants::{Checker, Expectations, Sources};
use clap::Args;
use uuid::Uuid;

use crate::context::Context;
use crate::output::json_line;
use crate::time::parse_duration;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// An order accepted with 202, which must exist (repeatable).
    #[arg(long = "order", value_name = "ORDER_ID")]
    pub orders: Vec<Uuid>,
    /// Accepted order ids, one per line (`-` reads standard input).
    #[arg(long, value_name = "FILE")]
    pub orders_file: Option<PathBuf>,
    /// Check only the listed orders, not every order in the order database.
    #[arg(long)]
    pub only_listed: bool,
    /// Stock of a SKU before any sale, e.g. TEE-BLK-M=25 (repeatable). SKUs without one are
    /// checked for everything but conservation.
    #[arg(long = "initial-stock", value_name = "SKU=UNITS", value_parser = sku_units)]
    pub initial_stock: Vec<(String, i64)>,
    /// Initial stock from a catalog file (`infra/demo/catalog.json`'s format) or a JSON object
    /// of SKU to units.
    #[arg(long, value_name = "FILE")]
    pub initial_stock_file: Option<PathBuf>,
    /// The payment gateway simulator, whose `/_sim/charges` is the processor's ledger.
    #[arg(
        long,
        env = "BAZAAR_PAYMENT_GATEWAY_URL",
        default_value = "http://127.0.0.1:8089",
        value_name = "URL"
    )]
    pub payment_gateway: String,
    /// Do not read the processor's ledger (a real processor has no `/_sim/charges`).
    #[arg(long)]
    pub no_ledger: bool,
    /// No shipping or notification service runs: `paid` is final, and shipments and notices
    /// are not checked.
    #[arg(long)]
    pub no_fulfilment: bool,
    /// The notification service's mail folder (`mail.file.dir`): each e-mail sent must be in
    /// it, and nothing else.
    #[arg(long, value_name = "DIR")]
    pub mail_dir: Option<PathBuf>,
    /// Do not require every notice's e-mail to have been sent.
    #[arg(long)]
    pub allow_unsent: bool,
    /// Keep looking this long while the only violations are sagas still in flight.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub wait: Duration,
    /// Show at most this many violations (`--json` lists all).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

impl CheckArgs {
    fn listed(&self) -> bool {
        !self.orders.is_empty() || self.orders_file.is_some()
    }
}

fn sku_units(text: &str) -> Result<(String, i64), String> {
    let (sku, units) = text
        .split_once('=')
        .ok_or_else(|| format!("expected SKU=UNITS, got {text:?}"))?;
    let units: i64 = units
        .trim()
        .parse()
        .map_err(|_| format!("{units:?} is not a number of units"))?;
    if sku.trim().is_empty() || units < 0 {
        return Err(format!("expected SKU=UNITS with UNITS >= 0, got {text:?}"));
    }
    Ok((sku.trim().to_owned(), units))
}

fn read_order_ids(path: &PathBuf) -> anyhow::Result<Vec<Uuid>> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            line.parse()
                .with_context(|| format!("{line:?} in {} is not an order id", path.display()))
        })
        .collect()
}

pub async fn run(context: &Context, args: CheckArgs) -> anyhow::Result<()> {
    if args.only_listed && !args.listed() {
        anyhow::bail!("--only-listed needs --order or --orders-file");
    }
    let mut accepted: Vec<String> = args.orders.iter().map(Uuid::to_string).collect();
    if let Some(path) = &args.orders_file {
        accepted.extend(read_order_ids(path)?.iter().map(Uuid::to_string));
    }
    let mut initial_stock: BTreeMap<String, i64> = BTreeMap::new();
    if let Some(path) = &args.initial_stock_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        initial_stock.extend(
            bazaar_invariants::initial_stock_from_json(&text)
                .with_context(|| format!("in {}", path.display()))?,
        );
    }
    initial_stock.extend(args.initial_stock.iter().cloned());

    let fulfilment = !args.no_fulfilment;
    let sources = Sources {
        order: context.connect("order", None).await?,
        inventory: Some(context.connect("inventory", None).await?),
        payment: Some(context.connect("payment", None).await?),
        shipping: if fulfilment {
            Some(context.connect("shipping", None).await?)
        } else {
            None
        },
        notification: if fulfilment {
            Some(context.connect("notification", None).await?)
        } else {
            None
        },
        payment_gateway: (!args.no_ledger).then(|| args.payment_gateway.clone()),
        mail_dir: args.mail_dir.clone().filter(|_| fulfilment),
    };
    let expect = Expectations {
        accepted,
        only_accepted: args.only_listed,
        initial_stock,
        emails_sent: !args.allow_unsent,
    };
    let report = Checker::new(sources)
        .check_within(&expect, args.wait)
        .await
        .map_err(|error| crate::exit::Exit::Unavailable(format!("{error:#}")))?;
    if context.json {
        json_line(&serde_json::to_value(&report)?);
    } else {
        print!("{}", report.to_text(args.limit));
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} invariant violation(s)",
            report.violations.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_stock_arguments_are_sku_and_units() {
        assert_eq!(sku_units("TEE-BLK-M=25"), Ok(("TEE-BLK-M".into(), 25)));
        assert!(sku_units("TEE").is_err());
        assert!(sku_units("TEE=-1").is_err());
        assert!(sku_units("=3").is_err());
    }
}
