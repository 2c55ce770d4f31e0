//! Go-live: the backup's logging channel died, and it has applied every entry it received.
//! It asks the arbiter; if it wins, it becomes a primary without a backup, right at this
//! landmark, and its recorder goes on with the trace the replayer reached
//! (docs/ARCHITECTURE.md, "Failover").
//!
//! Why this point is safe: the primary lets an output leave only once the backup has
//! acknowledged the log up to it, and the backup acknowledges only what it has queued. So
//! every output the world has seen follows from entries applied here; whatever the primary
//! did after the last entry received never left it. The backup re-executes from here.

use std::sync::Arc;
use std::time::Instant;

use super::engine::{Engine, EngineStop, Machine, Recorder};
use super::failover::{Arbitration, Verdict};
use super::primary::Primary;
use crate::devices::virtio::ft_link::FtLink;
use crate::inbox::Inbox;
use crate::metrics::METRICS;
use crate::sync::lock;

impl Engine {
    /// Backup whose log ended with everything applied: starts asking the arbiter (the
    /// answer wakes the vCPU through its inbox). `None` for the other engines.
    pub fn arbitrate(&self, inbox: &Arc<Inbox>) -> Option<Arbitration> {
        let Engine::Replayer(b) = self else {
            return None;
        };
        let landmark = b.replayer.landmark();
        let (epoch, applied) = (b.epoch, b.replayer.applied);
        let silent_ms = lock(&b.shared().last_heard).elapsed().as_millis();
        log::error!(
            "ft: primary lost ({silent_ms} ms since its last message); all {applied} received entries applied, at landmark {landmark}; asking the arbiter for epoch {epoch}"
        );
        Some(Arbitration::start(
            &b.plan.failover,
            epoch,
            inbox.clone(),
            &b.plan.events,
        ))
    }

    /// The arbiter answered. Won: this backup becomes an unprotected primary. FT control
    /// links in the primary role, the machine's clock, timer and backends started (their
    /// rings resume at the used index, so requests the primary never logged a completion for
    /// are issued again; vhost-net-ft announces the MAC). Lost: the other side is live.
    pub fn go_live(
        &mut self,
        m: &mut impl Machine,
        verdict: Verdict,
        asked_at: Instant,
        inbox: &Arc<Inbox>,
    ) -> Result<(), EngineStop> {
        if let Verdict::Lost { owner, epoch } = verdict {
            METRICS
                .ft_arbiter_decisions
                .with_label_values(&["lost"])
                .inc();
            return Err(EngineStop::LostArbitration { epoch, owner });
        }
        METRICS
            .ft_arbiter_decisions
            .with_label_values(&["won"])
            .inc();
        let asked = asked_at.elapsed();
        let Engine::Replayer(b) = std::mem::take(self) else {
            return Ok(());
        };
        let epoch = b.epoch;
        let failed = |what: String| EngineStop::LostArbitration {
            epoch,
            owner: format!("(nobody: going live failed: {what})"),
        };
        let links =
            FtLink::connect_all(&b.plan.ft_sockets, inbox).map_err(|e| failed(e.to_string()))?;
        let mut primary = Primary::new(
            links,
            b.plan.failover.clone(),
            inbox.clone(),
            b.plan.events.clone(),
            b.plan.dirty.clone(),
        );
        primary.epoch = epoch;
        primary.start_joiner(b.plan.peer);
        let landmark = b.replayer.landmark();
        *self = Engine::Recorder(Box::new(Recorder::new(primary, b.replayer.trace)));
        // The guest's time goes on from the last value it was given, never backwards.
        let start = Instant::now();
        m.go_live(b.replayer.last_clock_ns)
            .map_err(|e| failed(e.to_string()))?;
        log::info!(
            "ft: backends started in {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
        METRICS.ft_failovers.inc();
        log::error!(
            "ft: backup is LIVE at landmark {landmark} (epoch {epoch}; arbiter answered in {:.1} ms)",
            asked.as_secs_f64() * 1e3
        );
        Ok(())
    }
}
