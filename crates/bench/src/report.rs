//! The results of a `stack-bench` run (saved as JSON, so a later run can be put beside it) and
//! their rendering: `docs/benchmarks.md` and an SVG chart.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::Percentiles;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gb: f64,
    pub kernel: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RateReport {
    pub offered: f64,
    pub seconds: f64,
    pub scheduled: usize,
    pub placed: usize,
    pub errors: BTreeMap<String, usize>,
    pub error_count: usize,
    pub late_sends: usize,
    pub max_late_ms: f64,
    pub accept: Option<Percentiles>,
    pub watched: usize,
    pub paid_on_stream: Option<Percentiles>,
    /// `paid` written into the order's history → seen on its stream: the push alone.
    #[serde(default)]
    pub paid_pushed: Option<Percentiles>,
    pub shipped_on_stream: Option<Percentiles>,
    pub paid_per_s: f64,
    pub shipped_per_s: f64,
    pub paid_total: i64,
    pub shipped_total: i64,
    pub rejected: i64,
    pub lag_at_end: BTreeMap<String, i64>,
    /// Seconds from the last send until every group's lag was 0 (None: not within the limit).
    pub lag_drain_s: Option<f64>,
    /// Seconds from the last send until every order placed was final.
    pub final_after_s: Option<f64>,
    pub open_at_deadline: i64,
    /// Label → CPU ms per order placed, from the first send until every order was final.
    pub cpu_ms_per_order: BTreeMap<String, f64>,
    pub cpu_total_ms_per_order: f64,
    /// The stack's CPU over the window, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    pub cpu_window_s: f64,
    pub load_average: f64,
    pub rustc_running: usize,
    /// Statements the services logged as slow (over 1 s) during the rate: disk stalls.
    #[serde(default)]
    pub slow_statements: crate::stalls::SlowStatements,
    pub past_knee: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleReport {
    pub seconds: f64,
    /// Label → % of one core.
    pub cpu_percent: BTreeMap<String, f64>,
    pub total_percent: f64,
    /// Database → statements per second (transaction control excluded).
    pub statements_per_s: BTreeMap<String, f64>,
    pub transactions_per_s: BTreeMap<String, f64>,
    pub load_average: f64,
    pub rustc_running: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceStatements {
    pub database: String,
    pub transactions_per_order: f64,
    pub statements_per_order: f64,
    pub transaction_control_per_order: f64,
    /// (statement, calls per order), most called first.
    pub top: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatementReport {
    pub orders: usize,
    pub rate: f64,
    pub window_s: f64,
    pub services: Vec<ServiceStatements>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Floors {
    /// Kafka EndToEndLatency (acks=all, 5000 × 200 B): avg, p50, p99 ms.
    pub kafka_e2e_ms: Option<(f64, f64, f64)>,
    pub pgbench_tps: Option<f64>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    pub label: String,
    pub commit: String,
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub customers: usize,
    pub watch_share: f64,
    pub seconds_per_rate: f64,
    pub idle: Option<IdleReport>,
    pub statements: Option<StatementReport>,
    pub rates: Vec<RateReport>,
    pub sustain: Option<RateReport>,
    pub knee: Option<f64>,
    pub floors: Floors,
    pub notes: Vec<String>,
}

fn f1(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.1}")
    } else {
        "–".into()
    }
}

fn f2(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.2}")
    } else {
        "–".into()
    }
}

fn pct(p: Option<Percentiles>) -> String {
    p.map_or("–".into(), |p| {
        format!("{:.0} / {:.0} / {:.0}", p.p50, p.p95, p.p99)
    })
}

fn secs(value: Option<f64>) -> String {
    value.map_or("not within the limit".into(), |s| format!("{s:.1} s"))
}

fn errors_text(rate: &RateReport) -> String {
    if rate.errors.is_empty() {
        return "0".into();
    }
    let kinds: Vec<String> = rate
        .errors
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    format!("{} ({})", rate.error_count, kinds.join("; "))
}

