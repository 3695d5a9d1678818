//! A small load generator for benchmarks: keep-alive HTTP/1.1 connections to
//! the task API, one thread each, on loopback.
//!
//! Each connection creates tasks (`POST /tasks`) and reads back the ones it
//! created (`GET /tasks/{id}`), in a fixed mix, one request at a time: a
//! closed loop, so throughput is what the server sustains. A rate makes it
//! pace its requests instead (for the low-traffic measurements). Every
//! request's latency is kept, so percentiles are exact. The run is bounded by
//! its duration and by a request count per connection; it never retries a
//! request, it counts the failure and carries on (reconnecting if needed).
//!
//! It speaks just enough HTTP/1.1 for this server: `Content-Length` bodies,
//! no chunked encoding, no redirects.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// What load to apply.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The server (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    /// Concurrent keep-alive connections, one thread each.
    pub connections: usize,
    /// How long to send requests.
    pub duration: Duration,
    /// Requests per second over all connections; `None` sends the next
    /// request as soon as the previous answer has arrived.
    pub rate: Option<f64>,
    /// One request in `post_every` creates a task; the others read one back.
    pub post_every: u32,
    /// A bound on the requests of one connection, whatever the duration.
    pub max_requests_per_connection: u64,
    /// How long one request may take before it counts as failed and its
    /// connection is replaced.
    pub timeout: Duration,
    /// Ends the run early when set (checked before each request).
    pub stop: Option<Arc<AtomicBool>>,
}

impl LoadSpec {
    /// A closed loop over `connections` connections for `duration`: one
    /// create in four requests, 10 s per request at most.
    #[must_use]
    pub fn closed_loop(addr: SocketAddr, connections: usize, duration: Duration) -> Self {
        Self {
            addr,
            connections,
            duration,
            rate: None,
            post_every: 4,
            max_requests_per_connection: 10_000_000,
            timeout: Duration::from_secs(10),
            stop: None,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// From the start signal to the last connection's end.
    pub elapsed: Duration,
    /// Latency of every successful request, sorted.
    pub latencies: Vec<Duration>,
    /// Requests that failed: an error status, a broken connection, a timeout.
    pub errors: u64,
    /// The first few failures, for the operator.
    pub first_errors: Vec<String>,
}

impl LoadReport {
    /// Successful requests.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.latencies.len() as u64
    }

    /// Successful requests per second.
    #[must_use]
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs == 0.0 {
            return 0.0;
        }
        self.latencies.len() as f64 / secs
    }

    /// Adds `other`, a run of the same load at another time, to this one: the two
    /// together as if they had been one run as long as both.
    pub fn absorb(&mut self, other: Self) {
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.errors += other.errors;
        for error in other.first_errors {
            if self.first_errors.len() < 5 {
                self.first_errors.push(error);
            }
        }
    }

    /// The latency at quantile `q` (0.5 for the median), by the nearest-rank
    /// method; zero without requests.
    #[must_use]
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let n = self.latencies.len();
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
        self.latencies[rank.clamp(1, n) - 1]
    }
}

