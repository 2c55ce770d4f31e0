//! Executes validated requests against the NBD export and produces [`Completion`]s.
//!
//! Nothing here touches guest memory: READ data travels inside the completion and is
//! written by the sink (see [`super::completion`]). Requests larger than the export's
//! maximum payload are split into several NBD commands that run concurrently.

use std::sync::{Arc, Mutex};

use super::completion::Completion;
use super::config::{DeviceConfig, SECTOR_SIZE};
use super::request::{Request, RequestKind};
use crate::nbd::{Client, Command, NbdError};

use super::status::{IOERR as S_IOERR, OK as S_OK, UNSUPP as S_UNSUPP};

/// Receives the completion of one request.
pub type Done = Box<dyn FnOnce(Completion) + Send>;

/// Turns requests into NBD commands.
pub struct Executor {
    nbd: Arc<Client>,
    dev: DeviceConfig,
}

type Finish = Box<dyn FnOnce(Result<Vec<u8>, NbdError>) + Send>;

/// Collects the results of the NBD commands of one request.
struct FanIn {
    remaining: usize,
    error: Option<NbdError>,
    data: Vec<u8>,
    finish: Option<Finish>,
}

impl Executor {
    pub fn new(nbd: Arc<Client>, dev: DeviceConfig) -> Self {
        Executor { nbd, dev }
    }

    pub fn device(&self) -> &DeviceConfig {
        &self.dev
    }

    pub fn nbd(&self) -> &Arc<Client> {
        &self.nbd
    }

