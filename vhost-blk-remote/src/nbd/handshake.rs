//! The fixed newstyle handshake (proto.md, "Newstyle negotiation").
//!
//! The client sends `NBD_OPT_GO` asking for `NBD_INFO_BLOCK_SIZE` (and so promises to honour
//! the block size constraints). If the server answers `NBD_REP_ERR_UNSUP` it falls back to
//! `NBD_OPT_EXPORT_NAME`. Structured replies are not negotiated: every reply in the
//! transmission phase is a simple reply.

use std::io::{Read, Write};

use super::proto::*;
use super::NbdError;

/// The largest option reply payload accepted (guards against a hostile length field).
const MAX_OPTION_REPLY: u32 = 64 * 1024;

/// What the handshake learnt about the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportInfo {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags (`NBD_FLAG_*`).
    pub flags: u16,
    /// Minimum block size: offsets and lengths must be multiples of it.
    pub min_block: u32,
    /// Preferred block size.
    pub preferred_block: u32,
    /// Maximum payload of one READ or WRITE.
    pub max_payload: u32,
}

impl ExportInfo {
    fn from_export(size: u64, flags: u16) -> Self {
        ExportInfo {
            size,
            flags,
            min_block: 1,
            preferred_block: 4096,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }

    pub fn read_only(&self) -> bool {
        self.flags & NBD_FLAG_READ_ONLY != 0
    }
    pub fn can_flush(&self) -> bool {
        self.flags & NBD_FLAG_SEND_FLUSH != 0
    }
    pub fn can_trim(&self) -> bool {
        self.flags & NBD_FLAG_SEND_TRIM != 0
    }
    pub fn can_fua(&self) -> bool {
        self.flags & NBD_FLAG_SEND_FUA != 0
    }
    pub fn rotational(&self) -> bool {
        self.flags & NBD_FLAG_ROTATIONAL != 0
    }
}

fn read_exact<S: Read, const N: usize>(s: &mut S) -> Result<[u8; N], NbdError> {
    let mut b = [0u8; N];
    s.read_exact(&mut b)?;
    Ok(b)
}

fn read_u16<S: Read>(s: &mut S) -> Result<u16, NbdError> {
    Ok(u16::from_be_bytes(read_exact(s)?))
}
fn read_u32<S: Read>(s: &mut S) -> Result<u32, NbdError> {
    Ok(u32::from_be_bytes(read_exact(s)?))
}
fn read_u64<S: Read>(s: &mut S) -> Result<u64, NbdError> {
    Ok(u64::from_be_bytes(read_exact(s)?))
}

fn send_option<S: Write>(s: &mut S, option: u32, data: &[u8]) -> Result<(), NbdError> {
    let len =
        u32::try_from(data.len()).map_err(|_| NbdError::Protocol("option data too long".into()))?;
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(data);
    s.write_all(&b)?;
    Ok(())
}

/// Runs the handshake on a freshly connected stream.
pub fn negotiate<S: Read + Write>(mut s: S, export: &str) -> Result<ExportInfo, NbdError> {
    if export.len() > 4096 {
        return Err(NbdError::Protocol(
            "export name longer than 4096 bytes".into(),
        ));
    }
    let magic = read_u64(&mut s)?;
    if magic != NBDMAGIC {
        return Err(NbdError::Protocol(format!("bad initial magic {magic:#x}")));
    }
    match read_u64(&mut s)? {
        IHAVEOPT => {}
        OLDSTYLE_MAGIC => {
            return Err(NbdError::Protocol(
                "oldstyle negotiation is not supported".into(),
            ))
        }
        m => return Err(NbdError::Protocol(format!("bad handshake magic {m:#x}"))),
    }
    let hflags = read_u16(&mut s)?;
    if hflags & NBD_FLAG_FIXED_NEWSTYLE == 0 {
        return Err(NbdError::NotFixedNewstyle);
    }
    let no_zeroes = hflags & NBD_FLAG_NO_ZEROES != 0;
    let mut cflags = NBD_FLAG_C_FIXED_NEWSTYLE;
    if no_zeroes {
        cflags |= NBD_FLAG_C_NO_ZEROES;
    }
    s.write_all(&cflags.to_be_bytes())?;

    match opt_go(&mut s, export)? {
        Some(info) => Ok(info),
        None => {
            log::info!("server does not support NBD_OPT_GO, using NBD_OPT_EXPORT_NAME");
            opt_export_name(&mut s, export, no_zeroes)
        }
    }
}

/// `NBD_OPT_GO`. `Ok(None)` means the server answered `NBD_REP_ERR_UNSUP`.
fn opt_go<S: Read + Write>(s: &mut S, export: &str) -> Result<Option<ExportInfo>, NbdError> {
    let mut data = Vec::with_capacity(8 + export.len());
    // The NBD protocol limits names to 4096 bytes ("Option types").
    let name_len = u32::try_from(export.len())
        .ok()
        .filter(|&n| n <= 4096)
        .ok_or_else(|| {
            NbdError::Protocol(format!(
                "export name of {} bytes is longer than 4096",
                export.len()
            ))
        })?;
    data.extend_from_slice(&name_len.to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&NBD_INFO_BLOCK_SIZE.to_be_bytes());
    send_option(s, NBD_OPT_GO, &data)?;

    let mut info: Option<ExportInfo> = None;
    let mut block: Option<(u32, u32, u32)> = None;
    loop {
        let magic = read_u64(s)?;
        if magic != REPLY_MAGIC {
            return Err(NbdError::Protocol(format!(
                "bad option reply magic {magic:#x}"
            )));
        }
        let option = read_u32(s)?;
        let rtype = read_u32(s)?;
        let len = read_u32(s)?;
        if option != NBD_OPT_GO {
            return Err(NbdError::Protocol(format!(
                "reply for option {option} while waiting for NBD_OPT_GO"
            )));
        }
        if len > MAX_OPTION_REPLY {
            return Err(NbdError::Protocol(format!("option reply of {len} bytes")));
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload)?;
        match rtype {
            NBD_REP_ACK => break,
            NBD_REP_INFO => parse_info(&payload, &mut info, &mut block)?,
            NBD_REP_ERR_UNSUP => return Ok(None),
            t if t & NBD_REP_FLAG_ERROR != 0 => {
                return Err(NbdError::OptionRejected {
                    option,
                    code: t,
                    message: String::from_utf8_lossy(&payload).into_owned(),
                })
            }
            t => log::debug!("ignoring NBD_OPT_GO reply type {t}"),
        }
    }
    let mut info =
        info.ok_or_else(|| NbdError::Protocol("NBD_OPT_GO acked without NBD_INFO_EXPORT".into()))?;
    if let Some((min, pref, max)) = block {
        info.min_block = min;
        info.preferred_block = pref;
        info.max_payload = max.min(DEFAULT_MAX_PAYLOAD);
    }
    Ok(Some(info))
}

fn parse_info(
    p: &[u8],
    info: &mut Option<ExportInfo>,
    block: &mut Option<(u32, u32, u32)>,
) -> Result<(), NbdError> {
    let be32 = |o: usize| u32::from_be_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]);
    if p.len() < 2 {
        return Err(NbdError::Protocol("NBD_REP_INFO without a type".into()));
    }
    match u16::from_be_bytes([p[0], p[1]]) {
        NBD_INFO_EXPORT => {
            if p.len() != 12 {
                return Err(NbdError::Protocol("bad NBD_INFO_EXPORT length".into()));
            }
            let size = u64::from_be_bytes([p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]]);
            let flags = u16::from_be_bytes([p[10], p[11]]);
            *info = Some(ExportInfo::from_export(size, flags));
        }
        NBD_INFO_BLOCK_SIZE => {
            if p.len() != 14 {
                return Err(NbdError::Protocol("bad NBD_INFO_BLOCK_SIZE length".into()));
            }
            let (min, pref, max) = (be32(2), be32(6), be32(10));
            let sane = min.is_power_of_two()
                && min <= 65536
                && pref.is_power_of_two()
                && pref >= min
                && max >= min
                && (max % min == 0 || max == u32::MAX);
            if !sane {
                return Err(NbdError::Protocol(format!(
                    "nonsensical block sizes min {min} preferred {pref} max {max}"
                )));
            }
            *block = Some((min, pref, max));
        }
        t => log::debug!("ignoring NBD_INFO type {t}"),
    }
    Ok(())
}

