//! Section 7 of `docs/benchmarks.md` and the raw JSON.
//!
//! Every figure is the median over the rounds; a ratio is computed within each round (so
//! drift between rounds cancels) and its median reported.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Context, Plan, Run, Variant};

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// CPU time per successful request, in microseconds.
fn per_request(cpu: Duration, run: &Run) -> f64 {
    let requests = run.load.requests();
    if requests == 0 {
        return f64::NAN;
    }
    cpu.as_secs_f64() * 1e6 / requests as f64
}

/// Share of the machine's CPU time spent running anything, in percent.
fn busy_percent(run: &Run) -> f64 {
    let total = run.machine.total.as_secs_f64();
    if total == 0.0 {
        return f64::NAN;
    }
    100.0 * run.machine.busy.as_secs_f64() / total
}

fn of(runs: &[Run], variant: Variant) -> Vec<&Run> {
    runs.iter().filter(|r| r.variant == variant).collect()
}

fn med(runs: &[Run], variant: Variant, value: impl Fn(&Run) -> f64) -> f64 {
    median(of(runs, variant).into_iter().map(value).collect())
}

/// The median over rounds of `value(variant's run) / value(reference's run)` of one round.
fn ratio(runs: &[Run], variant: Variant, reference: Variant, value: impl Fn(&Run) -> f64) -> f64 {
    median(
        of(runs, variant)
            .into_iter()
            .filter_map(|run| {
                let other = runs
                    .iter()
                    .find(|r| r.variant == reference && r.round == run.round)?;
                Some(value(run) / value(other))
            })
            .collect(),
    )
}

fn throughput(run: &Run) -> f64 {
    run.load.throughput()
}

fn p50(run: &Run) -> f64 {
    ms(run.load.percentile(0.5))
}

fn p99(run: &Run) -> f64 {
    ms(run.load.percentile(0.99))
}

/// The machine's CPU count, as this process sees it.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
}

pub(crate) fn markdown(plan: &Plan, context: &Context, runs: &[Run]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## 7. Replicas and storage\n");
    if plan.quick {
        let _ = writeln!(
            out,
            "**A quick run (`scale-bench --quick`): short measurements, one round. Not for \
             publishing.**\n"
        );
    }
    method(&mut out, plan, context);
    table(&mut out, runs);
    ratios(&mut out, runs);
    rounds(&mut out, plan, runs);
    reading(&mut out, plan, context, runs);
    out
}

fn method(out: &mut String, plan: &Plan, context: &Context) {
    let share = plan.connections / 3;
    let _ = writeln!(
        out,
        "`scale-bench` (in the `tests` crate): throughput of one replica against three on one \
         PostgreSQL database, and of SQLite against PostgreSQL for one replica, side by side. \
         The release build of `taskman-server`, each process with its default HTTP workers (one \
         per CPU) and exporting its spans to the OTLP/gRPC receiver in the bench process, as \
         deployed. Load: a closed loop of {connections} keep-alive HTTP/1.1 connections (one \
         thread each, in the bench process), one `POST /tasks` to {reads} `GET /tasks/{{id}}` \
         of tasks that connection created; with three replicas, {share} connections on each. \
         Setups: **1 replica, SQLite** (the default store: a file in the temporary directory, \
         WAL with `synchronous=FULL`, so one fsync per write); **1 replica, PostgreSQL** and \
         **3 replicas, PostgreSQL** (PostgreSQL {version} on the same machine, a throw-away \
         cluster with `fsync` on, its default, so that both stores make a write durable \
         before it is acknowledged; `storage.pool_size = {pool}` per replica). Each run starts \
         its servers on an empty database, loads them for {warmup:?} unmeasured, then measures \
         for {phase:?}. Rounds: {rounds}, each running the three setups in this order, so \
         that the machine's drift hits them alike; figures are medians over the rounds, and \
         ratios are taken within a round.\n",
        connections = plan.connections,
        reads = plan.post_every.saturating_sub(1),
        version = context.postgres_version,
        pool = plan.pool_size,
        warmup = plan.warmup,
        phase = plan.phase,
        rounds = plan.rounds,
    );
    let _ = writeln!(
        out,
        "Machine: {cpus} CPUs shared by everything above. Load average (1, 5, 15 min) before \
         the run: {before}; after: {after}; {took:.1} minutes in all.\n",
        cpus = cpus(),
        before = context.load_before,
        after = context.load_after,
        took = context.took.as_secs_f64() / 60.0,
    );
}

