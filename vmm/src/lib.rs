//! A userspace VMM whose guest-visible non-determinism all enters at *landmarks* (exits to
//! userspace), so that a primary's execution can later be replayed on a backup.
//! See docs/ARCHITECTURE.md for the threads, the exits and the determinism contract.

pub mod api;
pub mod arch;
pub mod config;
pub mod devices;
pub mod event_loop;
pub mod ft;
pub mod inbox;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod persist;
pub mod seccomp;
pub mod stats;
pub mod sync;
pub mod vstate;

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use config::{FtConfig, SerialOutput, VmmConfig};
use devices::legacy::serial::ConsoleOut;
use devices::legacy::LegacyDevices;
use devices::virtio::ft_link::FtLink;
use devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use devices::virtio::slots::VirtioDevices;
use devices::virtio::vhost_user::VhostUserDevice;
use ft::engine::{Engine, Recorder, Trace};
use inbox::Inbox;
use stats::Stats;
use vstate::machine::VcpuMachine;
use vstate::vcpu::{Vcpu, VcpuError, VmExit};
use vstate::vm::{Vm, VmError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Loader(#[from] loader::LoaderError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("cannot set up the boot vCPU: {0}")]
    Regs(#[from] arch::x86_64::regs::RegsError),
    #[error(transparent)]
    EventLoop(#[from] event_loop::EventLoopError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot open the serial output file {path}: {source}")]
    SerialFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the vCPU thread: {0}")]
    SpawnVcpu(std::io::Error),
    #[error(transparent)]
    VhostUser(#[from] devices::virtio::vhost_user::VhostUserError),
    #[error(transparent)]
    Slot(#[from] devices::virtio::slots::SlotError),
    #[error("cannot register a virtio kick ioeventfd: {0}")]
    IoEvent(kvm_ioctls::Error),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error(transparent)]
    Metrics(#[from] metrics_http::MetricsError),
    #[error(transparent)]
    FtLink(#[from] devices::virtio::ft_link::FtLinkError),
    #[error("FT mode needs an FT control socket for every device: add ft=PATH to --{0}")]
    FtSocketMissing(&'static str),
    #[error("cannot listen for the primary on {addr}: {source}")]
    FtListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("FT backup: {0}")]
    FtBackup(String),
    #[error("the vCPU thread panicked")]
    VcpuPanicked,
}

/// Console output to stdout, flushed after every write so that a prompt without a newline
/// appears at once.
struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

type FtLinks = Vec<Option<Arc<FtLink>>>;
type FtSockets = Vec<Option<std::path::PathBuf>>;

/// VIRTIO_NET_F_MAC (virtio 1.2 section 5.1.3): the VMM provides the MAC in config space.
const VIRTIO_NET_F_MAC: u64 = 1 << virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;

/// Connects the vhost-user devices of `config`, registers their kick ioeventfds with KVM and
/// their call eventfds and hang-up monitors with the event loop.
fn virtio_devices(
    config: &VmmConfig,
    mem: &GuestMemoryMmap,
    vm: &Vm,
    inbox: &Arc<Inbox>,
    host_events: &mut event_loop::EventLoop,
) -> Result<(VirtioDevices, FtLinks, FtSockets), Error> {
    use devices::virtio::{TYPE_BLOCK, TYPE_NET};
    let mut wanted = Vec::new();
    if let Some(net) = &config.net {
        let (features, mac) = match net.mac {
            Some(mac) => (VIRTIO_NET_F_MAC, mac.to_vec()),
            None => (0, Vec::new()),
        };
        wanted.push((
            net.socket.clone(),
            TYPE_NET,
            2,
            features,
            mac,
            net.ft.clone(),
            "net",
        ));
    }
    if let Some(block) = &config.block {
        wanted.push((
            block.socket.clone(),
            TYPE_BLOCK,
            1,
            0,
            Vec::new(),
            block.ft.clone(),
            "block",
        ));
    }
    let mut devices = VirtioDevices::new();
    let mut ft_sockets = Vec::new();
    for (socket, device_type, queues, features, own_config, ft, option) in wanted {
        let dev = VhostUserDevice::new(
            socket,
            device_type,
            queues,
            mem.clone(),
            features,
            own_config,
        )?;
        let (base, _) = devices.next_slot()?;
        for (i, kick) in dev.kick.iter().enumerate() {
            vm.register_kick(
                kick,
                base + QUEUE_NOTIFY_OFFSET,
                u32::try_from(i).unwrap_or(u32::MAX),
            )
            .map_err(Error::IoEvent)?;
        }
        let calls = dev
            .call
            .iter()
            .map(|c| c.try_clone())
            .collect::<Result<Vec<_>, _>>();
        let calls = calls.map_err(|e| {
            Error::IoEvent(kvm_ioctls::Error::new(
                e.raw_os_error().unwrap_or(libc::EIO),
            ))
        })?;
        let link = dev.link.clone();
        let mut transport = MmioTransport::new(Box::new(dev));
        if let FtConfig::Backup { .. } = config.ft {
            // Nothing to start yet, so this cannot fail.
            let _ = transport.hold_backend(true);
        }
        let index = devices.add(transport)?;
        host_events.add(Box::new(event_loop::CallWatch::new(
            index,
            calls,
            inbox.clone(),
        )));
        host_events.add(Box::new(event_loop::BackendMonitor::new(
            index,
            link,
            inbox.clone(),
        )?));
        // A primary's backends hand completions and outputs to the VMM (FT control channel);
        // a backup's backends stay idle (and are not told anything) until it goes live.
        let socket = match config.ft {
            FtConfig::Off => None,
            _ => Some(ft.ok_or(Error::FtSocketMissing(option))?),
        };
        ft_sockets.push(socket);
    }
    let ft_links = match config.ft {
        FtConfig::Primary { .. } => FtLink::connect_all(&ft_sockets, inbox)?,
        _ => Vec::new(),
    };
    Ok((devices, ft_links, ft_sockets))
}

/// A VM ready to run: memory loaded, vCPU in its boot state, devices created.
pub struct Vmm {
    // Keeps the memory slots' host mappings alive for as long as the VM exists.
    _guest_memory: GuestMemoryMmap,
    _vm: Vm,
    vcpu: Vcpu,
    /// Taken when the VMM runs (its thread starts then).
    event_loop: Option<event_loop::EventLoop>,
    events: event_loop::Registrar,
    inbox: Arc<Inbox>,
    api_sock: Option<std::path::PathBuf>,
    socket_group: Option<u32>,
    /// `--metrics-listen`, bound at start (a port in use is a startup error).
    metrics: Option<metrics_http::MetricsListener>,
    /// FT backup: where the primary connects, and how to go live later.
    backup: Option<(std::net::TcpListener, ft::backup::TakeoverPlan)>,
}

impl Vmm {
    pub fn new(config: &VmmConfig) -> Result<Self, Error> {
        let metrics = config
            .metrics_listen
            .map(metrics_http::MetricsListener::bind)
            .transpose()?;
        let mem_size = config.mem_mib << 20;
        let guest_memory = memory::create_guest_memory(mem_size)?;
        let vm = Vm::new(&guest_memory)?;
        let inbox = Arc::new(Inbox::new());
        let mut host_events = event_loop::EventLoop::new()?;
        let events = host_events.registrar();
        let (virtio, ft_links, ft_sockets) =
            virtio_devices(config, &guest_memory, &vm, &inbox, &mut host_events)?;
        let mut cmdline = config.cmdline.clone();
        for word in virtio.cmdline_words() {
            cmdline.push(' ');
            cmdline.push_str(&word);
        }
        let loaded = loader::load_guest(
            &guest_memory,
            mem_size,
            &config.kernel,
            config.initrd.as_deref(),
            &cmdline,
        )?;
        let vcpu_fd = vm.create_vcpu(0)?;
        arch::x86_64::regs::setup_boot_vcpu(&vcpu_fd, &guest_memory, loaded.entry)?;

        let console: ConsoleOut = match &config.serial {
            SerialOutput::Stdout => Box::new(Stdout),
            SerialOutput::File(path) => {
                Box::new(File::create(path).map_err(|source| Error::SerialFile {
                    path: path.clone(),
                    source,
                })?)
            }
        };
        let (pit_timer, pit_handle) = event_loop::pit_timer(inbox.clone())?;
        host_events.add(Box::new(pit_timer));
        if config.serial == SerialOutput::Stdout {
            host_events.add(Box::new(event_loop::StdinInput::new(inbox.clone())));
        }
        // Every FT VMM may have to send its state one day (a backup once it is live).
        let dirty = match config.ft {
            FtConfig::Off => None,
            _ => Some(Arc::new(ft::dirty::DirtyLog::new(vm.fd(), &guest_memory))),
        };
        let (ft, backup) = match &config.ft {
            FtConfig::Off => (Engine::default(), None),
            FtConfig::Primary { peer } => {
                let primary = ft::primary::Primary::new(
                    ft_links,
                    config.failover.clone(),
                    inbox.clone(),
                    events.clone(),
                    dirty,
                );
                primary.start_joiner(Some(*peer));
                (
                    Engine::Recorder(Box::new(Recorder::new(primary, Trace::default()))),
                    None,
                )
            }
            FtConfig::Backup { listen, peer } => {
                let listener =
                    std::net::TcpListener::bind(listen).map_err(|source| Error::FtListen {
                        addr: *listen,
                        source,
                    })?;
                let plan = ft::backup::TakeoverPlan {
                    failover: config.failover.clone(),
                    ft_sockets,
                    peer: *peer,
                    dirty,
                    events: events.clone(),
                };
                (Engine::default(), Some((listener, plan)))
            }
        };
        let msr_index = vm.msr_index();
        let devices = LegacyDevices::new(console);
        let machine = VcpuMachine::new(
            vcpu_fd,
            guest_memory.clone(),
            devices,
            virtio,
            pit_handle,
            msr_index,
        );
        let vcpu = Vcpu::new(machine, ft, inbox.clone());
        let api_sock = config.api_sock.clone();
        Ok(Vmm {
            _guest_memory: guest_memory,
            _vm: vm,
            vcpu,
            event_loop: Some(host_events),
            events,
            inbox,
            api_sock,
            socket_group: config.socket_group,
            metrics,
            backup,
        })
    }

    /// Backup: accepts primaries until one has transferred its whole state. A transfer that
    /// ends early (the primary died, the link broke, a peer that is no primary) leaves
    /// nothing behind: the next one starts by zeroing memory, and the vCPU and devices are
    /// loaded only from a complete transfer.
    fn wait_for_primary(
        &mut self,
        listener: &std::net::TcpListener,
        plan: ft::backup::TakeoverPlan,
    ) -> Result<(), Error> {
        log::warn!(
            "ft: backup waiting for the primary on {:?}",
            listener.local_addr().ok()
        );
        loop {
            let (stream, from) = match listener.accept() {
                Ok(c) => c,
                Err(e) => {
                    log::error!("ft: accept: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            };
            let expected = plan.peer.map(|p| p.ip());
            let stream = match plan.failover.security.accept(stream, expected) {
                Ok(s) => s,
                Err(e) => {
                    log::error!(
                        "ft: TLS handshake with {from} failed: {e}; waiting for a primary again"
                    );
                    continue;
                }
            };
            log::warn!("ft: primary {from} connected");
            let closer = stream
                .try_clone()
                .map_err(|e| Error::FtBackup(e.to_string()))?;
            let shared = ft::channel::start_backup(
                stream,
                self.inbox.clone(),
                plan.failover.timeout,
                &self.events,
            )
            .map_err(|e| Error::FtBackup(e.to_string()))?;
            let mut backup = ft::backup::Backup::new(shared, plan.clone());
            match backup.load_state(&mut self.vcpu.machine) {
                Ok(()) => {
                    self.vcpu.engine = Engine::Replayer(Box::new(backup));
                    return Ok(());
                }
                Err(e) => {
                    log::error!(
                        "ft: state transfer from {from} failed: {e}; waiting for a primary again"
                    );
                    let _ = closer.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }

    /// Starts the event loop and runs the vCPU on its own thread until the guest stops.
    pub fn run(mut self) -> Result<(VmExit, Stats), Error> {
        if let Some(host_events) = self.event_loop.take() {
            host_events.spawn()?;
        }
        if let Some(path) = &self.api_sock {
            api::spawn(path, self.socket_group, self.inbox.clone())?;
        }
        if let Some(listener) = self.metrics.take() {
            let filter = || seccomp::enter(seccomp::ThreadKind::Metrics);
            listener.spawn(&metrics::METRICS.registry, filter, || {})?;
        }
        if let Some((listener, plan)) = self.backup.take() {
            self.wait_for_primary(&listener, plan)?;
        }
        let Vmm {
            _guest_memory,
            _vm,
            mut vcpu,
            ..
        } = self;
        let handle = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || {
                seccomp::enter(seccomp::ThreadKind::Vcpu);
                let result = vcpu.run();
                (result, vcpu.machine.stats.clone())
            })
            .map_err(Error::SpawnVcpu)?;
        // Every thread main starts is started: from here it only waits and exits.
        seccomp::enter(seccomp::ThreadKind::Main);
        let (result, stats) = handle.join().map_err(|_| Error::VcpuPanicked)?;
        Ok((result?, stats))
    }
}