/// Applies `spec` and returns what it measured. Blocks for about
/// `spec.duration`.
#[must_use]
pub fn run(spec: &LoadSpec) -> LoadReport {
    let connections = spec.connections.max(1);
    let start = Arc::new(Barrier::new(connections + 1));
    let workers: Vec<_> = (0..connections)
        .map(|index| {
            let spec = spec.clone();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let mut worker = Worker::new(&spec, index, connections);
                start.wait();
                worker.run(Instant::now());
                worker.report
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let mut total = LoadReport::default();
    for worker in workers {
        // A worker that panicked contributes nothing; its requests are not counted.
        if let Ok(report) = worker.join() {
            total.latencies.extend(report.latencies);
            total.errors += report.errors;
            for error in report.first_errors {
                if total.first_errors.len() < 5 {
                    total.first_errors.push(error);
                }
            }
        } else {
            total.errors += 1;
            total.first_errors.push("a load thread panicked".to_owned());
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    total
}

/// One connection's loop.
struct Worker {
    spec: LoadSpec,
    /// Time between two requests of this connection when paced.
    interval: Option<Duration>,
    connection: Option<Connection>,
    /// Ids of tasks this connection created (the most recent few).
    ids: Vec<u64>,
    next_id: usize,
    sent: u64,
    report: LoadReport,
}

impl Worker {
    fn new(spec: &LoadSpec, index: usize, connections: usize) -> Self {
        let interval = spec
            .rate
            .filter(|rate| *rate > 0.0)
            .map(|rate| Duration::from_secs_f64(connections as f64 / rate));
        Self {
            spec: spec.clone(),
            interval,
            connection: None,
            ids: Vec::with_capacity(64),
            // Spreads the reads of different connections over their tasks.
            next_id: index,
            sent: 0,
            report: LoadReport::default(),
        }
    }

    fn run(&mut self, started: Instant) {
        let deadline = started + self.spec.duration;
        let mut next_send = started;
        while self.sent < self.spec.max_requests_per_connection {
            if let Some(interval) = self.interval {
                let now = Instant::now();
                if next_send > now {
                    if next_send >= deadline {
                        break;
                    }
                    thread::sleep(next_send - now);
                }
                next_send += interval;
            }
            let stopped = self
                .spec
                .stop
                .as_ref()
                .is_some_and(|stop| stop.load(Ordering::Relaxed));
            if stopped || Instant::now() >= deadline {
                break;
            }
            self.one_request();
        }
    }

    fn one_request(&mut self) {
        let create = self.ids.is_empty()
            || self
                .sent
                .is_multiple_of(u64::from(self.spec.post_every.max(1)));
        self.sent += 1;
        let request = if create {
            Request::Create
        } else {
            self.next_id = (self.next_id + 1) % self.ids.len();
            Request::Read(self.ids[self.next_id])
        };
        let began = Instant::now();
        match self.exchange(request) {
            Ok(answer) if (200..300).contains(&answer.status) => {
                self.report.latencies.push(began.elapsed());
                if let Some(id) = answer.created_id {
                    if self.ids.len() == self.ids.capacity() {
                        self.ids.remove(0);
                    }
                    self.ids.push(id);
                }
            }
            Ok(answer) => self.fail(format!("{request}: status {}", answer.status)),
            Err(err) => {
                // The connection's state is unknown now: start a new one.
                self.connection = None;
                self.fail(format!("{request}: {err}"));
            }
        }
    }

    fn fail(&mut self, error: String) {
        self.report.errors += 1;
        if self.report.first_errors.len() < 5 {
            self.report.first_errors.push(error);
        }
    }

    fn exchange(&mut self, request: Request) -> io::Result<Answer> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self
                .connection
                .insert(Connection::open(self.spec.addr, self.spec.timeout)?),
        };
        connection.exchange(request)
    }
}

/// A keep-alive client for one GET at a time, such as polls of
/// `/health/telemetry`; it reconnects after any failure.
#[derive(Debug)]
pub struct GetClient {
    addr: SocketAddr,
    timeout: Duration,
    connection: Option<Connection>,
}

impl GetClient {
    /// A client of the server at `addr`; each request may take `timeout`.
    #[must_use]
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            addr,
            timeout,
            connection: None,
        }
    }

    /// `GET path`: the status and the body as text.
    ///
    /// # Errors
    /// When the server cannot be reached or its answer cannot be read.
    pub fn get(&mut self, path: &str) -> io::Result<(u16, String)> {
        if let Some(connection) = &mut self.connection {
            match connection.get(path) {
                Ok(answer) => return Ok(answer),
                // The server may have closed the idle connection: try once on a new one.
                Err(_) => self.connection = None,
            }
        }
        let connection = self
            .connection
            .insert(Connection::open(self.addr, self.timeout)?);
        let result = connection.get(path);
        if result.is_err() {
            self.connection = None;
        }
        result
    }
}

#[derive(Debug, Clone, Copy)]
enum Request {
    Create,
    Read(u64),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Create => f.write_str("POST /tasks"),
            Self::Read(id) => write!(f, "GET /tasks/{id}"),
        }
    }
}

struct Answer {
    status: u16,
    /// From the `Location: /tasks/{id}` of a created task.
    created_id: Option<u64>,
}

const CREATE_BODY: &str =
    r#"{"title":"benchmark task","description":"made by the load generator"}"#;

/// One keep-alive connection.
#[derive(Debug)]
struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    host: String,
    out: Vec<u8>,
    line: Vec<u8>,
    body: Vec<u8>,
}