fn table(out: &mut String, runs: &[Run]) {
    let _ = writeln!(
        out,
        "| setup | throughput | p50 | p99 | errors | server CPU / request | PostgreSQL CPU / \
         request | bench CPU / request | machine busy | other work |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for variant in Variant::ALL {
        if of(runs, variant).is_empty() {
            continue;
        }
        let errors: u64 = of(runs, variant).iter().map(|r| r.load.errors).sum();
        let postgres = if variant == Variant::SqliteOne {
            "—".to_owned()
        } else {
            format!(
                "{:.0} µs",
                med(runs, variant, |r| per_request(r.postgres_cpu, r))
            )
        };
        let _ = writeln!(
            out,
            "| {label} | {throughput:.0} req/s | {p50:.2} ms | {p99:.2} ms | {errors} | \
             {server:.0} µs | {postgres} | {bench:.0} µs | {busy:.0} % | {other:.0} % |",
            label = variant.label(),
            throughput = med(runs, variant, throughput),
            p50 = med(runs, variant, p50),
            p99 = med(runs, variant, p99),
            server = med(runs, variant, |r| per_request(r.server_cpu, r)),
            bench = med(runs, variant, |r| per_request(r.bench_cpu, r)),
            busy = med(runs, variant, busy_percent),
            other = med(runs, variant, other_percent),
        );
    }
    let _ = writeln!(
        out,
        "\nErrors are summed over the rounds. CPU per request is user + system time from \
         `/proc` over the measurement divided by the successful requests: the server \
         processes summed; PostgreSQL's postmaster and backends; the bench process (load \
         generator and OTLP receiver). Machine busy: the share of all CPUs' time spent running \
         anything; other work: the part of it none of these processes used (the machine is \
         shared).\n"
    );
}

fn ratios(out: &mut String, runs: &[Run]) {
    let pairs = [
        (
            Variant::PostgresOne,
            Variant::SqliteOne,
            "PostgreSQL against SQLite, one replica",
        ),
        (
            Variant::PostgresThree,
            Variant::PostgresOne,
            "3 replicas against 1, PostgreSQL",
        ),
    ];
    let _ = writeln!(
        out,
        "| comparison | throughput ratio | p50 ratio | p99 ratio |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (variant, reference, label) in pairs {
        let _ = writeln!(
            out,
            "| {label} | {:.2} | {:.2} | {:.2} |",
            ratio(runs, variant, reference, throughput),
            ratio(runs, variant, reference, p50),
            ratio(runs, variant, reference, p99),
        );
    }
    let _ = writeln!(out);
}