/// `NBD_OPT_EXPORT_NAME`: the server answers with size and flags, or closes the connection.
fn opt_export_name<S: Read + Write>(
    s: &mut S,
    export: &str,
    no_zeroes: bool,
) -> Result<ExportInfo, NbdError> {
    send_option(s, NBD_OPT_EXPORT_NAME, export.as_bytes())?;
    let size = read_u64(s).map_err(|e| match e {
        NbdError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => NbdError::Protocol(
            format!("server closed the connection: no export {export:?}"),
        ),
        e => e,
    })?;
    let flags = read_u16(s)?;
    if !no_zeroes {
        let _zeroes: [u8; 124] = read_exact(s)?;
    }
    Ok(ExportInfo::from_export(size, flags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A scripted server that refuses NBD_OPT_GO (NBD_REP_ERR_UNSUP) and then accepts
    /// NBD_OPT_EXPORT_NAME without NO_ZEROES.
    fn old_server(mut s: UnixStream) {
        s.write_all(&NBDMAGIC.to_be_bytes()).unwrap();
        s.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
        s.write_all(&NBD_FLAG_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
        assert_eq!(read_u32(&mut s).unwrap(), NBD_FLAG_C_FIXED_NEWSTYLE);
        for expected in [NBD_OPT_GO, NBD_OPT_EXPORT_NAME] {
            assert_eq!(read_u64(&mut s).unwrap(), IHAVEOPT);
            let opt = read_u32(&mut s).unwrap();
            assert_eq!(opt, expected);
            let len = read_u32(&mut s).unwrap();
            let mut d = vec![0; len as usize];
            s.read_exact(&mut d).unwrap();
            if opt == NBD_OPT_GO {
                let mut r = Vec::new();
                r.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
                r.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
                r.extend_from_slice(&NBD_REP_ERR_UNSUP.to_be_bytes());
                r.extend_from_slice(&0u32.to_be_bytes());
                s.write_all(&r).unwrap();
            } else {
                assert_eq!(d, b"disk");
                s.write_all(&(1u64 << 20).to_be_bytes()).unwrap();
                let f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH;
                s.write_all(&f.to_be_bytes()).unwrap();
                s.write_all(&[0u8; 124]).unwrap();
            }
        }
    }

    #[test]
    fn falls_back_to_export_name() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || old_server(b));
        let info = negotiate(&a, "disk").unwrap();
        t.join().unwrap();
        assert_eq!(info.size, 1 << 20);
        assert!(info.can_flush());
        assert!(!info.read_only());
        assert_eq!(info.min_block, 1);
        assert_eq!(info.max_payload, DEFAULT_MAX_PAYLOAD);
    }

    #[test]
    fn rejects_non_fixed_newstyle() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(&NBDMAGIC.to_be_bytes()).unwrap();
        b.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
        b.write_all(&0u16.to_be_bytes()).unwrap();
        assert!(matches!(negotiate(&a, ""), Err(NbdError::NotFixedNewstyle)));
    }

    #[test]
    fn rejects_garbage_magic() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        assert!(matches!(negotiate(&a, ""), Err(NbdError::Protocol(_))));
    }
}
