//! Looking until the system has settled: read, evaluate, and look again while only settling
//! violations remain, up to a deadline.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::collect::{self, Sources};
use crate::model::Snapshot;
use crate::rules::{self, Evaluation, Expectations, Summary, Violation};

/// How long to wait between two looks.
const POLL: Duration = Duration::from_millis(250);

/// Why the checker stopped looking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// No violation.
    Clean,
    /// A violation no later event can undo.
    Violated,
    /// The deadline passed with violations that might still have settled.
    TimedOut,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    pub violations: Vec<Violation>,
    pub summary: Summary,
    /// How many times the sources were read.
    pub rounds: u32,
    /// From the first look to the verdict.
    pub elapsed_ms: u64,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.outcome == Outcome::Clean
    }

    /// A few lines of counts, then one line per violation (at most `limit`).
    pub fn to_text(&self, limit: usize) -> String {
        let mut text = String::new();
        let elapsed = Duration::from_millis(self.elapsed_ms);
        let verdict = match self.outcome {
            Outcome::Clean => "every invariant holds".to_owned(),
            Outcome::Violated => format!("{} violation(s)", self.violations.len()),
            Outcome::TimedOut => format!(
                "{} violation(s) left when the wait ended",
                self.violations.len()
            ),
        };
        text.push_str(&format!(
            "invariants: {verdict} ({} look(s) in {:.1}s)\n",
            self.rounds,
            elapsed.as_secs_f64()
        ));
        for line in summary_lines(&self.summary) {
            text.push_str("  ");
            text.push_str(&line);
            text.push('\n');
        }
        if self.violations.is_empty() {
            return text;
        }
        text.push('\n');
        let rows: Vec<[String; 4]> = self
            .violations
            .iter()
            .take(limit)
            .map(|v| {
                [
                    v.invariant.code(),
                    v.subject.clone(),
                    if v.settling { "settling" } else { "permanent" }.to_owned(),
                    v.detail.clone(),
                ]
            })
            .collect();
        let header = [
            "INVARIANT".to_owned(),
            "SUBJECT".to_owned(),
            "KIND".to_owned(),
            "DETAIL".to_owned(),
        ];
        let widths: Vec<usize> = (0..3)
            .map(|column| {
                rows.iter()
                    .chain(std::iter::once(&header))
                    .map(|row| row[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&header).chain(&rows) {
            text.push_str(&format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {}\n",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            ));
        }
        if self.violations.len() > rows.len() {
            text.push_str(&format!(
                "... and {} more\n",
                self.violations.len() - rows.len()
            ));
        }
        text
    }
}

fn summary_lines(summary: &Summary) -> Vec<String> {
    let mut lines = Vec::new();
    let statuses: Vec<String> = summary
        .statuses
        .iter()
        .map(|(status, count)| format!("{status} {count}"))
        .collect();
    let listed = if summary.accepted > 0 {
        format!(" ({} listed as accepted)", summary.accepted)
    } else {
        String::new()
    };
    lines.push(format!(
        "orders      {}{listed}{}{}",
        summary.orders,
        if statuses.is_empty() { "" } else { ": " },
        statuses.join(", ")
    ));
    if let (Some(charges), Some(refunds)) = (summary.charges, summary.refunds) {
        let mut line = format!("payments    {charges} charge(s), {refunds} refund(s)");
        if let (Some(c), Some(r)) = (summary.ledger_charges, summary.ledger_refunds) {
            line.push_str(&format!("; at the processor {c} charge(s), {r} refund(s)"));
        }
        lines.push(line);
    } else if let (Some(c), Some(r)) = (summary.ledger_charges, summary.ledger_refunds) {
        lines.push(format!(
            "payments    at the processor {c} charge(s), {r} refund(s)"
        ));
    }
    if let (Some(skus), Some(sold), Some(reserved)) =
        (summary.skus, summary.units_sold, summary.units_reserved)
    {
        lines.push(format!(
            "stock       {skus} SKU(s), {sold} unit(s) sold, {reserved} reserved"
        ));
    }
    let mut fulfilment = Vec::new();
    if let Some(shipments) = summary.shipments {
        fulfilment.push(format!("{shipments} shipment(s)"));
    }
    if let Some(notifications) = summary.notifications {
        fulfilment.push(format!("{notifications} notice(s)"));
    }
    if let Some(sent) = summary.emails_sent {
        fulfilment.push(format!("{sent} e-mail(s) sent"));
    }
    if let Some(files) = summary.mail_files {
        fulfilment.push(format!("{files} file(s) in the mail folder"));
    }
    if !fulfilment.is_empty() {
        lines.push(format!("fulfilment  {}", fulfilment.join(", ")));
    }
    lines
}

/// Reads the sources and evaluates the invariants.
#[derive(Debug, Clone)]
pub struct Checker {
    sources: Sources,
    http: reqwest::Client,
}

impl Checker {
    pub fn new(sources: Sources) -> Self {
        Self {
            sources,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                // A checker can sit idle for minutes between checks, past the processor's
                // keep-alive; a kept connection could be one it is closing. Each read of the
                // ledger opens its own.
                .pool_max_idle_per_host(0)
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Reads every source once.
    pub async fn snapshot(&self, expect: &Expectations) -> anyhow::Result<Snapshot> {
        let only = expect.only_accepted.then_some(expect.accepted.as_slice());
        collect::snapshot(&self.sources, &self.http, only).await
    }

    /// One look.
    pub async fn check(&self, expect: &Expectations) -> anyhow::Result<Report> {
        self.check_within(expect, Duration::ZERO).await
    }

    /// Looks until every invariant holds, a permanent violation shows, or `wait` has passed.
    /// A source that cannot be read is tried again until then (it may be restarting).
    pub async fn check_within(
        &self,
        expect: &Expectations,
        wait: Duration,
    ) -> anyhow::Result<Report> {
        let started = Instant::now();
        let mut rounds = 0;
        loop {
            rounds += 1;
            let looked = self.snapshot(expect).await;
            let out_of_time = started.elapsed() >= wait;
            let evaluation = match looked {
                Ok(snapshot) => rules::evaluate(&snapshot, expect),
                Err(error) if out_of_time => return Err(error),
                Err(_) => {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            let Evaluation {
                violations,
                summary,
            } = evaluation;
            let outcome = if violations.is_empty() {
                Outcome::Clean
            } else if violations.iter().any(|v| !v.settling) {
                Outcome::Violated
            } else if out_of_time {
                Outcome::TimedOut
            } else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            return Ok(Report {
                outcome,
                violations,
                summary,
                rounds,
                elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
    }
}
