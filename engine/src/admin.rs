//! The admin HTTP listener: `/metrics` (Prometheus text format) and `/latency` (every
//! histogram's full percentile distribution, `.hgrm` text), plus the periodic log report.
//!
//! It runs on its own thread with tiny_http (a small, well-kept HTTP/1.1 server: admin
//! traffic is a scrape every few seconds, not worth an executor's time or a hand-written
//! parser), and reads only what the shards publish once a second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::Registry;

/// The running admin listener.
pub struct Admin {
    pub addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    pub fn start(addr: SocketAddr, registry: Arc<Registry>) -> std::io::Result<Admin> {
        let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("admin listener has no IP address"))?;
        let server = Arc::new(server);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("corechat-admin".into())
            .spawn(move || serve(&s, &registry))?;
        Ok(Admin {
            addr,
            server,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, registry: &Registry) {
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("").to_string();
        let (status, body, ctype) = match (req.method(), path.as_str()) {
            (tiny_http::Method::Get, "/metrics") => {
                (200, registry.prometheus(), "text/plain; version=0.0.4")
            }
            (tiny_http::Method::Get, "/latency") => {
                (200, registry.latency_report(), "text/plain; charset=utf-8")
            }
            (tiny_http::Method::Get, "/") => (
                200,
                "corechat admin: /metrics (Prometheus), /latency (HdrHistogram .hgrm)\n".into(),
                "text/plain; charset=utf-8",
            ),
            _ => (404, "not found\n".into(), "text/plain; charset=utf-8"),
        };
        let mut resp = tiny_http::Response::from_string(body).with_status_code(status);
        if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()) {
            resp = resp.with_header(h);
        }
        let _ = req.respond(resp);
    }
}

/// Logs a latency summary every `every` until `stop` is set.
pub fn spawn_reporter(
    every: Duration,
    registry: Arc<Registry>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("corechat-report".into())
        .spawn(move || {
            let tick = Duration::from_millis(100);
            let mut waited = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(tick);
                waited += tick;
                if waited >= every {
                    waited = Duration::ZERO;
                    ftlog::info!("latency report: {}", registry.summary());
                }
            }
        })
}