    /// Byte range of `len` bytes at `sector`, if it lies inside the disk.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        let off = sector.checked_mul(SECTOR_SIZE)?;
        let end = off.checked_add(len)?;
        (end <= self.dev.capacity_bytes()).then_some(off)
    }

    /// Executes `req`; `done` is called exactly once (maybe before this returns).
    pub fn execute(&self, req: Request, done: Done) {
        let head = req.head;
        let st = Some(req.status_addr);
        let status_only = move |s: u8| Completion::status_only(head, st, s);
        match req.kind {
            RequestKind::In { sector, segs, len } => {
                let Some(off) = self.range(sector, u64::from(len)) else {
                    log::warn!("read of {len} bytes at sector {sector} is beyond the disk");
                    return done(status_only(S_IOERR));
                };
                let max = u64::from(self.nbd.info().max_payload);
                let cmds = (0..u64::from(len))
                    .step_by(usize::try_from(max).unwrap_or(usize::MAX).max(1))
                    .map(|o| {
                        // At most `len`, a u32.
                        let n = u32::try_from((u64::from(len) - o).min(max)).unwrap_or(len);
                        (
                            Command::Read {
                                offset: off + o,
                                len: n,
                            },
                            usize::try_from(o).unwrap_or(usize::MAX),
                        )
                    })
                    .collect();
                self.fan_out(cmds, len as usize, move |r| match r {
                    Ok(data) => done(Completion {
                        head,
                        len: len + 1,
                        status: Some(S_OK),
                        status_addr: st,
                        data,
                        data_segs: segs,
                    }),
                    Err(e) => {
                        log::warn!("read at sector {sector} failed: {e}");
                        done(status_only(S_IOERR))
                    }
                });
            }
            RequestKind::Out { sector, data } => {
                if self.dev.read_only {
                    log::warn!("write to a read-only disk at sector {sector} refused");
                    return done(status_only(S_IOERR));
                }
                let Some(off) = self.range(sector, data.len() as u64) else {
                    log::warn!(
                        "write of {} bytes at sector {sector} is beyond the disk",
                        data.len()
                    );
                    return done(status_only(S_IOERR));
                };
                let max = self.nbd.info().max_payload as usize;
                let cmds = if data.len() <= max {
                    vec![(Command::Write { offset: off, data }, 0)]
                } else {
                    data.chunks(max)
                        .enumerate()
                        .map(|(i, c)| {
                            let offset = off + (i * max) as u64;
                            (
                                Command::Write {
                                    offset,
                                    data: c.to_vec(),
                                },
                                0,
                            )
                        })
                        .collect()
                };
                self.fan_out(cmds, 0, move |r| {
                    if let Err(e) = &r {
                        log::warn!("write at sector {sector} failed: {e}");
                    }
                    done(status_only(if r.is_ok() { S_OK } else { S_IOERR }))
                });
            }
            RequestKind::Flush => {
                if !self.dev.flush {
                    return done(status_only(S_UNSUPP));
                }
                self.fan_out(vec![(Command::Flush, 0)], 0, move |r| {
                    if let Err(e) = &r {
                        log::warn!("flush failed: {e}");
                    }
                    done(status_only(if r.is_ok() { S_OK } else { S_IOERR }))
                });
            }
            RequestKind::GetId { segs } => {
                let room: u64 = segs.iter().map(|s| u64::from(s.len)).sum();
                let mut id = self.dev.serial.clone();
                id.resize(20, 0); // NUL-padded, no terminator when 20 bytes long
                id.truncate(room.min(20) as usize);
                done(Completion {
                    head,
                    len: u32::try_from(id.len()).unwrap_or(20) + 1, // at most 20 bytes
                    status: Some(S_OK),
                    status_addr: st,
                    data: id,
                    data_segs: segs,
                })
            }
            RequestKind::Discard { ranges } => {
                if self.dev.read_only {
                    return done(status_only(S_IOERR));
                }
                if !self.dev.discard || ranges.iter().any(|r| r.flags != 0) {
                    return done(status_only(S_UNSUPP));
                }
                let mut cmds = Vec::with_capacity(ranges.len());
                for r in &ranges {
                    let len = u64::from(r.num_sectors) * SECTOR_SIZE;
                    match (self.range(r.sector, len), u32::try_from(len)) {
                        (Some(offset), Ok(len))
                            if r.num_sectors <= self.dev.max_discard_sectors() =>
                        {
                            cmds.push((Command::Trim { offset, len }, 0))
                        }
                        _ => return done(status_only(S_IOERR)),
                    }
                }
                self.fan_out(cmds, 0, move |r| {
                    if let Err(e) = &r {
                        log::warn!("discard failed: {e}");
                    }
                    done(status_only(if r.is_ok() { S_OK } else { S_IOERR }))
                });
            }
            RequestKind::Unsupported(t) => {
                log::debug!("unsupported request type {t}");
                done(status_only(S_UNSUPP))
            }
        }
    }

    /// Submits `cmds` (each with the offset of its READ data in the result) and calls
    /// `finish` once all are answered, with the assembled READ data or the first error.
    fn fan_out(
        &self,
        cmds: Vec<(Command, usize)>,
        data_len: usize,
        finish: impl FnOnce(Result<Vec<u8>, NbdError>) + Send + 'static,
    ) {
        if cmds.is_empty() {
            return finish(Ok(vec![0u8; data_len]));
        }
        let fan = Arc::new(Mutex::new(FanIn {
            remaining: cmds.len(),
            error: None,
            data: vec![0u8; data_len],
            finish: Some(Box::new(finish)),
        }));
        for (cmd, at) in cmds {
            let fan = fan.clone();
            self.nbd.submit(
                cmd,
                Box::new(move |r| {
                    let mut f = fan.lock().unwrap_or_else(|p| p.into_inner());
                    match r {
                        Ok(d) => {
                            if let Some(dst) = f.data.get_mut(at..at + d.len()) {
                                dst.copy_from_slice(&d);
                            }
                        }
                        Err(e) => {
                            f.error.get_or_insert(e);
                        }
                    }
                    f.remaining -= 1;
                    if f.remaining > 0 {
                        return;
                    }
                    let finish = f.finish.take();
                    let result = match f.error.take() {
                        Some(e) => Err(e),
                        None => Ok(std::mem::take(&mut f.data)),
                    };
                    drop(f);
                    if let Some(finish) = finish {
                        finish(result);
                    }
                }),
            );
        }
    }
}
