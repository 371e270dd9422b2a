//! `bazaar overview`: the saga at a glance, from Prometheus: the same metrics, recording rules
//! and alerts that page (infra/prometheus/rules/bazaar.yml), so what the overview shows and
//! what pages cannot disagree.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use order_rules::OrderStatus;
use platform::http::client::HttpClient;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::Context;
use crate::exit::Exit;
use crate::output::Table;

#[derive(Debug, Args)]
pub struct OverviewArgs {
    /// The Prometheus that scrapes Bazaar (`make run` starts one on :9190).
    #[arg(
        long,
        env = "BAZAAR_PROMETHEUS_URL",
        default_value = "http://127.0.0.1:9190"
    )]
    pub prometheus: String,
    /// Print the overview again every this many seconds (0: once).
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub watch: u64,
}

/// The instant queries behind the overview, by name. Rates and percentiles are the recording
/// rules; gauges are read per service (`job`) as the rules aggregate them.
const QUERIES: &[(&str, &str)] = &[
    ("up", "up"),
    ("alerts", "ALERTS{alertstate=\"firing\"}"),
    ("per_minute", "bazaar:order_status_changes:per_minute"),
    ("p50", "bazaar:checkout_paid_seconds:p50_5m"),
    ("p95", "bazaar:checkout_paid_seconds:p95_5m"),
    ("p99", "bazaar:checkout_paid_seconds:p99_5m"),
    ("lag", "job:consumer_lag:sum"),
    ("parked", "job:consumer_parked_keys:max"),
    (
        "outbox_age",
        "job:outbox_oldest_unpublished_age_seconds:max",
    ),
    ("outbox_backlog", "job:outbox_backlog:max"),
    (
        "provider_errors",
        "bazaar:payment_provider_error_ratio:rate5m",
    ),
    ("declined", "bazaar:payment_failure_ratio:rate5m"),
    ("gateway_5xx", "bazaar:gateway_5xx_ratio:rate5m"),
];

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<AnswerData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnswerData {
    result: Vec<Sample>,
}

/// One sample of an instant vector: its labels and `[time, "value"]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Sample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl Sample {
    fn label(&self, name: &str) -> &str {
        self.metric.get(name).map_or("", String::as_str)
    }

    /// `None` for NaN (a ratio of no traffic) and infinities.
    fn number(&self) -> Option<f64> {
        self.value.1.parse::<f64>().ok().filter(|v| v.is_finite())
    }
}

/// Every query's samples, by query name.
pub type Readings = BTreeMap<&'static str, Vec<Sample>>;

pub async fn run(context: &Context, args: OverviewArgs) -> anyhow::Result<()> {
    let client = HttpClient::new(Duration::from_secs(5), |builder| {
        builder.timeout(Duration::from_secs(5))
    })?;
    loop {
        let readings = read(&client, &args.prometheus).await?;
        if context.json {
            println!("{}", to_json(&readings));
        } else {
            if args.watch > 0 {
                // Clear the screen and go home, like watch(1).
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&readings, &args.prometheus));
        }
        if args.watch == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(args.watch)).await;
    }
}