/// One line per rate: the per-rate table.
pub fn rate_row(rate: &RateReport, name: &str) -> String {
    let lag: i64 = rate.lag_at_end.values().sum();
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        rate.placed,
        errors_text(rate),
        rate.late_sends,
        pct(rate.accept),
        pct(rate.paid_on_stream),
        pct(rate.paid_pushed),
        rate.watched,
        f1(rate.paid_per_s),
        f1(rate.shipped_per_s),
        lag,
        secs(rate.lag_drain_s),
        f2(rate.cpu_total_ms_per_order),
        f2(rate.cpu_cores),
    )
}

pub const RATE_HEADER: &str = "| offered /s | placed | errors | late sends | checkout → 202 ms p50 / p95 / p99 | checkout → `paid` on the stream ms p50 / p95 / p99 | `paid` written → on the stream ms p50 / p95 / p99 | streams watched | `paid` /s | `shipping_scheduled` /s | lag at end | lag → 0 after | CPU ms / order (stack) | stack CPU, cores |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn rate_name(rate: f64) -> String {
    format!("{rate:.0}")
}

/// The per-process CPU table: rows are processes, columns are rates.
fn cpu_table(out: &mut String, rates: &[&RateReport]) {
    let mut labels: BTreeSet<String> = BTreeSet::new();
    for rate in rates {
        labels.extend(rate.cpu_ms_per_order.keys().cloned());
    }
    let mut ordered: Vec<String> = labels.into_iter().collect();
    // Most expensive first, at the highest rate.
    if let Some(last) = rates.last() {
        ordered.sort_by(|a, b| {
            let x = last.cpu_ms_per_order.get(a).copied().unwrap_or(0.0);
            let y = last.cpu_ms_per_order.get(b).copied().unwrap_or(0.0);
            y.total_cmp(&x)
        });
    }
    let _ = write!(out, "| process |");
    for rate in rates {
        let _ = write!(out, " {} /s |", rate_name(rate.offered));
    }
    let _ = write!(out, "\n|---|");
    for _ in rates {
        let _ = write!(out, "---|");
    }
    let _ = writeln!(out);
    for label in ordered.iter().filter(|l| crate::cpu::counts_in_total(l)) {
        let _ = write!(out, "| {label} |");
        for rate in rates {
            let _ = write!(
                out,
                " {} |",
                rate.cpu_ms_per_order
                    .get(label)
                    .map_or("–".into(), |v| f2(*v))
            );
        }
        let _ = writeln!(out);
    }
    let _ = write!(out, "| **whole stack** |");
    for rate in rates {
        let _ = write!(out, " **{}** |", f2(rate.cpu_total_ms_per_order));
    }
    let _ = writeln!(out);
    for label in ordered.iter().filter(|l| !crate::cpu::counts_in_total(l)) {
        let _ = write!(out, "| {label} |");
        for rate in rates {
            let _ = write!(
                out,
                " {} |",
                rate.cpu_ms_per_order
                    .get(label)
                    .map_or("–".into(), |v| f2(*v))
            );
        }
        let _ = writeln!(out);
    }
}

fn idle_table(out: &mut String, runs: &[&RunReport]) {
    let idles: Vec<(&str, &IdleReport)> = runs
        .iter()
        .filter_map(|run| run.idle.as_ref().map(|idle| (run.label.as_str(), idle)))
        .collect();
    if idles.is_empty() {
        return;
    }
    let mut labels: BTreeSet<String> = BTreeSet::new();
    for (_, idle) in &idles {
        labels.extend(idle.cpu_percent.keys().cloned());
    }
    let _ = write!(out, "| process |");
    for (label, idle) in &idles {
        let _ = write!(out, " {label}: % of one core ({:.0} s) |", idle.seconds);
    }
    let _ = write!(out, "\n|---|");
    for _ in &idles {
        let _ = write!(out, "---|");
    }
    let _ = writeln!(out);
    let mut ordered: Vec<String> = labels.into_iter().collect();
    ordered.sort_by_key(|label| !crate::cpu::counts_in_total(label));
    let mut total_written = false;
    for label in &ordered {
        if !crate::cpu::counts_in_total(label) && !total_written {
            let _ = write!(out, "| **whole stack** |");
            for (_, idle) in &idles {
                let _ = write!(out, " **{}** |", f1(idle.total_percent));
            }
            let _ = writeln!(out);
            total_written = true;
        }
        let _ = write!(out, "| {label} |");
        for (_, idle) in &idles {
            let _ = write!(
                out,
                " {} |",
                idle.cpu_percent.get(label).map_or("–".into(), |v| f1(*v))
            );
        }
        let _ = writeln!(out);
    }
    if !total_written {
        let _ = write!(out, "| **whole stack** |");
        for (_, idle) in &idles {
            let _ = write!(out, " **{}** |", f1(idle.total_percent));
        }
        let _ = writeln!(out);
    }
}

