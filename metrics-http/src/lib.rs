//! The `--metrics-listen ADDR:PORT` endpoint of the vmm and of each backend: `GET /metrics`
//! answered with the process's [`Registry`] in Prometheus's text exposition format 0.0.4
//! (the `prometheus` crate's `TextEncoder`; what `promtool check metrics` checks).
//!
//! The endpoint faces the network, so every client is hostile until checked (hand-written,
//! docs/ARCHITECTURE.md "Hand-written pieces"): one thread serves one connection at a time,
//! a request must arrive whole within [`REQUEST_TIMEOUT`] and fit in [`MAX_REQUEST`] bytes,
//! and every answer closes the connection. A silent or slow client therefore delays a scrape
//! by at most the timeout, costs no memory beyond the request buffer, and can never stop the
//! process: errors are logged (sampled by the kernel's backlog, one line per bad client).

mod http;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub use prometheus;
use prometheus::{Encoder, Registry, TextEncoder};

/// How long a client has to send its whole request, and to take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request accepted (request line and headers; Prometheus sends about 300 bytes).
pub const MAX_REQUEST: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("metrics: cannot start the metrics thread: {0}")]
    Spawn(io::Error),
    #[error("metrics: bad metric definition: {0}")]
    Define(#[from] prometheus::Error),
}

/// A bound `--metrics-listen` socket, not yet served.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsListener {
    /// Binds `addr` (port 0 picks a free port: see [`local_addr`](Self::local_addr)).
    pub fn bind(addr: SocketAddr) -> Result<Self, MetricsError> {
        let bind = |source| MetricsError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        Ok(MetricsListener { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `registry` on a thread named `metrics`, which first runs `on_start` (the vmm
    /// installs its seccomp filter there) and calls `refresh` before each scrape (a backend
    /// copies its own counters into the registry there). Returns at once; the thread runs
    /// until the process ends.
    pub fn spawn(
        self,
        registry: &'static Registry,
        on_start: impl FnOnce() + Send + 'static,
        refresh: impl Fn() + Send + 'static,
    ) -> Result<JoinHandle<()>, MetricsError> {
        log::info!("metrics on http://{}/metrics", self.addr);
        thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                on_start();
                serve(&self.listener, registry, &refresh);
            })
            .map_err(MetricsError::Spawn)
    }
}

fn serve(listener: &TcpListener, registry: &Registry, refresh: &dyn Fn()) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = http::answer(stream, registry, refresh) {
                    log::warn!("metrics: request from {peer} dropped: {e}");
                }
            }
            // Out of file descriptors or a connection reset before accept: not this
            // endpoint's to fix; wait a little so that the loop does not spin.
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The registry in the text exposition format (what `GET /metrics` answers).
pub fn render(registry: &Registry) -> String {
    let mut text = Vec::new();
    // Encoding fails only for a metric family without samples or with bad label names,
    // which registration already refused; the scrape then gets what was encoded, and the
    // error is in the log.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut text) {
        log::error!("metrics: cannot encode: {e}");
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests;

/// Brings a Prometheus counter up to `value`, a monotonic count kept elsewhere (the
/// backends' atomics): counters only go up, so the difference is added.
pub fn mirror(counter: &prometheus::IntCounter, value: u64) {
    counter.inc_by(value.saturating_sub(counter.get()));
}

/// Registers and returns a counter family `name` with `labels`.
pub fn counters(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<prometheus::IntCounterVec> {
    let family = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)?;
    registry.register(Box::new(family.clone()))?;
    Ok(family)
}

/// Registers and returns a counter `name`.
pub fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
) -> prometheus::Result<prometheus::IntCounter> {
    let c = prometheus::IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}
