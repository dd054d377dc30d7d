//! The admin listener's `/metrics` and `/latency` parse, and count what happened.

mod common;
use common::*;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Every sample line of a Prometheus text exposition: (name with labels, value).
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            assert!(name.starts_with("corechat_"), "{l}");
            (name.to_string(), v)
        })
        .collect()
}

#[test]
fn metrics_and_latency_parse_and_count() {
    let mut s = TestServer::start(2);
    let admin = s.admin.expect("admin listener address in the ready line");
    let (p, [mut a, mut b]) = two_friends(&s, 13700000000);
    for i in 0..20 {
        let r = a.request(text(&p[0], &p[1], &format!("m{i}"))).unwrap();
        assert_eq!(r["status"], "success");
        b.recv_type("receive_message").unwrap();
    }
    // Shards publish once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, body) = get(admin, "/metrics");
        assert_eq!(status, 200);
        let m = samples(&body);
        // Each shard publishes on its own clock: wait for the sender's and the receiver's.
        let count = |name: &str| {
            m.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .unwrap_or(0.0)
        };
        let sent = count("corechat_latency_seconds_count{name=\"service_send_message\"}");
        let delivered = count("corechat_latency_seconds_count{name=\"delivery\"}");
        if (sent >= 20.0 && delivered >= 20.0) || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let value = |name: &str| {
        metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(
        value("corechat_latency_seconds_count{name=\"service_send_message\"}"),
        20.0
    );
    assert!(value("corechat_latency_seconds_count{name=\"delivery\"}") >= 20.0);
    assert_eq!(value("corechat_messages_total"), 20.0);
    assert_eq!(value("corechat_logins_total"), 2.0);
    assert_eq!(value("corechat_users"), 2.0);
    assert!(value("corechat_persist_records_total") > 20.0);
    assert!(value("corechat_latency_seconds{name=\"delivery\",quantile=\"0.99\"}") > 0.0);
    assert!(value("corechat_persist_batch_size_count") > 0.0);

    let (status, body) = get(admin, "/latency");
    assert_eq!(status, 200);
    let mut sections = 0;
    for section in body.split("\n# ").map(|s| s.trim_start_matches("# ")) {
        let mut lines = section.lines();
        let title = lines.next().unwrap();
        assert!(
            title.ends_with("(ms)") || title.ends_with("(count)"),
            "{title}"
        );
        let header = lines.next().unwrap();
        assert!(header.contains("Percentile"), "{header}");
        for l in lines.filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let cols: Vec<f64> = l.split_whitespace().map(|c| c.parse().unwrap()).collect();
            assert!(cols.len() == 3 || cols.len() == 4, "{l}");
            assert!((0.0..=1.0).contains(&cols[1]), "{l}");
        }
        assert!(section.contains("#[Max"));
        sections += 1;
    }
    assert!(sections >= 14, "{sections} sections");
    assert!(body.contains("# delivery (ms)"));
    assert_eq!(get(admin, "/nope").0, 404);
    assert_eq!(s.stop(), Some(0));
}