fn statements_section(out: &mut String, run: &RunReport) {
    let Some(statements) = &run.statements else {
        let _ = writeln!(
            out,
            "Not measured in this run (pg_stat_statements was not available; `infra/postgres/pgctl.sh restart` loads it once).\n"
        );
        return;
    };
    let _ = writeln!(
        out,
        "{} orders at {:.0}/s ({} of them followed on their event stream, as in the ramp), each followed to a final status; \
         counters over a {:.0} s window (ending 11 s after the last order was final, so that pg_stat_database has every backend's transactions), less what the same databases do at idle over as long (measured in the idle window). \
         Transactions are pg_stat_database's commits + rollbacks; statements are pg_stat_statements' calls without \
         BEGIN/COMMIT/ROLLBACK.\n",
        statements.orders,
        statements.rate,
        format_args!("{:.0} %", run.watch_share * 100.0),
        statements.window_s
    );
    let _ = writeln!(
        out,
        "| database (service) | transactions / order | statements / order | BEGIN/COMMIT / order |\n|---|---|---|---|"
    );
    let mut total = (0.0, 0.0, 0.0);
    for service in &statements.services {
        total.0 += service.transactions_per_order;
        total.1 += service.statements_per_order;
        total.2 += service.transaction_control_per_order;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            service.database,
            f1(service.transactions_per_order),
            f1(service.statements_per_order),
            f1(service.transaction_control_per_order)
        );
    }
    let _ = writeln!(
        out,
        "| **all** | **{}** | **{}** | **{}** |\n",
        f1(total.0),
        f1(total.1),
        f1(total.2)
    );
    let _ = writeln!(
        out,
        "Most frequent statements per order (per database, at most 6 each):\n\n| database | calls / order | statement |\n|---|---|---|"
    );
    for service in &statements.services {
        for (query, per_order) in service.top.iter().take(6) {
            let mut text: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
            if text.chars().count() > 110 {
                text = text.chars().take(107).collect::<String>() + "…";
            }
            let _ = writeln!(
                out,
                "| {} | {} | `{}` |",
                service.database,
                f2(*per_order),
                text.replace('|', "\\|").replace('`', "'")
            );
        }
    }
    let _ = writeln!(out);
}

