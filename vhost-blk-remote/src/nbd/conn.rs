//! The connection machinery behind [`super::Client`]: shared state, the writer thread,
//! the reader thread (reply matching, reconnection with backoff, re-sending).

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::client::{Callback, ClientOptions, Command};
use super::handshake::{negotiate, ExportInfo};
use super::proto::*;
use super::stream::Stream;
use super::uri::NbdUri;
use super::NbdError;

pub(super) struct Pending {
    pub(super) cmd: Arc<Command>,
    /// Generation of the connection the request was last written to (0: never).
    pub(super) sent_gen: u64,
    pub(super) done: Callback,
}

#[derive(Default)]
pub(super) struct Inflight {
    pub(super) map: BTreeMap<u64, Pending>,
    pub(super) next_cookie: u64,
    pub(super) closed: bool,
}

pub(super) struct WriterState {
    pub(super) stream: Option<Arc<Stream>>,
    pub(super) gen: u64,
    pub(super) queue: VecDeque<u64>,
    pub(super) closed: bool,
}

pub(super) struct Shared {
    pub(super) uri: NbdUri,
    pub(super) opts: ClientOptions,
    pub(super) info: ExportInfo,
    pub(super) inflight: Mutex<Inflight>,
    pub(super) writer: Mutex<WriterState>,
    pub(super) writer_cv: Condvar,
    pub(super) sleep: Mutex<()>,
    pub(super) sleep_cv: Condvar,
    pub(super) closed: AtomicBool,
    pub(super) connected: AtomicBool,
    /// The server's export no longer matches the first handshake (see `reconnect`).
    pub(super) changed: AtomicBool,
    pub(super) reconnects: AtomicU64,
    pub(super) max_inflight: AtomicUsize,
}

/// Locks a mutex, ignoring poisoning (a panicking callback must not wedge the client).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a request's callback; a panicking callback is logged and does not take the reader
/// thread (and so the client) down.
fn run_callback(done: Callback, result: Result<Vec<u8>, NbdError>) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(result)));
    if r.is_err() {
        log::error!("an NBD completion callback panicked");
    }
}

pub(super) fn dial(uri: &NbdUri, opts: &ClientOptions) -> Result<(Stream, ExportInfo), NbdError> {
    let stream = Stream::connect(&uri.address)?;
    stream.set_read_timeout(Some(opts.handshake_timeout))?;
    let info = negotiate(&stream, &uri.export)?;
    stream.set_read_timeout(None)?;
    Ok((stream, info))
}

impl Shared {
    pub(super) fn writer_loop(&self) {
        loop {
            let (stream, gen, cookie) = {
                let mut w = lock(&self.writer);
                loop {
                    if w.closed {
                        if let Some(s) = w.stream.take() {
                            let disc = encode_request(0, NBD_CMD_DISC, 0, 0, 0);
                            let _ = (&*s).write_all(&disc);
                            s.shutdown();
                        }
                        return;
                    }
                    if let Some(s) = w.stream.clone() {
                        if let Some(c) = w.queue.pop_front() {
                            break (s, w.gen, c);
                        }
                    }
                    w = self.writer_cv.wait(w).unwrap_or_else(|p| p.into_inner());
                }
            };
            let cmd = {
                let mut inf = lock(&self.inflight);
                match inf.map.get_mut(&cookie) {
                    Some(p) if p.sent_gen != gen => {
                        p.sent_gen = gen;
                        Some(p.cmd.clone())
                    }
                    _ => None,
                }
            };
            let Some(cmd) = cmd else { continue };
            if let Err(e) = write_command(&stream, cookie, &cmd) {
                log::warn!("NBD write to {} failed: {e}", self.uri);
                let mut w = lock(&self.writer);
                if w.gen == gen {
                    w.stream = None;
                    w.queue.clear();
                }
                stream.shutdown();
            }
        }
    }

    pub(super) fn reader_loop(&self, stream: Arc<Stream>, gen: u64) {
        let mut current = Some((stream, gen));
        loop {
            let (stream, gen) = match current.take() {
                Some(c) => c,
                None => match self.reconnect() {
                    Some(c) => c,
                    None => break,
                },
            };
            let err = self.read_replies(&stream, gen);
            self.connected.store(false, Ordering::Release);
            {
                let mut w = lock(&self.writer);
                if w.gen == gen {
                    w.stream = None;
                    w.queue.clear();
                }
            }
            stream.shutdown();
            if self.closed.load(Ordering::Acquire) {
                break;
            }
            log::warn!("NBD connection to {} lost: {err}; reconnecting", self.uri);
        }
        self.fail_all();
    }

    /// Reads replies until the connection becomes unusable; returns why.
    fn read_replies(&self, stream: &Stream, gen: u64) -> NbdError {
        let mut s = stream;
        loop {
            let mut hdr = [0u8; SIMPLE_REPLY_LEN];
            if let Err(e) = s.read_exact(&mut hdr) {
                return e.into();
            }
            let reply = match decode_simple_reply(&hdr) {
                Ok(r) => r,
                Err(NBD_STRUCTURED_REPLY_MAGIC) => {
                    return NbdError::Protocol("structured reply was not negotiated".into())
                }
                Err(m) => return NbdError::Protocol(format!("bad reply magic {m:#x}")),
            };
            let payload = {
                let inf = lock(&self.inflight);
                match inf.map.get(&reply.cookie) {
                    None => {
                        return NbdError::Protocol(format!(
                            "reply for unknown cookie {}",
                            reply.cookie
                        ))
                    }
                    Some(p) if p.sent_gen != gen => {
                        return NbdError::Protocol(format!(
                            "reply for cookie {} not sent on this connection",
                            reply.cookie
                        ))
                    }
                    Some(p) => match *p.cmd {
                        Command::Read { len, .. } if reply.error == 0 => len as usize,
                        _ => 0,
                    },
                }
            };
            if reply.error == NBD_ESHUTDOWN {
                // The server is going away: keep the request, it is re-sent on reconnect.
                return NbdError::Server { code: reply.error };
            }
            let mut data = vec![0u8; payload];
            if let Err(e) = s.read_exact(&mut data) {
                return e.into();
            }
            let pending = lock(&self.inflight).map.remove(&reply.cookie);
            if let Some(p) = pending {
                let result = match reply.error {
                    0 => Ok(data),
                    code => Err(NbdError::Server { code }),
                };
                run_callback(p.done, result);
            }
        }
    }