async fn read(client: &HttpClient, prometheus: &str) -> anyhow::Result<Readings> {
    let base = prometheus.trim_end_matches('/');
    let mut readings = Readings::new();
    for (name, query) in QUERIES {
        let url = format!("{base}/api/v1/query?query={}", percent_encode(query));
        let answer: Answer = client
            .send(client.get(&url))
            .await
            .map_err(|error| {
                Exit::Unavailable(format!(
                    "Prometheus at {base} did not answer ({error}); 'make run' starts one, or \
                     set --prometheus / BAZAAR_PROMETHEUS_URL"
                ))
            })?
            .json()
            .await?;
        if answer.status != "success" {
            anyhow::bail!(
                "Prometheus refused {query}: {}",
                answer.error.unwrap_or_default()
            );
        }
        readings.insert(name, answer.data.map(|d| d.result).unwrap_or_default());
    }
    Ok(readings)
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn scalar(readings: &Readings, name: &str) -> Option<f64> {
    readings.get(name)?.first()?.number()
}

fn by_job(readings: &Readings, name: &str) -> BTreeMap<String, f64> {
    readings
        .get(name)
        .into_iter()
        .flatten()
        .filter_map(|sample| Some((sample.label("job").to_owned(), sample.number()?)))
        .collect()
}

fn seconds(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v < 1.0 => format!("{:.0} ms", v * 1000.0),
        Some(v) => format!("{v:.1} s"),
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{:.1} %", v * 100.0))
}

/// Processes up and known, per service.
fn processes(readings: &Readings) -> BTreeMap<String, (usize, usize)> {
    let mut services: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for sample in readings.get("up").into_iter().flatten() {
        let entry = services.entry(sample.label("job").to_owned()).or_default();
        entry.1 += 1;
        if sample.number() == Some(1.0) {
            entry.0 += 1;
        }
    }
    services
}

fn firing(readings: &Readings) -> Vec<String> {
    readings
        .get("alerts")
        .into_iter()
        .flatten()
        .map(|sample| {
            let scope = ["job", "process", "client"]
                .iter()
                .filter_map(|label| {
                    let value = sample.label(label);
                    (!value.is_empty()).then(|| format!("{label}={value}"))
                })
                .collect::<Vec<_>>()
                .join(",");
            format!("{} {{{scope}}}", sample.label("alertname"))
        })
        .collect()
}

pub fn render(readings: &Readings, prometheus: &str) -> String {
    let mut out = String::new();
    let processes = processes(readings);
    let (up, known) = processes
        .values()
        .fold((0, 0), |(u, k), (up, known)| (u + up, k + known));
    out.push_str(&format!("Bazaar overview (from {prometheus})\n\n"));
    out.push_str(&format!("Processes up   {up}/{known}\n"));
    let alerts = firing(readings);
    if alerts.is_empty() {
        out.push_str("Alerts firing  none\n");
    } else {
        out.push_str(&format!("Alerts firing  {}\n", alerts.len()));
        for alert in &alerts {
            out.push_str(&format!("  {alert}\n"));
        }
    }

    let per_minute: BTreeMap<String, f64> = readings
        .get("per_minute")
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s.label("status").to_owned(), s.number()?)))
        .collect();
    out.push_str("\nOrders entering each status, per minute (last minute)\n  ");
    let cells: Vec<String> = OrderStatus::ALL
        .iter()
        .map(|status| {
            let value = per_minute.get(status.as_str()).copied().unwrap_or(0.0);
            format!("{} {value:.1}", status.as_str())
        })
        .collect();
    out.push_str(&cells.join("   "));
    out.push_str(&format!(
        "\nCheckout → paid (5 min)   p50 {}   p95 {}   p99 {}\n",
        seconds(scalar(readings, "p50")),
        seconds(scalar(readings, "p95")),
        seconds(scalar(readings, "p99")),
    ));
    out.push_str(&format!(
        "Card processor (5 min)    errors {}   charges declined {}\n",
        percent(scalar(readings, "provider_errors")),
        percent(scalar(readings, "declined")),
    ));
    out.push_str(&format!(
        "Gateway (5 min)           5xx {}\n\n",
        percent(scalar(readings, "gateway_5xx")),
    ));

    let lag = by_job(readings, "lag");
    let parked = by_job(readings, "parked");
    let age = by_job(readings, "outbox_age");
    let backlog = by_job(readings, "outbox_backlog");
    let mut table = Table::new([
        "SERVICE",
        "UP",
        "CONSUMER LAG",
        "PARKED KEYS",
        "OUTBOX BACKLOG",
        "OUTBOX AGE",
    ])
    .right_aligned(&[1, 2, 3, 4, 5]);
    for (job, (up, known)) in &processes {
        let number = |map: &BTreeMap<String, f64>| {
            map.get(job)
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
        };
        table.row(vec![
            job.clone(),
            format!("{up}/{known}"),
            number(&lag),
            number(&parked),
            number(&backlog),
            age.get(job)
                .map_or_else(|| "-".to_owned(), |v| seconds(Some(*v))),
        ]);
    }
    out.push_str(&table.render());
    out
}