fn target_lines(out: &mut String, run: &RunReport) {
    let within: Vec<&RateReport> = run
        .rates
        .iter()
        .filter(|r| r.past_knee.is_empty())
        .collect();
    let cpu = within
        .iter()
        .map(|r| (r.offered, r.cpu_total_ms_per_order))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let _ = writeln!(out, "| target (issue 11) | measured | met |\n|---|---|---|");
    match cpu {
        Some((rate, ms)) => {
            let _ = writeln!(
                out,
                "| CPU per order ≤ 5 ms, whole stack | {} ms (lowest, at {rate:.0}/s) | {} |",
                f2(ms),
                if ms <= 5.0 { "yes" } else { "no" }
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| CPU per order ≤ 5 ms, whole stack | no rate held | no |"
            );
        }
    }
    match &run.sustain {
        Some(s) => {
            let ok = s.offered >= 300.0
                && s.seconds >= 60.0
                && s.error_count == 0
                && s.lag_drain_s.is_some_and(|d| d <= 5.0)
                && s.paid_per_s >= 0.95 * s.offered;
            let _ = writeln!(
                out,
                "| ≥ 300 checkouts/s for 60 s, 0 errors, lag → 0 within 5 s | {:.0}/s for {:.0} s: {} errors, paid {:.0}/s, lag → 0 after {} | {} |",
                s.offered,
                s.seconds,
                s.error_count,
                s.paid_per_s,
                secs(s.lag_drain_s),
                if ok { "yes" } else { "no" }
            );
        }
        None => {
            let best = within.iter().map(|r| r.offered).fold(f64::NAN, f64::max);
            let _ = writeln!(
                out,
                "| ≥ 300 checkouts/s for 60 s, 0 errors, lag → 0 within 5 s | sustain stage not run; the ramp held up to {} /s | {} |",
                if best.is_finite() {
                    format!("{best:.0}")
                } else {
                    "no rate".into()
                },
                if best >= 300.0 { "not shown" } else { "no" }
            );
        }
    }
    match run.rates.iter().find(|r| (r.offered - 100.0).abs() < 0.5) {
        Some(r) => {
            let ok = r
                .paid_on_stream
                .is_some_and(|p| p.p50 <= 30.0 && p.p99 <= 100.0);
            let _ = writeln!(
                out,
                "| at 100/s, checkout → `paid` on the stream p50 ≤ 30 ms, p99 ≤ 100 ms | {} | {} |",
                r.paid_on_stream.map_or("–".into(), |p| format!(
                    "p50 {:.0} ms, p99 {:.0} ms",
                    p.p50, p.p99
                )),
                if ok && r.error_count == 0 {
                    "yes"
                } else {
                    "no"
                }
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| at 100/s, checkout → `paid` on the stream p50 ≤ 30 ms, p99 ≤ 100 ms | the ramp stopped before 100/s | no |"
            );
        }
    }
    if let Some(idle) = &run.idle {
        let _ = writeln!(
            out,
            "| idle ≤ 5 % of one core | {} % | {} |",
            f1(idle.total_percent),
            if idle.total_percent <= 5.0 {
                "yes"
            } else {
                "no"
            }
        );
    }
    let _ = writeln!(out);
}

fn floors_table(out: &mut String, floors: &Floors) {
    let _ = writeln!(out, "| floor | value |\n|---|---|");
    match floors.kafka_e2e_ms {
        Some((avg, p50, p99)) => {
            let _ = writeln!(
                out,
                "| Kafka EndToEndLatency (acks=all, 5000 × 200 B): avg / p50 / p99 | {avg:.2} / {p50:.0} / {p99:.0} ms |"
            );
        }
        None => {
            let _ = writeln!(out, "| Kafka EndToEndLatency | not measured |");
        }
    }
    match floors.pgbench_tps {
        Some(tps) => {
            let _ = writeln!(
                out,
                "| pgbench simple-update (-N, 4 clients, 10 s) | {tps:.0} transactions/s |"
            );
        }
        None => {
            let _ = writeln!(out, "| pgbench | not measured |");
        }
    }
    for error in &floors.errors {
        let _ = writeln!(out, "| (error) | {error} |");
    }
    let _ = writeln!(out);
}

fn knee_text(run: &RunReport) -> String {
    let past = run.rates.iter().find(|r| !r.past_knee.is_empty());
    let knee = run.knee.map_or("below the lowest rate tried".into(), |k| {
        format!("{k:.0} checkouts/s")
    });
    match past {
        Some(p) => format!(
            "**{knee}**: the highest offered rate that held. At {:.0}/s: {}.",
            p.offered,
            p.past_knee.join("; ")
        ),
        None => format!("**not reached**: every rate tried held (highest: {knee})."),
    }
}

