//! `kv`: a key-value server speaking the Redis protocol on TCP port 6379, over virtio-net,
//! with every acknowledged write made durable in a log on virtio-blk (README.md).
//!
//! Options: `guest.ip=A.B.C.D/NN` (required), `guest.gw=A.B.C.D`, `guest.hz=` (100),
//! `guest.seed=` (TCP randomness; a constant by default), `guest.disk=none` (run without a
//! disk: nothing is durable; for network-only tests), `guest.touch=MIB` and `guest.dirty=MIB`
//! (memory in use: modes::ballast). Devices: `virtio_mmio.device=` words.
//!
//! Determinism: everything here depends only on the guest's inputs: device data, interrupt
//! counts and the PIT tick count (the clock). No rdtsc/rdrand/cpuid.

use super::ballast::Ballast;
use crate::arch::syscall::idle;
use crate::clock::Clock;
use crate::cmdline::Cmdline;
use crate::net::server::Server;
use crate::serial::write_bytes;
use crate::virtio::blk::VirtioBlk;
use crate::virtio::mmio::{Transport, DEVICE_BLK, DEVICE_NET};
use crate::virtio::net::VirtioNet;
use crate::{exit, heap, pic, pit};
use core::fmt;
use guestlib::devcfg::{mmio_devices, parse_ipv4, parse_ipv4_cidr};
use guestlib::kv::commands::Engine;
use guestlib::kv::log::{Disk, DiskError, Log, OpenError};
use guestlib::kv::store::Store;
use smoltcp::time::Instant;

/// Default smoltcp random seed (any constant: determinism matters, not unpredictability).
const DEFAULT_SEED: u64 = 0x6b76_2d67_7565_7374;
/// Less heap than this cannot hold the socket buffers.
const MIN_HEAP: u64 = 8 << 20;

/// Prints `guest: kv error: ...` and fails with code 1.
fn fatal(args: fmt::Arguments) -> ! {
    println!("guest: kv error: {args}");
    exit::fail(exit::Failure::Setup)
}

