//! Pre-copy join (docs/ARCHITECTURE.md, "Join"): the `ft-precopy` thread sends all guest
//! memory while the guest runs, then rounds of the pages dirtied meanwhile (ft::dirty), until
//! what is left would go in about half the pause budget (`--ft-join-pause-ms`). Then it hands
//! the stream to the vCPU thread, which stops at a landmark and sends the rest with the vCPU
//! and device state (vstate::transfer). This is the iterative pre-copy of QEMU's live
//! migration and of VMware's FT VMotion.
//!
//! Liveness during the transfer: every record counts as life for the backup's watchdog, and a
//! heartbeat goes whenever nothing else was written for a heartbeat period (a long run of
//! zero pages, a wait for the vCPU). The backup heartbeats and acks too; the primary reads
//! and watches those from the start of the join (ft::channel::PendingLink), so a backup that
//! dies mid-transfer is noticed, the join fails, and the primary goes on unprotected.
//!
//! Convergence: a guest that dirties more during a round than half of what the round could
//! send is slowed, as QEMU's auto-converge does: the vCPU thread sleeps for a growing share
//! of its time (20%, then +10% a round, at most 95%), and the log and the status say so.

use super::link::LinkStream;
use std::io::BufWriter;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::channel::{PrimaryShared, HEARTBEAT};
use super::dirty::{DirtyError, DirtyLog, DirtyPages};
use super::record::{Record, RecordError, RecordWriter};
use super::state::StateError;
use super::timers;
use crate::event_loop::Registrar;
use crate::inbox::{DeviceEvent, Inbox};
use crate::memory::{data_extents, PAGE_BYTES, PAGE_SIZE};
use crate::stats::millis;
use crate::sync::lock;