impl Connection {
    fn open(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            reader: BufReader::with_capacity(16 * 1024, stream.try_clone()?),
            writer: stream,
            host: addr.to_string(),
            out: Vec::with_capacity(512),
            line: Vec::with_capacity(256),
            body: Vec::with_capacity(1024),
        })
    }

    fn exchange(&mut self, request: Request) -> io::Result<Answer> {
        self.out.clear();
        match request {
            Request::Create => write!(
                self.out,
                "POST /tasks HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{CREATE_BODY}",
                self.host,
                CREATE_BODY.len()
            )?,
            Request::Read(id) => write!(
                self.out,
                "GET /tasks/{id} HTTP/1.1\r\nHost: {}\r\n\r\n",
                self.host
            )?,
        }
        self.writer.write_all(&self.out)?;
        self.read_answer()
    }

    fn get(&mut self, path: &str) -> io::Result<(u16, String)> {
        self.out.clear();
        write!(
            self.out,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.host
        )?;
        self.writer.write_all(&self.out)?;
        let answer = self.read_answer()?;
        Ok((
            answer.status,
            String::from_utf8_lossy(&self.body).into_owned(),
        ))
    }

    fn read_answer(&mut self) -> io::Result<Answer> {
        self.next_line()?;
        // "HTTP/1.1 201 Created"
        let status = self
            .line
            .split(|b| *b == b' ')
            .nth(1)
            .and_then(|code| std::str::from_utf8(code).ok())
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| bad_answer("no status code"))?;
        let mut content_length = 0usize;
        let mut created_id = None;
        loop {
            self.next_line()?;
            if self.line.is_empty() {
                break;
            }
            let Some(colon) = self.line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, value) = self.line.split_at(colon);
            let value = std::str::from_utf8(&value[1..])
                .map_err(|_| bad_answer("a header is not UTF-8"))?
                .trim();
            if name.eq_ignore_ascii_case(b"content-length") {
                content_length = value
                    .parse()
                    .map_err(|_| bad_answer("bad content-length"))?;
            } else if name.eq_ignore_ascii_case(b"location") {
                created_id = value
                    .rsplit('/')
                    .next()
                    .and_then(|id| id.parse::<u64>().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                return Err(bad_answer("chunked answers are not supported"));
            }
        }
        self.body.resize(content_length, 0);
        self.reader.read_exact(&mut self.body)?;
        Ok(Answer { status, created_id })
    }

    /// Reads the next header line into `self.line`, without its line end; an
    /// error at end of stream.
    fn next_line(&mut self) -> io::Result<()> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        Ok(())
    }
}

