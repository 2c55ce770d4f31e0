//! Go-live: the backup's logging channel died, and it has applied every entry it received.
//! It asks the arbiter; if it wins, it becomes a primary without a backup, right at this
//! landmark (docs/ARCHITECTURE.md, "Failover").
//!
//! Why this point is safe: the primary lets an output leave only once the backup has
//! acknowledged the log up to it, and the backup acknowledges only what it has queued. So
//! every output the world has seen follows from entries applied here; whatever the primary
//! did after the last entry received never left it. The backup re-executes from here.

use std::time::Instant;

use super::vcpu::{FtRole, Vcpu, VmExit};
use crate::devices::legacy::VmClock;
use crate::devices::virtio::ft_link::FtLink;
use crate::ft::failover::{Arbitration, Verdict};
use crate::ft::primary::Primary;
use crate::inbox::DeviceEvent;
use crate::sync::lock;

impl Vcpu {
    /// Asks the arbiter and, if it grants this side the epoch, goes live. While waiting for
    /// the answer (which may take long if the arbiter is down) the control socket keeps
    /// working. `Err`: the other side won (or going live failed); the VMM stops with it.
    pub(super) fn take_over(&mut self) -> Result<(), VmExit> {
        let FtRole::Backup(b) = &self.ft else {
            return Ok(());
        };
        let landmark = self.stats.landmarks;
        let (epoch, applied) = (b.epoch, b.applied);
        let silent_ms = lock(&b.shared.last_heard).elapsed().as_millis();
        log::error!(
            "ft: primary lost ({silent_ms} ms since its last message); all {applied} received entries applied, at landmark {landmark}; asking the arbiter for epoch {epoch}"
        );
        let arbitration = Arbitration::start(b.plan.failover.clone(), epoch, self.inbox.clone());
        let verdict = loop {
            if let Some(v) = arbitration.verdict() {
                break v;
            }
            self.inbox.wait();
            for event in self.inbox.drain() {
                // Only control requests matter now; a backup's host events carry nothing.
                if let DeviceEvent::Api(call) = event {
                    self.handle_api(call);
                }
            }
        };
        if let Verdict::Lost { owner, epoch } = verdict {
            return Err(VmExit::LostArbitration { epoch, owner });
        }
        let asked = arbitration.started.elapsed();
        self.go_live(epoch)?;
        log::error!(
            "ft: backup is LIVE at landmark {landmark} (epoch {epoch}; arbiter answered in {:.1} ms)",
            asked.as_secs_f64() * 1e3
        );
        Ok(())
    }

    /// Turns this backup into an unprotected primary: FT control links in the primary role,
    /// the backends started (their rings resume at the used index, so requests the primary
    /// never logged a completion for are issued again; vhost-net-ft announces the MAC), the
    /// clock and the PIT timer on real time.
    fn go_live(&mut self, epoch: u64) -> Result<(), VmExit> {
        let failed = |what: String| VmExit::LostArbitration {
            epoch,
            owner: format!("(nobody: going live failed: {what})"),
        };
        let FtRole::Backup(b) = std::mem::replace(&mut self.ft, FtRole::Off) else {
            return Ok(());
        };
        let links = FtLink::connect_all(&b.plan.ft_sockets, &self.inbox)
            .map_err(|e| failed(e.to_string()))?;
        // The guest's time goes on from the last value it was given, never backwards.
        let now = self.devices.clock.now_ns().max(b.last_clock_ns);
        self.devices.clock = VmClock::starting_at(now);
        self.arm_pit_timer(self.devices.pit.channel0_timer());

        let mut primary = Primary::new(
            links,
            b.plan.failover.clone(),
            self.inbox.clone(),
            b.plan.dirty.clone(),
        );
        primary.hash = b.hash;
        primary.last_sig = b.last_sig;
        primary.epoch = epoch;
        primary.start_joiner(b.plan.peer);
        self.ft = FtRole::Primary(Box::new(primary));
        let start = Instant::now();
        for (i, slot) in self.virtio.slots.iter_mut().enumerate() {
            slot.transport
                .hold_backend(false)
                .map_err(|e| failed(format!("virtio device {i}: {e}")))?;
        }
        log::info!(
            "ft: backends started in {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }
}