pub fn run(cmdline: Cmdline) -> ! {
    let hz = super::param(cmdline, "guest.hz", 100, 19..=10_000);
    let seed = super::param(cmdline, "guest.seed", DEFAULT_SEED, 0..=u64::MAX);
    let Some(ip) = cmdline.get("guest.ip").and_then(parse_ipv4_cidr) else {
        fatal(format_args!(
            "guest.ip=A.B.C.D/NN is required (address and prefix length)"
        ))
    };
    let gw = cmdline
        .get("guest.gw")
        .map(|g| parse_ipv4(g).unwrap_or_else(|| fatal(format_args!("bad guest.gw"))));
    let want_disk = match cmdline.get("guest.disk") {
        None => true,
        Some(b"none") => false,
        Some(_) => fatal(format_args!("guest.disk= accepts only \"none\"")),
    };
    let heap_size = heap::size();
    if heap_size < MIN_HEAP {
        fatal(format_args!("only {heap_size} bytes of RAM for the heap"));
    }

    // Interrupts: the PIT (the clock) and every device line.
    let devices = mmio_devices(cmdline.raw());
    let mut lines = pic::irq_bit(0);
    for dev in devices.iter().flatten() {
        if dev.irq < 16 {
            lines |= pic::irq_bit(dev.irq as u8);
        }
    }
    pic::init(lines);
    pit::start_periodic(pit::divisor(hz as u32).expect("guest.hz range checked"));
    let clock = Clock::new(hz);

    let (mut net, mut blk) = (None, None);
    for dev in &devices {
        let dev = match dev {
            Ok(d) => d,
            Err(word) => {
                print!("guest: kv error: malformed ");
                write_bytes(word);
                fatal(format_args!("(expected virtio_mmio.device=SIZE@ADDR:IRQ)"))
            }
        };
        let t = Transport::probe(dev)
            .unwrap_or_else(|e| fatal(format_args!("virtio-mmio device at {:#x}: {e}", dev.addr)));
        match t.device_id {
            DEVICE_NET if net.is_none() => net = Some(t),
            DEVICE_BLK if blk.is_none() => blk = Some(t),
            0 => {}
            id => println!(
                "guest: kv: ignoring virtio device type {id} at {:#x}",
                dev.addr
            ),
        }
    }
    let Some(t) = net else {
        fatal(format_args!(
            "no virtio-net device (virtio_mmio.device=...)"
        ))
    };
    let (addr, irq) = (t.base(), t.irq);
    let mut net =
        VirtioNet::new(t).unwrap_or_else(|e| fatal(format_args!("virtio-net at {addr:#x}: {e}")));
    let mac = Mac(net.mac);
    println!(
        "guest: kv: virtio-net at {addr:#x} irq {irq} mac={mac} link={} queues={}/{}",
        if net.link_up { "up" } else { "down" },
        net.rx.size(),
        net.tx.size()
    );

    let mut disk: DiskDev = match (blk, want_disk) {
        (_, false) => {
            println!("guest: kv: guest.disk=none: writes are NOT durable");
            DiskDev::None(NullDisk)
        }
        (None, true) => fatal(format_args!(
            "no virtio-blk device (virtio_mmio.device=...; or guest.disk=none)"
        )),
        (Some(t), true) => {
            let (addr, irq) = (t.base(), t.irq);
            let b = VirtioBlk::new(t, clock)
                .unwrap_or_else(|e| fatal(format_args!("virtio-blk at {addr:#x}: {e}")));
            println!(
                "guest: kv: virtio-blk at {addr:#x} irq {irq} sectors={} flush={} ro={} blk_size={} seg_max={}",
                b.capacity,
                yes_no(b.has_flush),
                yes_no(b.read_only),
                Opt(b.blk_size),
                Opt(b.seg_max)
            );
            if !b.has_flush {
                println!("guest: kv: the disk offers no VIRTIO_BLK_F_FLUSH: treating it as write-through");
            }
            DiskDev::Blk(b)
        }
    };
    let read_only = matches!(&disk, DiskDev::Blk(b) if b.read_only);
    let mut store = Store::new();
    let (log, opened) =
        Log::open(disk.as_disk(), read_only, |r| store.apply(r)).unwrap_or_else(|e| match e {
            OpenError::Io(e) => disk_error(e),
            OpenError::TooSmall(n) => fatal(format_args!("disk too small ({n} sectors)")),
            OpenError::UnsupportedVersion(v) => fatal(format_args!(
                "the disk holds a kv log of unsupported version {v}"
            )),
            OpenError::CorruptSuperblock => {
                fatal(format_args!("the disk's kv log superblock is corrupt"))
            }
        });
    if opened.formatted {
        println!("guest: kv: no log on the disk: formatted");
    } else {
        println!(
            "guest: kv: log recovered records={} bytes={} epoch={}",
            log.records(),
            log.used_bytes(),
            log.epoch()
        );
    }
    let mut engine = Engine::new(store, log);
    engine.allow_rdtsc = cmdline.get("guest.rdtsc") == Some(&b"1"[..]);

    let touch = super::param(cmdline, "guest.touch", 0, 0..=1 << 20);
    let dirty = super::param(cmdline, "guest.dirty", 0, 0..=1 << 20);
    let mut ballast = match Ballast::new(touch, dirty, hz, clock.ticks()) {
        Ok(b) => b,
        Err(mib) => fatal(format_args!(
            "{mib} MiB for guest.touch/guest.dirty do not fit in the heap ({} MiB)",
            heap::size() >> 20
        )),
    };
    if let Some(b) = &ballast {
        println!(
            "guest: kv: {} MiB of memory in use, {dirty} MiB/s rewritten",
            b.mib()
        );
    }

    let now = || Instant::from_millis(clock.millis() as i64);
    let mut server = Server::new(&mut net, ip, gw, seed, now());
    let ([a, b, c, d], prefix) = ip;
    println!(
        "guest: kv ready ip={a}.{b}.{c}.{d}/{prefix} mac={mac} disk_sectors={} records={} keys={}",
        disk.as_disk().sectors(),
        engine.log.records(),
        engine.store.len()
    );

    loop {
        let tick = clock.ticks();
        if let Some(b) = &mut ballast {
            b.tick(tick, hz);
        }
        let t = now();
        // Acknowledge before looking at the rings: a later completion interrupts again.
        net.transport.ack_interrupt();
        let mut progress = server.ingress(t, &mut net);
        let info = server.info(tick / hz);
        progress |= server.execute(&mut engine, &info);
        // Group commit: the writes of every client in this iteration, one write + one flush,
        // before any of their replies leaves.
        if engine.log.has_pending() {
            engine
                .log
                .commit(disk.as_disk())
                .unwrap_or_else(|e| disk_error(e));
        }
        progress |= server.respond();
        progress |= server.egress(t, &mut net);
        net.flush();
        // Halt only if there is nothing to do. Interrupts are delivered only at exits (the
        // notifications above, for instance), so everything that came in is visible here:
        // a frame in the used ring, a device interrupt or a timer tick not yet looked at.
        // Between this check and the `hlt` there is no exit, hence no lost wake-up.
        if !progress && !net.rx_pending() && !net.transport.irq_pending() && clock.ticks() == tick {
            idle();
        }
    }
}

fn disk_error(e: DiskError) -> ! {
    fatal(format_args!(
        "disk I/O error: {} at sector {} failed (status {})",
        e.op, e.sector, e.status
    ))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// An optional configuration value: the number or `-`.
struct Opt(Option<u32>);

impl fmt::Display for Opt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("-"),
        }
    }
}

struct Mac([u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

enum DiskDev {
    Blk(VirtioBlk),
    None(NullDisk),
}

impl DiskDev {
    fn as_disk(&mut self) -> &mut dyn Disk {
        match self {
            DiskDev::Blk(b) => b,
            DiskDev::None(n) => n,
        }
    }
}

/// `guest.disk=none`: an empty 1 GiB disk that forgets every write.
struct NullDisk;

impl Disk for NullDisk {
    fn sectors(&self) -> u64 {
        2 << 20
    }
    fn read(&mut self, _sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        buf.fill(0);
        Ok(())
    }
    fn write(&mut self, _sector: u64, _buf: &[u8]) -> Result<(), DiskError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        Ok(())
    }
}