/// One run's sections (used for the current run, and for the one it is compared with).
fn run_sections(out: &mut String, run: &RunReport, level: &str) {
    let _ = writeln!(out, "{level} Checkout under load: {}\n", run.label);
    let _ = writeln!(
        out,
        "{} customers, {:.0} s of open-loop load per rate, {:.0} % of checkouts followed on the order's event stream. \
         Latencies in ms; \"`paid` written → on the stream\" is the push alone, from the `paid` row's time in the order's history to the frame's arrival. `paid`/s and `shipping_scheduled`/s count the statuses reached inside the load window (less its first quarter, at most 2 s); \
         \"lag at end\" is the sum over the consumer groups when the last checkout was sent.\n",
        run.customers,
        run.seconds_per_rate,
        run.watch_share * 100.0
    );
    let _ = writeln!(out, "{RATE_HEADER}");
    for rate in &run.rates {
        let _ = writeln!(out, "{}", rate_row(rate, &rate_name(rate.offered)));
    }
    if let Some(s) = &run.sustain {
        let _ = writeln!(
            out,
            "{}",
            rate_row(
                s,
                &format!("{} (sustained {:.0} s)", rate_name(s.offered), s.seconds)
            )
        );
    }
    let _ = writeln!(out, "\nKnee: {}\n", knee_text(run));
    let _ = writeln!(
        out,
        "{level}# CPU ms per order, by process ({})\n",
        run.label
    );
    let _ = writeln!(
        out,
        "From /proc/<pid>/stat (user + system, every thread), from the first checkout sent until every order was final, \
         divided by the orders placed; idle burn over that window included. PostgreSQL is split by what each of its \
         processes serves.\n"
    );
    let mut rates: Vec<&RateReport> = run.rates.iter().collect();
    if let Some(s) = &run.sustain {
        rates.push(s);
    }
    cpu_table(out, &rates);
    let _ = writeln!(out);
    let loads: Vec<String> = rates
        .iter()
        .map(|r| {
            let stalls = match r.slow_statements {
                slow if slow.count == 0 => "no statement over 1 s".to_owned(),
                slow => format!(
                    "**{} statements over 1 s (slowest {:.1} s): disk stalls disturbed this rate**",
                    slow.count, slow.slowest_s
                ),
            };
            format!(
                "{:.0}/s: load {:.2}, {} rustc, {stalls}",
                r.offered, r.load_average, r.rustc_running
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "Machine load beside each rate (1-minute load average, rustc processes running at its end; statements the services logged as slower than 1 s during it): {}.\n",
        loads.join("; ")
    );
}

/// Renders `docs/benchmarks.md`. `before` is an earlier run to compare with (its figures are
/// shown beside this run's). `micro` is the in-process micro-benchmark section, kept as is.
pub fn render(
    run: &RunReport,
    before: Option<&RunReport>,
    analysis: &str,
    micro: &str,
    chart: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Produced by `make bench` (`crates/bench/src/bin/stack-bench.rs`) on {}: the processes `make run RELEASE=1` starts \
         (release build; PostgreSQL, one Kafka broker, every service, the gateway), driven only through the gateway on :8080 \
         by simulated customers, on one machine ({} CPUs, {}, {:.0} GB, Linux {}) that also runs the load generator. \
         Current run: **{}** (commit {}).\n",
        run.date,
        run.machine.cpus,
        run.machine.cpu_model,
        run.machine.memory_gb,
        run.machine.kernel,
        run.label,
        run.commit
    );
    let _ = writeln!(out, "```sh\n{}\n```\n", run.command);
    let _ = writeln!(out, "## Targets\n");
    target_lines(&mut out, run);
    let _ = writeln!(
        out,
        "![checkout → paid on the stream, and CPU per order, by offered rate]({chart})\n"
    );
    out.push_str(analysis);
    if let Some(before) = before {
        compare(&mut out, before, run);
    }
    run_sections(&mut out, run, "##");
    let _ = writeln!(out, "## Idle\n");
    let _ = writeln!(
        out,
        "The whole stack with no load (after the ramp, once the consumers drained and the event streams closed, less an 11 s settle), as % of one core; the statement rates are what the services' \
         databases run by themselves.\n"
    );
    let mut idles: Vec<&RunReport> = Vec::new();
    if let Some(before) = before {
        idles.push(before);
    }
    idles.push(run);
    idle_table(&mut out, &idles);
    if let Some(idle) = &run.idle {
        let rows: Vec<String> = idle
            .statements_per_s
            .iter()
            .map(|(db, s)| {
                format!(
                    "{db} {:.1} statements/s, {:.1} transactions/s",
                    s,
                    idle.transactions_per_s.get(db).copied().unwrap_or(0.0)
                )
            })
            .collect();
        let _ = writeln!(out, "\nAt idle ({}): {}.\n", run.label, rows.join("; "));
    }
    let _ = writeln!(
        out,
        "## Transactions and statements per checkout: {}\n",
        run.label
    );
    statements_section(&mut out, run);
    if let Some(before) = before
        && before.statements.is_some()
    {
        let _ = writeln!(out, "### Before: {}\n", before.label);
        statements_section(&mut out, before);
    }
    let _ = writeln!(out, "## Floors of this machine (same run)\n");
    floors_table(&mut out, &run.floors);
    if !run.notes.is_empty() {
        let _ = writeln!(out, "## Notes\n");
        for note in &run.notes {
            let _ = writeln!(out, "- {note}");
        }
        let _ = writeln!(out);
    }
    if let Some(before) = before {
        run_sections(&mut out, before, "##");
    }
    out.push_str(micro);
    out
}

fn compare(out: &mut String, before: &RunReport, after: &RunReport) {
    let _ = writeln!(out, "## Before and after\n");
    let _ = writeln!(
        out,
        "Before: {} ({}). After: {} ({}).\n",
        before.label, before.date, after.label, after.date
    );
    let _ = writeln!(
        out,
        "| offered /s | `paid` p50 / p99 ms, before | after | CPU ms / order, before | after | errors before | after |\n|---|---|---|---|---|---|---|"
    );
    let mut offered: Vec<f64> = before
        .rates
        .iter()
        .chain(&after.rates)
        .map(|r| r.offered)
        .collect();
    offered.sort_by(f64::total_cmp);
    offered.dedup();
    let find = |run: &RunReport, rate: f64| {
        run.rates
            .iter()
            .find(|r| (r.offered - rate).abs() < 0.5)
            .cloned()
    };
    let p = |r: &Option<RateReport>| {
        r.as_ref()
            .and_then(|r| r.paid_on_stream)
            .map_or("–".into(), |p| format!("{:.0} / {:.0}", p.p50, p.p99))
    };
    let c = |r: &Option<RateReport>| {
        r.as_ref()
            .map_or("–".into(), |r| f2(r.cpu_total_ms_per_order))
    };
    let e = |r: &Option<RateReport>| r.as_ref().map_or("–".into(), |r| r.error_count.to_string());
    for rate in offered {
        let (b, a) = (find(before, rate), find(after, rate));
        let _ = writeln!(
            out,
            "| {rate:.0} | {} | {} | {} | {} | {} | {} |",
            p(&b),
            p(&a),
            c(&b),
            c(&a),
            e(&b),
            e(&a)
        );
    }
    let _ = writeln!(
        out,
        "\nKnee: before {}; after {}.\n",
        before.knee.map_or("–".into(), |k| format!("{k:.0}/s")),
        after.knee.map_or("–".into(), |k| format!("{k:.0}/s"))
    );
    // Per process at the highest rate both held.
    let common = before
        .rates
        .iter()
        .filter(|b| b.past_knee.is_empty())
        .filter_map(|b| {
            after
                .rates
                .iter()
                .find(|a| (a.offered - b.offered).abs() < 0.5)
                .map(|a| (b, a))
        })
        .next_back();
    if let Some((b, a)) = common {
        let _ = writeln!(
            out,
            "CPU ms per order by process at {:.0}/s:\n\n| process | before | after |\n|---|---|---|",
            b.offered
        );
        let labels: BTreeSet<&String> = b
            .cpu_ms_per_order
            .keys()
            .chain(a.cpu_ms_per_order.keys())
            .collect();
        for label in labels {
            let _ = writeln!(
                out,
                "| {label} | {} | {} |",
                b.cpu_ms_per_order.get(label).map_or("–".into(), |v| f2(*v)),
                a.cpu_ms_per_order.get(label).map_or("–".into(), |v| f2(*v))
            );
        }
        let _ = writeln!(
            out,
            "| **whole stack** | **{}** | **{}** |\n",
            f2(b.cpu_total_ms_per_order),
            f2(a.cpu_total_ms_per_order)
        );
    }
}

/// Two panels: checkout → paid on the stream (p50, p99; log scale) and the stack's CPU ms per
/// order, by offered rate. `before` is drawn dashed.
pub fn svg_chart(run: &RunReport, before: Option<&RunReport>) -> String {
    let (panel_w, height, margin) = (420.0_f64, 340.0_f64, 55.0_f64);
    let width = panel_w * 2.0;
    let mut runs: Vec<(&RunReport, &str)> = Vec::new();
    if let Some(before) = before {
        runs.push((before, "6,4"));
    }
    runs.push((run, ""));
    let all_rates: Vec<f64> = runs
        .iter()
        .flat_map(|(r, _)| r.rates.iter().map(|x| x.offered))
        .collect();
    let max_x = all_rates.iter().copied().fold(1.0, f64::max);
    let lat_values: Vec<f64> = runs
        .iter()
        .flat_map(|(r, _)| {
            r.rates
                .iter()
                .filter_map(|x| x.paid_on_stream)
                .flat_map(|p| [p.p50, p.p99])
        })
        .collect();
    let lat_max = lat_values.iter().copied().fold(10.0, f64::max);
    let lat_min = lat_values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .clamp(1.0, 10.0);
    let (log_lo, log_hi) = (
        lat_min.log10().floor(),
        lat_max.log10().ceil().max(lat_min.log10().floor() + 1.0),
    );
    let cpu_max = runs
        .iter()
        .flat_map(|(r, _)| r.rates.iter().map(|x| x.cpu_total_ms_per_order))
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let sx = |panel: f64, x: f64| panel * panel_w + margin + x / max_x * (panel_w - 1.6 * margin);
    let plot_h = height - 2.0 * margin;
    let sy_lat =
        |y: f64| height - margin - (y.max(1e-3).log10() - log_lo) / (log_hi - log_lo) * plot_h;
    let sy_cpu = |y: f64| height - margin - y / cpu_max * plot_h;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for panel in [0.0, 1.0] {
        let x0 = panel * panel_w + margin;
        let x1 = panel * panel_w + panel_w - 0.6 * margin;
        let _ = writeln!(
            svg,
            "<line x1=\"{x0}\" y1=\"{}\" x2=\"{x1}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{x0}\" y1=\"{margin}\" x2=\"{x0}\" y2=\"{}\" stroke=\"black\"/>",
            height - margin,
            height - margin,
            height - margin
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered checkouts/s</text>",
            (x0 + x1) / 2.0,
            height - 12.0
        );
        let mut ticks: Vec<f64> = all_rates.clone();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        for x in ticks {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{x:.0}</text>",
                sx(panel, x),
                height - margin + 14.0
            );
        }
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-weight=\"bold\">checkout → paid on the stream (ms, log scale)</text>",
        panel_w / 2.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-weight=\"bold\">CPU per order, whole stack (ms)</text>",
        panel_w * 1.5
    );
    let mut decade = log_lo;
    while decade <= log_hi {
        for mantissa in [1.0, 3.0] {
            let value = 10f64.powf(decade) * mantissa;
            if value.log10() > log_hi + 1e-9 {
                continue;
            }
            let y = sy_lat(value);
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\">{value:.0}</text><line x1=\"{margin}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/>",
                margin - 4.0,
                y + 4.0,
                panel_w - 0.6 * margin
            );
        }
        decade += 1.0;
    }
    for tick in 0..=4 {
        let value = cpu_max * f64::from(tick) / 4.0;
        let y = sy_cpu(value);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\">{value:.1}</text><line x1=\"{}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/>",
            panel_w + margin - 4.0,
            y + 4.0,
            panel_w + margin,
            2.0 * panel_w - 0.6 * margin
        );
    }
    // One legend line per series, stacked in its panel.
    let mut legend_rows = [0.0_f64, 0.0_f64];
    for (r, dash) in &runs {
        let series: [Series; 3] = [
            (
                "p50",
                "#1f77b4",
                r.rates
                    .iter()
                    .filter_map(|x| x.paid_on_stream.map(|p| (x.offered, p.p50)))
                    .collect(),
                false,
            ),
            (
                "p99",
                "#d62728",
                r.rates
                    .iter()
                    .filter_map(|x| x.paid_on_stream.map(|p| (x.offered, p.p99)))
                    .collect(),
                false,
            ),
            (
                "CPU/order",
                "#2ca02c",
                r.rates
                    .iter()
                    .filter(|x| x.cpu_total_ms_per_order.is_finite())
                    .map(|x| (x.offered, x.cpu_total_ms_per_order))
                    .collect(),
                true,
            ),
        ];
        for (name, colour, points, is_cpu) in series {
            let panel = if is_cpu { 1.0 } else { 0.0 };
            let path: Vec<String> = points
                .iter()
                .map(|(x, y)| {
                    let y = if is_cpu { sy_cpu(*y) } else { sy_lat(*y) };
                    format!("{:.1},{y:.1}", sx(panel, *x))
                })
                .collect();
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>",
                path.join(" ")
            );
            for point in &path {
                if let Some((x, y)) = point.split_once(',') {
                    let _ = writeln!(
                        svg,
                        "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{colour}\"/>"
                    );
                }
            }
            // Latency rises to the right and CPU per order falls: legends where the lines are not.
            let legend_x = if is_cpu {
                panel * panel_w + panel_w - 0.6 * margin - 170.0
            } else {
                margin + 8.0
            };
            let row = &mut legend_rows[usize::from(is_cpu)];
            let legend_y = 38.0 + *row * 12.0;
            *row += 1.0;
            let _ = writeln!(
                svg,
                "<line x1=\"{legend_x}\" y1=\"{legend_y}\" x2=\"{}\" y2=\"{legend_y}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\" font-size=\"10\">{name}: {}</text>",
                legend_x + 20.0,
                legend_x + 24.0,
                legend_y + 4.0,
                escape(&r.label)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// Name, colour, points, and whether it belongs to the CPU panel.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>, bool);

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A hand-written analysis between these markers is carried over as is (edit it after a run).
pub const ANALYSIS_START: &str = "<!-- analysis: kept by stack-bench -->";
pub const ANALYSIS_END: &str = "<!-- /analysis -->";

pub fn analysis_section(existing: &str) -> String {
    match (existing.find(ANALYSIS_START), existing.find(ANALYSIS_END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}\n\n", &existing[start..end + ANALYSIS_END.len()])
        }
        _ => String::new(),
    }
}

/// The section of an existing report between these markers is carried over as is.
pub const MICRO_START: &str = "<!-- micro-benchmarks: kept by stack-bench -->";
pub const MICRO_END: &str = "<!-- /micro-benchmarks -->";

pub fn micro_section(existing: &str) -> String {
    match (existing.find(MICRO_START), existing.find(MICRO_END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}\n", &existing[start..end + MICRO_END.len()])
        }
        _ => format!(
            "{MICRO_START}\n## In-process micro-benchmarks\n\n`make bench-messaging` and `make bench-checkout` \
             (tests/integration/examples) run every service in one process; they measure the messaging runtime and \
             the happy path in isolation, not what a customer gets.\n{MICRO_END}\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunReport {
        let rate = |offered: f64, p50: f64| RateReport {
            offered,
            seconds: 20.0,
            placed: 200,
            paid_on_stream: Some(Percentiles {
                count: 100,
                p50,
                p95: p50 * 2.0,
                p99: p50 * 3.0,
                max: p50 * 4.0,
            }),
            cpu_ms_per_order: BTreeMap::from([("order".into(), 5.0), ("Kafka".into(), 10.0)]),
            cpu_total_ms_per_order: 15.0,
            ..RateReport::default()
        };
        RunReport {
            label: "test".into(),
            rates: vec![rate(10.0, 200.0), rate(25.0, 220.0)],
            knee: Some(25.0),
            ..RunReport::default()
        }
    }

    #[test]
    fn the_report_and_chart_render() {
        let run = sample();
        let text = render(&run, Some(&run), "", &micro_section(""), "chart.svg");
        assert!(text.contains("| 10 | 200 |"));
        assert!(text.contains("Before and after"));
        assert!(text.contains(MICRO_START));
        let svg = svg_chart(&run, Some(&run));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn the_micro_section_is_carried_over() {
        let existing = format!("intro\n{MICRO_START}\nkept\n{MICRO_END}\nafter");
        assert_eq!(
            micro_section(&existing),
            format!("{MICRO_START}\nkept\n{MICRO_END}\n")
        );
    }
}
