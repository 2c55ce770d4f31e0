//! The transmission phase: an NBD client with several requests in flight and transparent
//! reconnection.
//!
//! Threads:
//! - the *writer* sends queued requests (by cookie) on the current connection;
//! - the *reader* reads simple replies, matches them to requests by cookie and runs each
//!   request's callback (outside every lock). When the connection fails (EOF, ECONNRESET,
//!   a protocol violation, `ESHUTDOWN`), the reader reconnects with exponential backoff and
//!   re-queues every request that has not been answered yet. Callers only see a delay.
//!
//! A reconnection that finds the export changed (size, flags or block sizes differ from the
//! first handshake, on which the device was set up) is refused: every request fails with
//! [`NbdError::ExportChanged`] until a later attempt finds the export as it was.
//!
//! Every request carries the *generation* (connection number) it was last sent on, so a
//! request is never sent twice on the same connection. Re-sending READ, WRITE, FLUSH and TRIM
//! is idempotent, so a request that the old server had executed but not acknowledged is safe
//! to repeat.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::conn::{dial, lock, Inflight, Pending, Shared, WriterState};
use super::handshake::ExportInfo;
use super::uri::NbdUri;
use super::NbdError;
use crate::metrics::METRICS;

/// One NBD command. Lengths are in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Read { offset: u64, len: u32 },
    Write { offset: u64, data: Vec<u8> },
    Flush,
    Trim { offset: u64, len: u32 },
}

impl Command {
    /// The command's name in the NBD protocol, lower case (for metrics and logs).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Read { .. } => "read",
            Command::Write { .. } => "write",
            Command::Flush => "flush",
            Command::Trim { .. } => "trim",
        }
    }
}

/// Called exactly once with the result of a command: the data for READ, empty otherwise.
pub type Callback = Box<dyn FnOnce(Result<Vec<u8>, NbdError>) + Send>;

/// Tuning of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// First reconnection delay; doubled after every failed attempt...
    pub backoff_min: Duration,
    /// ... up to this cap.
    pub backoff_max: Duration,
    /// Timeout for reads during the handshake (a server that accepts but never answers).
    pub handshake_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// An NBD client connected to one export.
pub struct Client {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Client {
    /// Connects and negotiates once; fails if the server cannot be reached now.
    pub fn connect(uri: &NbdUri, opts: ClientOptions) -> Result<Client, NbdError> {
        let (stream, info) = dial(uri, &opts)?;
        log::info!(
            "connected to {uri}: {} bytes, flags {:#x}, block sizes {}/{}/{}",
            info.size,
            info.flags,
            info.min_block,
            info.preferred_block,
            info.max_payload
        );
        let stream = Arc::new(stream);
        let shared = Arc::new(Shared {
            uri: uri.clone(),
            opts,
            info,
            inflight: Mutex::new(Inflight {
                next_cookie: 1,
                ..Default::default()
            }),
            writer: Mutex::new(WriterState {
                stream: Some(stream.clone()),
                gen: 1,
                queue: VecDeque::new(),
                closed: false,
            }),
            writer_cv: Condvar::new(),
            sleep: Mutex::new(()),
            sleep_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            connected: AtomicBool::new(true),
            changed: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            max_inflight: AtomicUsize::new(0),
        });
        let w = shared.clone();
        let writer = thread::Builder::new()
            .name("nbd-writer".into())
            .spawn(move || w.writer_loop())?;
        let r = shared.clone();
        let reader = thread::Builder::new()
            .name("nbd-reader".into())
            .spawn(move || r.reader_loop(stream, 1))?;
        Ok(Client {
            shared,
            threads: Mutex::new(vec![writer, reader]),
        })
    }

    /// What the (first) handshake reported.
    pub fn info(&self) -> ExportInfo {
        self.shared.info
    }

    /// Whether a connection is currently established.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// How many times the client has reconnected.
    pub fn reconnect_count(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Acquire)
    }

    /// The largest number of requests that were in flight at once.
    pub fn max_inflight_seen(&self) -> usize {
        self.shared.max_inflight.load(Ordering::Acquire)
    }

    /// Whether the server's export differs from the first handshake's (requests then fail
    /// with [`NbdError::ExportChanged`] until it is back as it was).
    pub fn export_changed(&self) -> bool {
        self.shared.changed.load(Ordering::Acquire)
    }