    /// Reconnects with exponential backoff; `None` once the client is closed.
    fn reconnect(&self) -> Option<(Arc<Stream>, u64)> {
        let mut delay = self.opts.backoff_min;
        let mut attempts: u64 = 0;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            attempts += 1;
            match dial(&self.uri, &self.opts) {
                Ok((stream, info)) if info != self.info => {
                    // The device was set up from the first handshake (capacity, read-only,
                    // flush, discard, block sizes) and the guest relies on it: serving a
                    // smaller export would send requests past its end, a read-only one
                    // would refuse the writes the guest was told it may do. So the
                    // connection is refused, every request fails (EIO to the guest), and
                    // the client keeps trying until the export is back as it was.
                    log::warn!(
                        "export {} changed across reconnect: size {} -> {}, flags {:#x} -> {:#x}",
                        self.uri,
                        self.info.size,
                        info.size,
                        self.info.flags,
                        info.flags
                    );
                    if !self.changed.swap(true, Ordering::AcqRel) {
                        log::error!(
                            "refusing the changed export {}: requests fail with EIO until it is \
                             back to {} bytes, flags {:#x}, block sizes {}/{}/{}",
                            self.uri,
                            self.info.size,
                            self.info.flags,
                            self.info.min_block,
                            self.info.preferred_block,
                            self.info.max_payload
                        );
                    }
                    stream.shutdown();
                    self.fail_pending();
                    let g = lock(&self.sleep);
                    let _ = self.sleep_cv.wait_timeout(g, self.opts.backoff_max);
                }
                Ok((stream, _)) => {
                    if self.changed.swap(false, Ordering::AcqRel) {
                        log::info!("export {} is back as it was; serving it again", self.uri);
                    }
                    let stream = Arc::new(stream);
                    let (gen, resent) = {
                        let mut w = lock(&self.writer);
                        if w.closed {
                            stream.shutdown();
                            return None;
                        }
                        w.gen += 1;
                        w.stream = Some(stream.clone());
                        let cookies: VecDeque<u64> =
                            lock(&self.inflight).map.keys().copied().collect();
                        let n = cookies.len();
                        w.queue = cookies;
                        (w.gen, n)
                    };
                    self.writer_cv.notify_all();
                    self.connected.store(true, Ordering::Release);
                    self.reconnects.fetch_add(1, Ordering::AcqRel);
                    crate::metrics::METRICS.nbd_reconnects.inc();
                    log::info!(
                        "reconnected to {} after {attempts} attempt(s); re-sending {resent} request(s)",
                        self.uri
                    );
                    return Some((stream, gen));
                }
                Err(e) => {
                    if attempts == 1 || attempts.is_power_of_two() {
                        log::warn!(
                            "reconnect to {} failed (attempt {attempts}): {e}; retrying in {delay:?}",
                            self.uri
                        );
                    }
                    let g = lock(&self.sleep);
                    let _ = self.sleep_cv.wait_timeout(g, delay);
                    delay = (delay * 2).min(self.opts.backoff_max);
                }
            }
        }
    }

    /// Fails every request waiting for the server with [`NbdError::ExportChanged`] (the
    /// client stays open).
    fn fail_pending(&self) {
        lock(&self.writer).queue.clear();
        let map = std::mem::take(&mut lock(&self.inflight).map);
        for (_, p) in map {
            run_callback(p.done, Err(NbdError::ExportChanged));
        }
    }

    /// Fails every request still pending (the client is closed).
    pub(super) fn fail_all(&self) {
        let map = {
            let mut inf = lock(&self.inflight);
            inf.closed = true;
            std::mem::take(&mut inf.map)
        };
        for (_, p) in map {
            run_callback(p.done, Err(NbdError::Closed));
        }
    }
}

fn write_command(stream: &Stream, cookie: u64, cmd: &Command) -> std::io::Result<()> {
    let mut s = stream;
    let (hdr, data): ([u8; REQUEST_HEADER_LEN], &[u8]) = match cmd {
        Command::Read { offset, len } => {
            (encode_request(0, NBD_CMD_READ, cookie, *offset, *len), &[])
        }
        Command::Write { offset, data } => (
            // Client::check bounded the write to the export's max payload (a u32).
            encode_request(
                0,
                NBD_CMD_WRITE,
                cookie,
                *offset,
                u32::try_from(data.len()).unwrap_or(u32::MAX),
            ),
            data,
        ),
        Command::Flush => (encode_request(0, NBD_CMD_FLUSH, cookie, 0, 0), &[]),
        Command::Trim { offset, len } => {
            (encode_request(0, NBD_CMD_TRIM, cookie, *offset, *len), &[])
        }
    };
    if data.is_empty() {
        s.write_all(&hdr)
    } else if data.len() <= 64 * 1024 {
        let mut b = Vec::with_capacity(hdr.len() + data.len());
        b.extend_from_slice(&hdr);
        b.extend_from_slice(data);
        s.write_all(&b)
    } else {
        s.write_all(&hdr)?;
        s.write_all(data)
    }
}