fn rounds(out: &mut String, plan: &Plan, runs: &[Run]) {
    if plan.rounds < 2 {
        return;
    }
    let _ = writeln!(out, "Throughput by round (req/s), to show the drift:\n");
    let _ = writeln!(
        out,
        "| round | {} |",
        Variant::ALL.map(Variant::label).join(" | ")
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|");
    for round in 1..=plan.rounds {
        let cells: Vec<String> = Variant::ALL
            .iter()
            .map(|&variant| {
                runs.iter()
                    .find(|r| r.variant == variant && r.round == round)
                    .map_or_else(|| "—".to_owned(), |r| format!("{:.0}", throughput(r)))
            })
            .collect();
        let _ = writeln!(out, "| {round} | {} |", cells.join(" | "));
    }
    let _ = writeln!(out);
}

/// What the figures say, from the figures: the caveat of one machine, where the CPU went,
/// and what a write costs each store.
fn reading(out: &mut String, plan: &Plan, context: &Context, runs: &[Run]) {
    let fsync = |q: f64| {
        let n = context.fsync.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        ms(context.fsync[rank - 1])
    };
    let _ = writeln!(out, "### What the numbers say\n");
    let _ = writeln!(
        out,
        "- **Three replicas cannot scale CPU here.** The machine has {cpus} CPUs and \
         everything shares them: the servers, PostgreSQL, the load generator, the receiver \
         and whatever else runs on the machine (other work took {other:.0} % of its CPU time \
         during the measurements, median). A second and third replica add processes \
         competing for the same cores (the machine was {busy1:.0} % busy with one PostgreSQL \
         replica, {busy3:.0} % with three), not capacity. So this measures what each setup \
         costs per request and where it waits, not how far replicas on machines of their own \
         would scale: there each replica brings its own CPUs, and the limit moves to \
         PostgreSQL (its CPU per request below, and its connections: replicas × \
         `storage.pool_size`).",
        cpus = cpus(),
        other = median(runs.iter().map(other_percent).collect()),
        busy1 = med(runs, Variant::PostgresOne, busy_percent),
        busy3 = med(runs, Variant::PostgresThree, busy_percent),
    );
    let total = |variant: Variant| med(runs, variant, |r| per_request(ours(r), r));
    let _ = writeln!(
        out,
        "- **PostgreSQL's round trip costs CPU.** Everything counted (servers, database, \
         load and receiver), a request took {sqlite:.0} µs of CPU with SQLite and {pg1:.0} µs \
         with one PostgreSQL replica, of which PostgreSQL's backends {pg_own:.0} µs: each call \
         is a round trip over loopback to another process that parses, plans and runs the \
         statement, where SQLite's is a function call in the server's own process. On a \
         machine this busy, CPU per request is what sets throughput: PostgreSQL reached \
         {ratio:.2}× SQLite's.",
        sqlite = total(Variant::SqliteOne),
        pg1 = total(Variant::PostgresOne),
        pg_own = med(runs, Variant::PostgresOne, |r| per_request(
            r.postgres_cpu,
            r
        )),
        ratio = ratio(runs, Variant::PostgresOne, Variant::SqliteOne, throughput),
    );
    let writes_per_sec =
        med(runs, Variant::SqliteOne, throughput) / f64::from(plan.post_every.max(1));
    let _ = writeln!(
        out,
        "- **SQLite's fsync and its one connection.** An in-place 4 KiB write plus \
         `fdatasync` in the directory of the SQLite file (as a commit to a reused WAL does) \
         took {f50:.2} ms here (median; p99 {f99:.2} ms; {n} samples, measured once before \
         the rounds; a shared disk makes it vary). The SQLite store keeps one connection \
         behind a mutex, so no two calls overlap: every call, reads included, queues while a \
         write holds the connection through its flush. SQLite committed {writes:.0} writes/s \
         (one request in {post_every}), one every {gap:.2} ms. Where CPUs are to spare, those \
         flushes in series, not CPU, are what limits one SQLite server; PostgreSQL serves \
         reads on other pooled connections while a commit flushes its WAL, and commits that \
         arrive together share one flush.",
        f50 = fsync(0.5),
        f99 = fsync(0.99),
        n = context.fsync.len(),
        writes = writes_per_sec,
        post_every = plan.post_every,
        gap = 1e3 / writes_per_sec,
    );
    let _ = writeln!(
        out,
        "- **What three replicas change on one machine:** throughput {thr:.2}×, p50 \
         {p50:.2}× and p99 {p99:.2}× of one replica's, server CPU per request {cpu1:.0} µs \
         against {cpu3:.0} µs (each process has its own runtime, batch span processor and \
         exporter), PostgreSQL CPU per request {pg1:.0} µs against {pg3:.0} µs. Three \
         processes with fewer connections each queue less per worker, so the median can \
         fall; more runnable threads than cores stretch the tail.",
        thr = ratio(
            runs,
            Variant::PostgresThree,
            Variant::PostgresOne,
            throughput
        ),
        p50 = ratio(runs, Variant::PostgresThree, Variant::PostgresOne, p50),
        p99 = ratio(runs, Variant::PostgresThree, Variant::PostgresOne, p99),
        cpu1 = med(runs, Variant::PostgresOne, |r| per_request(r.server_cpu, r)),
        cpu3 = med(runs, Variant::PostgresThree, |r| per_request(
            r.server_cpu,
            r
        )),
        pg1 = med(runs, Variant::PostgresOne, |r| per_request(
            r.postgres_cpu,
            r
        )),
        pg3 = med(runs, Variant::PostgresThree, |r| per_request(
            r.postgres_cpu,
            r
        )),
    );
    let _ = writeln!(
        out,
        "- **Errors:** {errors} requests in all failed or timed out (none is retried).\n",
        errors = runs.iter().map(|r| r.load.errors).sum::<u64>(),
    );
}

/// CPU time of everything this benchmark runs: servers, PostgreSQL, load and receiver.
fn ours(run: &Run) -> Duration {
    run.server_cpu + run.postgres_cpu + run.bench_cpu
}

/// The share of the machine's CPU time that other work used, in percent.
fn other_percent(run: &Run) -> f64 {
    let total = run.machine.total.as_secs_f64();
    if total == 0.0 {
        return f64::NAN;
    }
    let other = run.machine.busy.as_secs_f64() - ours(run).as_secs_f64();
    100.0 * other.max(0.0) / total
}

pub(crate) fn json(plan: &Plan, context: &Context, runs: &[Run]) -> Value {
    let runs: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "variant": r.variant.key(),
                "round": r.round,
                "replicas": r.variant.replicas(),
                "requests": r.load.requests(),
                "errors": r.load.errors,
                "first_errors": r.load.first_errors,
                "elapsed_secs": r.load.elapsed.as_secs_f64(),
                "throughput": r.load.throughput(),
                "p50_ms": p50(r),
                "p99_ms": p99(r),
                "p999_ms": ms(r.load.percentile(0.999)),
                "server_cpu_secs": r.server_cpu.as_secs_f64(),
                "postgres_cpu_secs": r.postgres_cpu.as_secs_f64(),
                "bench_cpu_secs": r.bench_cpu.as_secs_f64(),
                "machine_busy_secs": r.machine.busy.as_secs_f64(),
                "machine_steal_secs": r.machine.steal.as_secs_f64(),
                "machine_total_secs": r.machine.total.as_secs_f64(),
                "spans_received": r.spans,
            })
        })
        .collect();
    json!({
        "plan": {
            "quick": plan.quick,
            "rounds": plan.rounds,
            "warmup_secs": plan.warmup.as_secs_f64(),
            "phase_secs": plan.phase.as_secs_f64(),
            "connections": plan.connections,
            "post_every": plan.post_every,
            "pool_size": plan.pool_size,
        },
        "context": {
            "cpus": cpus(),
            "load_before": context.load_before,
            "load_after": context.load_after,
            "postgres_version": context.postgres_version,
            "fsync_ms": context.fsync.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "took_secs": context.took.as_secs_f64(),
        },
        "runs": runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