    /// Checks a command against the export's size, flags and block size constraints (those
    /// of the first handshake: a changed export is refused) before anything is sent.
    pub fn check(&self, cmd: &Command) -> Result<(), NbdError> {
        if self.export_changed() {
            return Err(NbdError::ExportChanged);
        }
        let info = &self.shared.info;
        let (offset, len) = match cmd {
            Command::Flush if !info.can_flush() => return Err(NbdError::Unsupported("flush")),
            Command::Flush => return Ok(()),
            Command::Trim { .. } if !info.can_trim() => return Err(NbdError::Unsupported("trim")),
            Command::Write { .. } | Command::Trim { .. } if info.read_only() => {
                return Err(NbdError::ReadOnly)
            }
            Command::Read { offset, len } | Command::Trim { offset, len } => {
                (*offset, u64::from(*len))
            }
            Command::Write { offset, data } => (*offset, data.len() as u64),
        };
        if !matches!(cmd, Command::Trim { .. }) && len > u64::from(info.max_payload) {
            return Err(NbdError::TooLarge {
                len,
                max: info.max_payload,
            });
        }
        if offset.checked_add(len).is_none_or(|end| end > info.size) {
            return Err(NbdError::OutOfRange {
                offset,
                len,
                size: info.size,
            });
        }
        let mb = u64::from(info.min_block);
        if offset % mb != 0 || len % mb != 0 {
            return Err(NbdError::Unaligned {
                offset,
                len,
                min_block: info.min_block,
            });
        }
        Ok(())
    }

    /// Submits one command; `done` runs later on the reader thread (or now, on a local
    /// error). While the server is unreachable the command waits.
    pub fn submit(&self, cmd: Command, done: Callback) {
        if let Err(e) = self.check(&cmd) {
            return done(Err(e));
        }
        let empty = match &cmd {
            Command::Read { len, .. } | Command::Trim { len, .. } => *len == 0,
            Command::Write { data, .. } => data.is_empty(),
            Command::Flush => false,
        };
        if empty {
            return done(Ok(Vec::new()));
        }
        let (started, command) = (Instant::now(), cmd.name());
        let done: Callback = Box::new(move |result| {
            METRICS.nbd_reply(command, started.elapsed(), result.is_ok());
            done(result)
        });
        let sh = &self.shared;
        let cookie = {
            let mut inf = lock(&sh.inflight);
            if inf.closed {
                drop(inf);
                return done(Err(NbdError::Closed));
            }
            let cookie = inf.next_cookie;
            inf.next_cookie += 1;
            inf.map.insert(
                cookie,
                Pending {
                    cmd: Arc::new(cmd),
                    sent_gen: 0,
                    done,
                },
            );
            sh.max_inflight.fetch_max(inf.map.len(), Ordering::AcqRel);
            cookie
        };
        lock(&sh.writer).queue.push_back(cookie);
        sh.writer_cv.notify_one();
    }

    /// Runs one command and waits for its result.
    pub fn call(&self, cmd: Command) -> Result<Vec<u8>, NbdError> {
        let (tx, rx) = mpsc::channel();
        self.submit(
            cmd,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(NbdError::Closed))
    }

    /// Reads `len` bytes at `offset` (split into several commands if needed).
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, NbdError> {
        let max = self.shared.info.max_payload as usize;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let n = (len - out.len()).min(max);
            let off = offset + out.len() as u64;
            out.extend(self.call(Command::Read {
                offset: off,
                // At most the server's max payload, a u32.
                len: u32::try_from(n).unwrap_or(u32::MAX),
            })?);
        }
        Ok(out)
    }

    /// Writes `data` at `offset` (split into several commands if needed).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), NbdError> {
        let max = self.shared.info.max_payload as usize;
        for (i, chunk) in data.chunks(max.max(1)).enumerate() {
            let off = offset + (i * max) as u64;
            self.call(Command::Write {
                offset: off,
                data: chunk.to_vec(),
            })?;
        }
        Ok(())
    }

    /// `NBD_CMD_FLUSH`.
    pub fn flush(&self) -> Result<(), NbdError> {
        self.call(Command::Flush).map(|_| ())
    }

    /// `NBD_CMD_TRIM` (only when the server offered it).
    pub fn trim(&self, offset: u64, len: u32) -> Result<(), NbdError> {
        self.call(Command::Trim { offset, len }).map(|_| ())
    }

    /// Sends `NBD_CMD_DISC` and closes the connection. Requests still in flight fail with
    /// [`NbdError::Closed`].
    pub fn close(&self) {
        let sh = &self.shared;
        if sh.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let stream = {
            let mut w = lock(&sh.writer);
            w.closed = true;
            w.stream.clone()
        };
        sh.writer_cv.notify_all();
        sh.sleep_cv.notify_all();
        // Never join the current thread (the last reference may be dropped by a callback
        // running on the reader thread).
        let me = thread::current().id();
        let threads: Vec<_> = lock(&self.threads)
            .drain(..)
            .filter(|t| t.thread().id() != me)
            .collect();
        let (tx, rx) = mpsc::channel();
        let joiner = thread::spawn(move || {
            for t in threads {
                let _ = t.join();
            }
            let _ = tx.send(());
        });
        // The writer sends NBD_CMD_DISC and shuts the stream down; if it is stuck writing to
        // a server that does not read, cut the connection.
        if rx.recv_timeout(Duration::from_secs(2)).is_err() {
            if let Some(s) = stream {
                s.shutdown();
            }
            let _ = rx.recv();
        }
        let _ = joiner.join();
        sh.fail_all();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}