/// Memory records carry at most this many pages (the record format's 1 MiB data limit).
const RUN_PAGES: u64 = (super::record::MAX_DATA as u64) / PAGE_SIZE;
/// Rounds after the first before the join stops waiting for convergence.
pub const MAX_ROUNDS: u32 = 30;
/// Throttling: first step, step per round, and the most of the vCPU's time taken away.
const THROTTLE_FIRST: u32 = 20;
const THROTTLE_STEP: u32 = 10;
const THROTTLE_MAX: u32 = 95;
/// A write that the backup does not take for this long ends the transfer (the backup may
/// heartbeat and still never read).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("logging channel: {0}")]
    Record(#[from] RecordError),
    #[error(transparent)]
    Dirty(#[from] DirtyError),
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("vCPU or device state: {0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Kvm(String),
    #[error("cannot start the transfer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the pre-copy thread ended without a result")]
    Vanished,
}

impl AsRawFd for TransferWriter {
    fn as_raw_fd(&self) -> RawFd {
        self.w.get_ref().get_ref().as_raw_fd()
    }
}

/// The write side of a state transfer: counts what it sent and heartbeats when idle.
pub struct TransferWriter {
    w: RecordWriter<BufWriter<LinkStream>>,
    last_write: Instant,
    pub bytes: u64,
    /// The link's count of records sent, which the backup's acks are checked against.
    link: Arc<PrimaryShared>,
}

impl TransferWriter {
    pub fn new(stream: LinkStream, link: Arc<PrimaryShared>) -> std::io::Result<Self> {
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(TransferWriter {
            w: RecordWriter::new(BufWriter::with_capacity(1 << 20, stream)),
            last_write: Instant::now(),
            bytes: 0,
            link,
        })
    }

    pub fn write(&mut self, record: &Record) -> Result<(), JoinError> {
        // Counted before it is written: the backup may ack it before `write` returns.
        self.link
            .sent
            .store(self.w.last_seq() + 1, Ordering::SeqCst);
        self.w.write(record)?;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Sends a heartbeat (and flushes) if nothing was written for a heartbeat period.
    pub fn heartbeat_if_due(&mut self) -> Result<(), JoinError> {
        if self.last_write.elapsed() >= HEARTBEAT {
            let unix_ms = super::channel::unix_ms();
            self.write(&Record::Heartbeat {
                landmark: 0,
                unix_ms,
            })?;
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), JoinError> {
        Ok(self.w.flush()?)
    }

    pub fn last_seq(&self) -> u64 {
        self.w.last_seq()
    }

    /// Sends `pages` pages from `gpa`: runs of non-zero pages as `MemoryChunk`, runs of zero
    /// pages as `MemoryZero` (or nothing with `skip_zero`: the backup zeroed its RAM first).
    fn send_pages(
        &mut self,
        mem: &GuestMemoryMmap,
        gpa: u64,
        pages: u64,
        skip_zero: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(), JoinError> {
        let too_big = || {
            JoinError::Memory(format!(
                "{pages} pages at {gpa:#x}: too many for one buffer"
            ))
        };
        let pages = usize::try_from(pages).map_err(|_| too_big())?;
        let len = pages.checked_mul(PAGE_BYTES).ok_or_else(too_big)?;
        buf.resize(len, 0);
        mem.read_slice(&mut buf[..len], GuestAddress(gpa))
            .map_err(|e| JoinError::Memory(format!("cannot read {gpa:#x}+{len:#x}: {e}")))?;
        let is_zero = |p: usize| {
            buf[p * PAGE_BYTES..(p + 1) * PAGE_BYTES]
                .chunks_exact(8)
                .all(|w| w == [0u8; 8])
        };
        let mut p = 0usize;
        while p < pages {
            let zero = is_zero(p);
            let mut q = p + 1;
            while q < pages && is_zero(q) == zero {
                q += 1;
            }
            let (from, to) = (p * PAGE_BYTES, q * PAGE_BYTES);
            let at = gpa + from as u64;
            if !zero {
                self.bytes += (to - from) as u64;
                self.write(&Record::MemoryChunk {
                    gpa: at,
                    data: buf[from..to].to_vec(),
                })?;
            } else if !skip_zero {
                self.write(&Record::MemoryZero {
                    gpa: at,
                    len: (to - from) as u64,
                })?;
            }
            p = q;
        }
        self.heartbeat_if_due()
    }

    /// Every page of guest RAM that may hold data (round 0).
    pub fn send_all(&mut self, mem: &GuestMemoryMmap) -> Result<(), JoinError> {
        let mut buf = Vec::new();
        for region in mem.iter() {
            let base = vm_memory::Address::raw_value(&region.start_addr());
            for (off, len) in data_extents(region) {
                let (first, end) = (off / PAGE_SIZE, (off + len).div_ceil(PAGE_SIZE));
                let mut page = first;
                while page < end {
                    let n = RUN_PAGES.min(end - page);
                    self.send_pages(mem, base + page * PAGE_SIZE, n, true, &mut buf)?;
                    page += n;
                }
            }
        }
        Ok(())
    }

    /// The pages in `pages` (a round, or the final stop-and-copy).
    pub fn send_dirty(
        &mut self,
        mem: &GuestMemoryMmap,
        pages: &DirtyPages,
    ) -> Result<(), JoinError> {
        let mut buf = Vec::new();
        for (gpa, n) in pages.runs(RUN_PAGES) {
            self.send_pages(mem, gpa, n, false, &mut buf)?;
        }
        Ok(())
    }

    /// The transfer is over: logging records are sent without a write timeout.
    pub fn finish(mut self) -> Result<u64, JoinError> {
        self.flush()?;
        self.w.get_ref().get_ref().set_write_timeout(None)?;
        Ok(self.last_seq())
    }
}

/// What the pre-copy thread hands the vCPU thread for the stop-and-copy.
pub struct Handoff {
    pub writer: TransferWriter,
    /// Pages dirtied in the last round, not sent yet.
    pub pending: DirtyPages,
    pub rounds: u32,
}

pub enum JoinState {
    Copying,
    Ready(Box<Handoff>),
    Failed(JoinError),
    Taken,
}

/// Progress of a join, for the status and the vCPU's throttle.
#[derive(Default)]
pub struct JoinProgress {
    pub round: AtomicU32,
    /// Share of the vCPU's time taken away (percent); 0 = not throttled.
    pub throttle_pct: AtomicU32,
    pub max_throttle_pct: AtomicU32,
    /// Bytes of the last round's dirty set.
    pub remaining: AtomicU64,
    /// How long round 0 (all memory in use) took: about what a stop-and-copy of the same
    /// memory would have paused the guest for.
    pub first_round_ms: AtomicU64,
}

pub struct PrecopyJob {
    pub mem: GuestMemoryMmap,
    pub link: Arc<PrimaryShared>,
    pub dirty: Arc<DirtyLog>,
    pub stream: LinkStream,
    pub hello: Record,
    pub landmark: u64,
    pub budget: Duration,
    pub inbox: Arc<Inbox>,
    pub state: Arc<Mutex<JoinState>>,
    pub progress: Arc<JoinProgress>,
    /// Where the heartbeats that wait for the vCPU's stop-and-copy run.
    pub events: Registrar,
}

/// Starts the `ft-precopy` thread. When it is ready for the stop-and-copy (or has failed) it
/// posts `FtJoinReady`.
pub fn spawn(job: PrecopyJob) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ft-precopy".into())
        .spawn(move || {
            crate::seccomp::enter(crate::seccomp::ThreadKind::Precopy);
            // A failure is handled by the vCPU thread (Primary::join_failed stops the dirty
            // log and closes the link), like every other end of a join.
            let result = rounds(&job);
            let failed = result.is_err();
            *lock(&job.state) = match result {
                Ok(h) => JoinState::Ready(Box::new(h)),
                Err(e) => JoinState::Failed(e),
            };
            if !failed {
                // Until the vCPU takes the stream, keep the backup's watchdog fed.
                let keepalive =
                    timers::transfer_keepalive(&job.events, job.state.clone(), job.inbox.clone());
                if let Err(e) = keepalive {
                    log::warn!("ft: no heartbeats until the stop-and-copy: {e}");
                }
            }
            job.inbox.post(DeviceEvent::FtJoinReady);
        })?;
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn rounds(job: &PrecopyJob) -> Result<Handoff, JoinError> {
    let mut w = TransferWriter::new(job.stream.try_clone()?, job.link.clone())?;
    w.write(&job.hello)?;
    w.write(&Record::StateBegin {
        landmark: job.landmark,
    })?;
    job.dirty.start()?;
    let start = Instant::now();
    w.send_all(&job.mem)?;
    w.flush()?;
    let took = start.elapsed();
    job.progress
        .first_round_ms
        .store(millis(took), Ordering::Relaxed);
    // Bytes per second the link (and the backup) took; what the convergence test divides by.
    let mut rate = (w.bytes as f64 / took.as_secs_f64().max(1e-3)).max(1e6);
    log::info!(
        "ft: pre-copy round 0: {:.1} MiB of guest memory sent in {} ms while the guest ran",
        mib(w.bytes),
        took.as_millis()
    );
    let (p, budget) = (&job.progress, job.budget.as_secs_f64() / 2.0);
    let mut last_sent = u64::MAX;
    for round in 1..=MAX_ROUNDS + 1 {
        p.round.store(round, Ordering::Relaxed);
        let pages = job.dirty.take()?;
        let bytes = pages.bytes();
        p.remaining.store(bytes, Ordering::Relaxed);
        if bytes as f64 / rate <= budget || round > MAX_ROUNDS {
            if round > MAX_ROUNDS {
                log::warn!(
                    "ft: pre-copy did not converge in {MAX_ROUNDS} rounds; stopping the guest with {:.1} MiB left",
                    mib(bytes)
                );
            }
            return Ok(Handoff {
                writer: w,
                pending: pages,
                rounds: round,
            });
        }
        if round >= 2 && bytes > last_sent / 2 {
            let now = p.throttle_pct.load(Ordering::Relaxed);
            let next = if now == 0 {
                THROTTLE_FIRST
            } else {
                (now + THROTTLE_STEP).min(THROTTLE_MAX)
            };
            p.throttle_pct.store(next, Ordering::Relaxed);
            p.max_throttle_pct.fetch_max(next, Ordering::Relaxed);
            log::warn!(
                "ft: pre-copy round {round}: the guest dirtied {:.1} MiB while {:.1} MiB were sent; throttling the guest by {next}%",
                mib(bytes),
                mib(last_sent)
            );
        }
        let t = Instant::now();
        w.send_dirty(&job.mem, &pages)?;
        w.flush()?;
        if bytes >= 1 << 20 {
            rate = bytes as f64 / t.elapsed().as_secs_f64().max(1e-4);
        }
        last_sent = bytes;
    }
    Err(JoinError::Vanished)
}
