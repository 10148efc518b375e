//! `clickflow replay` accounts for every line of a file exactly once: a multi-MiB line without a
//! newline is one `too_large` reject at its own line number (with a bounded prefix as its dead
//! letter), the lines after it keep their numbers, and blank lines are counted as `blank` without
//! filling the dead letters. Plain and gzip input, two workers.

use std::io::Write;
use std::process::Command;

use read::model::Dump;

const LONG: usize = 5 * 1024 * 1024 + 123;

struct Expected {
    text: Vec<u8>,
    lines: u64,
    accepted: i64,
    blank: i64,
    long_line: u64,
    bad_lines: Vec<u64>,
}

fn file() -> Expected {
    let ts = chrono::Utc::now().timestamp_millis() - 10 * 60_000;
    let mut text = Vec::new();
    let mut line = 0u64;
    let mut e = Expected { text: Vec::new(), lines: 0, accepted: 0, blank: 0, long_line: 0, bad_lines: Vec::new() };
    let mut push = |bytes: &[u8], crlf: bool| {
        line += 1;
        text.extend_from_slice(bytes);
        text.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        line
    };
    let event = |i: u64| format!(r#"{{"user_id":"u{}","event":"page_view","ts":{ts},"page":"/p/{i}"}}"#, i % 7);
    for i in 0..40 {
        push(event(i).as_bytes(), i % 5 == 0);
        e.accepted += 1;
    }
    for blank in [&b""[..], b"   ", b"\t", b"\r"] {
        push(blank, false);
        e.blank += 1;
    }
    // A line that starts like an event and goes on for megabytes.
    let mut long = event(1000).into_bytes();
    long.pop();
    long.extend_from_slice(br#","props":{"x":""#);
    long.resize(LONG, b'x');
    e.long_line = push(&long, false);
    for i in 0..40 {
        match i {
            3 | 17 => e.bad_lines.push(push(b"{not json", false)),
            5 | 6 | 30 => {
                push(b"", i == 6);
                e.blank += 1;
            }
            _ => {
                push(event(i).as_bytes(), i % 2 == 0);
                e.accepted += 1;
            }
        }
    }
    e.lines = line;
    e.text = text;
    e
}

#[test]
fn a_long_line_is_one_reject_and_blank_lines_are_counted() {
    let expected = file();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("events.ndjson");
    std::fs::write(&plain, &expected.text).unwrap();
    let gz = dir.path().join("events.ndjson.gz");
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    encoder.write_all(&expected.text).unwrap();
    encoder.finish().unwrap();

    for (name, input) in [("plain", &plain), ("gzip", &gz)] {
        let dump_path = dir.path().join(format!("dump-{name}.json"));
        let dead_path = dir.path().join(format!("dead-{name}.ndjson"));
        let out = Command::new(env!("CARGO_BIN_EXE_clickflow"))
            .args(["replay", "--quiet", "--workers", "2", "--dump"])
            .arg(&dump_path)
            .arg("--dead-letters")
            .arg(&dead_path)
            .arg(input)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(stderr.contains(&format!("replayed {} lines", expected.lines)), "{name}: {stderr}");
        assert!(stderr.contains(&format!("blank: {}", expected.blank)), "{name}: {stderr}");

        let dump: Dump = serde_json::from_slice(&std::fs::read(&dump_path).unwrap()).unwrap();
        assert_eq!(dump.accepted, expected.accepted, "{name}");
        let by_reason: Vec<(&str, i64)> = dump.rejects.by_reason.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        assert_eq!(
            by_reason,
            vec![("blank", expected.blank), ("invalid_json", expected.bad_lines.len() as i64), ("too_large", 1)],
            "{name}"
        );
        assert_eq!(dump.accepted + dump.rejects.total, expected.lines as i64, "{name}: every line counted once");

        let dead = std::fs::read_to_string(&dead_path).unwrap();
        let mut letters: Vec<(String, u64, String)> = dead
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let reason = v["reason"].as_str().unwrap().to_string();
                (reason, v["source"]["line"].as_u64().unwrap(), v["payload"].as_str().unwrap().to_string())
            })
            .collect();
        letters.sort_by_key(|l| l.1);
        let mut want: Vec<(&str, u64)> = expected.bad_lines.iter().map(|l| ("invalid_json", *l)).collect();
        want.push(("too_large", expected.long_line));
        want.sort_by_key(|l| l.1);
        assert_eq!(letters.iter().map(|l| (l.0.as_str(), l.1)).collect::<Vec<_>>(), want, "{name}: no blank letters");
        let long = letters.iter().find(|l| l.0 == "too_large").unwrap();
        assert!(long.2.starts_with(r#"{"user_id":"u6""#) && long.2.len() <= 64 * 1024, "{name}: a bounded prefix");
    }
}