pub fn to_json(readings: &Readings) -> Value {
    let per_minute: BTreeMap<String, Option<f64>> = readings
        .get("per_minute")
        .into_iter()
        .flatten()
        .map(|s| (s.label("status").to_owned(), s.number()))
        .collect();
    let services: BTreeMap<String, Value> = processes(readings)
        .into_iter()
        .map(|(job, (up, known))| {
            let value = |name| by_job(readings, name).get(&job).copied();
            let entry = json!({
                "up": up,
                "processes": known,
                "consumer_lag": value("lag"),
                "parked_keys": value("parked"),
                "outbox_backlog": value("outbox_backlog"),
                "outbox_oldest_unpublished_age_seconds": value("outbox_age"),
            });
            (job, entry)
        })
        .collect();
    json!({
        "alerts_firing": firing(readings),
        "orders_per_minute": per_minute,
        "checkout_paid_seconds": {
            "p50": scalar(readings, "p50"),
            "p95": scalar(readings, "p95"),
            "p99": scalar(readings, "p99"),
        },
        "payment_provider_error_ratio": scalar(readings, "provider_errors"),
        "payment_failure_ratio": scalar(readings, "declined"),
        "gateway_5xx_ratio": scalar(readings, "gateway_5xx"),
        "services": services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: &[(&str, &str)], value: &str) -> Sample {
        Sample {
            metric: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value: (0.0, value.to_owned()),
        }
    }

    fn readings() -> Readings {
        let mut readings = Readings::new();
        readings.insert(
            "up",
            vec![
                sample(&[("job", "order"), ("process", "order-1")], "1"),
                sample(&[("job", "order"), ("process", "order-2")], "0"),
                sample(&[("job", "inventory"), ("process", "inventory")], "1"),
            ],
        );
        readings.insert(
            "alerts",
            vec![sample(
                &[("alertname", "BazaarKeyParked"), ("job", "inventory")],
                "1",
            )],
        );
        readings.insert(
            "per_minute",
            vec![
                sample(&[("status", "pending")], "120"),
                sample(&[("status", "paid")], "118.5"),
            ],
        );
        readings.insert("p50", vec![sample(&[], "0.42")]);
        readings.insert("p95", vec![sample(&[], "1.3")]);
        readings.insert("provider_errors", vec![sample(&[], "NaN")]);
        readings.insert("lag", vec![sample(&[("job", "inventory")], "12")]);
        readings.insert("parked", vec![sample(&[("job", "inventory")], "1")]);
        readings
    }

    #[test]
    fn the_overview_shows_each_figure_and_a_dash_where_there_is_none() {
        let text = render(&readings(), "http://prometheus");
        assert!(text.contains("Processes up   2/3"), "{text}");
        assert!(text.contains("BazaarKeyParked {job=inventory}"), "{text}");
        assert!(text.contains("pending 120.0   paid 118.5"), "{text}");
        assert!(text.contains("p50 420 ms   p95 1.3 s   p99 -"), "{text}");
        assert!(text.contains("errors -"), "{text}");
        let inventory = text
            .lines()
            .find(|line| line.starts_with("inventory"))
            .unwrap();
        assert_eq!(
            inventory.split_whitespace().collect::<Vec<_>>(),
            ["inventory", "1/1", "12", "1", "-", "-"]
        );
        let order = text.lines().find(|line| line.starts_with("order")).unwrap();
        assert!(order.contains("1/2"), "{order}");
    }

    #[test]
    fn json_has_the_same_figures() {
        let value = to_json(&readings());
        assert_eq!(value["services"]["inventory"]["parked_keys"], 1.0);
        assert_eq!(value["orders_per_minute"]["paid"], 118.5);
        assert_eq!(value["checkout_paid_seconds"]["p95"], 1.3);
        assert!(value["payment_provider_error_ratio"].is_null());
        assert_eq!(value["alerts_firing"][0], "BazaarKeyParked {job=inventory}");
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            percent_encode("ALERTS{alertstate=\"firing\"}"),
            "ALERTS%7Balertstate%3D%22firing%22%7D"
        );
    }
}
