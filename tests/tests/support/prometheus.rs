//! A real Prometheus server (Debian's `prometheus` package; `PROMETHEUS` may
//! name another binary) scraping one target on loopback, run for one test
//! and killed when dropped.
//!
//! Prometheus cannot be told to pick its own port, so the port is found by
//! binding `127.0.0.1:0` and releasing it; if another process takes it in
//! between, Prometheus exits and the start is retried with a new port.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::WAIT;

/// Set by `cargo xtask ci`: a missing Prometheus fails the test instead of skipping it.
pub(crate) const REQUIRE_ENV: &str = "TASKMAN_REQUIRE_PROMTOOL";

/// How to get the binary, for the messages.
pub(crate) const INSTALL_HINT: &str =
    "install Debian's prometheus package (apt-get install -y --no-install-recommends prometheus)";

/// Attempts at finding a port nobody takes before Prometheus binds it.
const PORT_ATTEMPTS: usize = 3;

/// The `prometheus` program: `PROMETHEUS` if set, else `prometheus` on `PATH`;
/// `None` when it does not answer `--version`.
pub(crate) fn program() -> Option<PathBuf> {
    let program = std::env::var_os("PROMETHEUS").map_or_else(|| "prometheus".into(), PathBuf::from);
    let answers = Command::new(&program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    answers.then_some(program)
}

/// A running Prometheus with its own temporary configuration and storage.
#[derive(Debug)]
pub(crate) struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    agent: ureq::Agent,
}

impl Prometheus {
    /// Starts `program` scraping `http://TARGET/metrics` every `interval`,
    /// and waits until it is ready.
    pub(crate) fn start(program: &Path, target: SocketAddr, interval: Duration) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for Prometheus");
        let seconds = interval.as_secs_f64();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: {seconds}s\n  scrape_timeout: {seconds}s\n\
                 scrape_configs:\n  - job_name: taskman\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let addr = free_port();
            let mut child = launch(program, dir.path(), addr);
            match await_ready(&agent, &mut child, addr, dir.path()) {
                Ok(()) => {
                    return Self {
                        child,
                        addr,
                        dir,
                        agent,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push(why);
                }
            }
        }
        panic!("Prometheus did not start: {failures:#?}");
    }

    /// Runs an instant query; returns `data.result` (the series).
    pub(crate) fn query(&self, promql: &str) -> Vec<Value> {
        let url = format!("http://{}/api/v1/query", self.addr);
        let mut response = self
            .agent
            .get(url)
            .query("query", promql)
            .call()
            .unwrap_or_else(|err| panic!("querying Prometheus for {promql}: {err}"));
        let body = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|err| panic!("reading Prometheus' answer to {promql}: {err}"));
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|err| {
            panic!("Prometheus answered {promql} with non-JSON ({err}): {body}")
        });
        assert_eq!(json["status"], "success", "query {promql}: {json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `promql` until `done` holds for its series, for at most `within`.
    pub(crate) fn wait_for(
        &self,
        within: Duration,
        promql: &str,
        what: &str,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let series = self.query(promql);
            if done(&series) {
                return series;
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for Prometheus to show {what}; `{promql}` returned {series:?}\n\
                 targets: {}\nPrometheus log:\n{}",
                self.targets(),
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Prometheus' view of its scrape targets (health, last error), for messages.
    pub(crate) fn targets(&self) -> String {
        let url = format!("http://{}/api/v1/targets", self.addr);
        self.agent
            .get(url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    /// Everything Prometheus logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG)).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus' log file in its directory.
const LOG: &str = "prometheus.log";

fn launch(program: &Path, dir: &Path, addr: SocketAddr) -> Child {
    let log = std::fs::File::create(dir.join(LOG)).expect("a log file for Prometheus");
    Command::new(program)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {}: {err}", program.display()))
}

/// Waits for `/-/ready`; an early exit (its port taken, say) is an error with its log.
fn await_ready(
    agent: &ureq::Agent,
    child: &mut Child,
    addr: SocketAddr,
    dir: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    let log = || std::fs::read_to_string(dir.join(LOG)).unwrap_or_default();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "Prometheus on {addr} exited with {status}:\n{}",
                log()
            ));
        }
        let ready = agent
            .get(format!("http://{addr}/-/ready"))
            .call()
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "Prometheus on {addr} not ready within {WAIT:?}:\n{}",
                log()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A port that was free a moment ago.
fn free_port() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
}
