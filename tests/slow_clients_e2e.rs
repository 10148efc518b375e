//! Slow and idle HTTP clients against `clickflow run` under a low open-file limit: more of them
//! than the process may open files. Ingestion, snapshots and the API must go on; the server cuts
//! clients that do not send their headers in time.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::e2e::generated;
use common::kafka::*;
use rdkafka::mocking::MockCluster;

const OPEN_FILES: u64 = 256;
const SLOW_CLIENTS: usize = 600;

#[test]
fn more_idle_clients_than_open_files_stop_neither_ingestion_nor_snapshots_nor_the_api() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("clicks", PARTITIONS, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let records = generated(20_000, 5);
    let (first, second) = records.split_at(records.len() / 2);
    produce(&brokers, "clicks", first);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = run_command(&brokers, port, dir.path(), "", &[]);
    command.env("CLICKFLOW__API__SERVER__HEADER_TIMEOUT_SECONDS", "3");
    // SAFETY: only async-signal-safe setrlimit between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: OPEN_FILES, rlim_max: OPEN_FILES };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut run = Running(command.spawn().unwrap());
    wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| counted(d) == first.len() as i64);

    // Clients that start a request and never finish it, more than the engine may open files.
    let slow: Vec<TcpStream> = (0..SLOW_CLIENTS)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET /api/v1/live HTTP/1.1\r\nHost: slow\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(slow.len(), SLOW_CLIENTS, "the kernel queues connections the engine does not accept yet");
    let since = Instant::now();
    produce(&brokers, "clicks", second);
    wait_for_snapshots_from_now(dir.path());
    let total = records.len() as i64;
    let done = wait_for(port, "/api/v1/dump", Duration::from_secs(60), |d| counted(d) == total);
    assert_eq!(done["accepted"].as_i64().unwrap() + done["rejects"]["total"].as_i64().unwrap(), total);
    assert!(run.0.try_wait().unwrap().is_none(), "the engine is still running");

    // The server cut the clients that never sent their headers (at least those it accepted).
    let mut first_slow = slow.into_iter().next().unwrap();
    first_slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut rest = Vec::new();
    let closed = first_slow.read_to_end(&mut rest).is_ok();
    assert!(closed, "an idle client is disconnected");
    assert!(since.elapsed() < Duration::from_secs(60));
}