fn bad_answer(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad HTTP answer: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A minimal server: creates get ids 1, 2, 3...; reads of a known id
    /// are 200, of an unknown one 404.
    fn fake_server() -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let created = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&created);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let counter = Arc::clone(&counter);
                thread::spawn(move || serve(stream, &counter));
            }
        });
        (addr, created)
    }

    fn serve(stream: TcpStream, created: &AtomicU64) {
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some(value) = line.strip_prefix("Content-Length: ") {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let answer = if request_line.starts_with("POST /tasks ") {
                let id = created.fetch_add(1, Ordering::SeqCst) + 1;
                format!(
                    "HTTP/1.1 201 Created\r\nlocation: /tasks/{id}\r\ncontent-length: 2\r\n\r\n{{}}"
                )
            } else {
                let id: u64 = request_line
                    .trim_start_matches("GET /tasks/")
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                if id <= created.load(Ordering::SeqCst) {
                    "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_owned()
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_owned()
                }
            };
            writer.write_all(answer.as_bytes()).unwrap();
        }
    }

    #[test]
    fn a_closed_loop_mixes_creates_and_reads_of_created_tasks() {
        let (addr, created) = fake_server();
        let spec = LoadSpec {
            max_requests_per_connection: 40,
            ..LoadSpec::closed_loop(addr, 2, Duration::from_secs(30))
        };
        let report = run(&spec);
        assert_eq!(report.errors, 0, "{:?}", report.first_errors);
        assert_eq!(report.requests(), 80);
        // One create in four requests, per connection.
        assert_eq!(created.load(Ordering::SeqCst), 2 * 10);
        assert!(report.throughput() > 0.0);
        assert!(report.percentile(0.5) <= report.percentile(0.99));
    }

    #[test]
    fn the_get_client_reads_status_and_body_over_one_connection() {
        let (addr, created) = fake_server();
        created.store(3, Ordering::SeqCst);
        let mut client = GetClient::new(addr, Duration::from_secs(10));
        assert_eq!(client.get("/tasks/2").unwrap(), (200, "hello".to_owned()));
        assert_eq!(client.get("/tasks/9").unwrap(), (404, String::new()));
    }

    #[test]
    fn the_get_client_reconnects_when_the_server_closed_an_idle_connection() {
        // Answers one request per connection, then closes it.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().take(3) {
                let stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                let mut writer = stream;
                writer
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .unwrap();
            }
        });
        let mut client = GetClient::new(addr, Duration::from_secs(10));
        for _ in 0..3 {
            assert_eq!(client.get("/health").unwrap(), (200, "ok".to_owned()));
        }
    }

    #[test]
    fn failures_are_counted_not_retried() {
        // Nothing listens on a port that was just released.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let spec = LoadSpec {
            max_requests_per_connection: 3,
            ..LoadSpec::closed_loop(addr, 1, Duration::from_secs(30))
        };
        let report = run(&spec);
        assert_eq!(report.requests(), 0);
        assert_eq!(report.errors, 3);
        assert!(
            report.first_errors[0].starts_with("POST /tasks: "),
            "{:?}",
            report.first_errors
        );
    }

    #[test]
    fn a_run_ends_early_when_stopped() {
        let (addr, _) = fake_server();
        let stop = Arc::new(AtomicBool::new(false));
        let spec = LoadSpec {
            rate: Some(100.0),
            stop: Some(Arc::clone(&stop)),
            ..LoadSpec::closed_loop(addr, 1, Duration::from_secs(600))
        };
        let running = thread::spawn(move || run(&spec));
        stop.store(true, Ordering::Relaxed);
        // Without the stop this would run for ten minutes.
        let report = running.join().unwrap();
        assert!(
            report.elapsed < Duration::from_secs(60),
            "{:?}",
            report.elapsed
        );
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let report = LoadReport {
            elapsed: Duration::from_secs(2),
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..LoadReport::default()
        };
        assert_eq!(report.percentile(0.5), Duration::from_millis(50));
        assert_eq!(report.percentile(0.99), Duration::from_millis(99));
        assert_eq!(report.percentile(1.0), Duration::from_millis(100));
        assert_eq!(report.percentile(0.0), Duration::from_millis(1));
        assert!((report.throughput() - 50.0).abs() < 1e-9);
        assert_eq!(LoadReport::default().percentile(0.5), Duration::ZERO);
    }

    #[test]
    fn runs_absorbed_into_one_read_as_one_run_as_long_as_all() {
        // Odd latencies in one slice, even ones in the other: one run of 1..=100 ms.
        let slice = |parity: u64, error: &str| LoadReport {
            elapsed: Duration::from_secs(1),
            latencies: (1..=100)
                .filter(|ms| ms % 2 == parity)
                .rev()
                .map(Duration::from_millis)
                .collect(),
            errors: 1,
            first_errors: vec![error.to_owned()],
        };
        let mut total = LoadReport::default();
        total.absorb(slice(1, "first"));
        total.absorb(slice(0, "second"));
        assert_eq!(total.requests(), 100);
        assert_eq!(total.percentile(0.5), Duration::from_millis(50));
        assert_eq!(total.percentile(0.99), Duration::from_millis(99));
        assert!((total.throughput() - 50.0).abs() < 1e-9);
        assert_eq!(total.errors, 2);
        assert_eq!(total.first_errors, ["first", "second"]);
    }

    #[test]
    fn a_paced_run_keeps_to_its_rate() {
        let (addr, _) = fake_server();
        let spec = LoadSpec {
            rate: Some(20.0),
            max_requests_per_connection: 4,
            ..LoadSpec::closed_loop(addr, 1, Duration::from_secs(30))
        };
        let started = Instant::now();
        let report = run(&spec);
        assert_eq!(report.requests(), 4);
        // Four requests 50 ms apart: the last one leaves 150 ms after the first.
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}
