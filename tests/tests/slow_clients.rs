//! Slow and stalled clients against the real `taskman-server` binary: hundreds of requests
//! whose body never finishes neither starve the server nor keep their connections, because
//! `server.request_body_timeout` answers them `408` and closes them. Loopback only; the
//! server binds 127.0.0.1:0; every wait polls against a generous deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ::tests::server::{ServerCommand, TaskmanServer};

/// Generous: a debug build on a loaded 2-core CI machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The stalled clients of the test, fewer if this process may not open that many files.
const STALLED: usize = 600;

/// The body a stalled client announces, of which it sends only the first bytes.
const ANNOUNCED: usize = 100;

fn start(db: &std::path::Path, env: &[(&str, &str)]) -> TaskmanServer {
    ServerCommand::new()
        .expect("taskman-server builds")
        .env(&[("RUST_LOG", "info"), ("TASKMAN__SERVER__WORKERS", "2")])
        .env(env)
        .db_path(db)
        .start()
        .unwrap_or_else(|err| panic!("{err}"))
}

/// This process's soft limit on open files, from `/proc/self/limits`.
fn open_file_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn health(agent: &ureq::Agent, server: &TaskmanServer) -> u16 {
    agent
        .get(format!("{}/health", server.base_url()))
        .call()
        .map_or(0, |resp| resp.status().as_u16())
}

/// Everything the server sends on `stream` until it closes the connection.
fn read_until_closed(mut stream: TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            // A reset after the response is a close too.
            Err(err) if err.kind() == ErrorKind::ConnectionReset => break,
            Err(err) => panic!(
                "connection not closed: {err}; got {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
fn stalled_bodies_do_not_starve_the_server_and_are_closed_after_the_body_timeout() {
    // Room for the harness, the agent and the test runner besides the stalled clients.
    let stalled = STALLED.min(open_file_limit().saturating_sub(100));
    assert!(stalled >= 100, "too few open files allowed to test with");
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(
        &dir.path().join("tasks.db"),
        &[("TASKMAN__SERVER__REQUEST_BODY_TIMEOUT", "1s")],
    );
    assert!(
        server
            .wait_for_stderr("open_file_limit=", DEADLINE)
            .is_some(),
        "the limit in use is logged: {}",
        server.stderr()
    );
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    assert_eq!(health(&agent, &server), 200);

    let started = Instant::now();
    let streams: Vec<TcpStream> = (0..stalled)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr()).unwrap();
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            write!(
                stream,
                "POST /tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {ANNOUNCED}\r\n\r\n{{\"title\":"
            )
            .unwrap();
            stream
        })
        .collect();

    // While they stall, liveness answers as usual (within the agent's timeout).
    for _ in 0..5 {
        assert_eq!(health(&agent, &server), 200, "{}", server.stderr());
    }

    // Every stalled request is answered 408 and its connection closed by the server.
    for stream in streams {
        let received = read_until_closed(stream);
        assert!(received.starts_with("HTTP/1.1 408"), "{received:?}");
        assert!(received.contains("\"request_timeout\""), "{received:?}");
    }
    // The timeout, not an accident: nothing was cut before a second had passed.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < DEADLINE);

    // The server is healthy afterwards and a complete request still works.
    assert_eq!(health(&agent, &server), 200);
    let resp = agent
        .post(format!("{}/tasks", server.base_url()))
        .header("content-type", "application/json")
        .send(r#"{"title":"after the stall"}"#)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
}
