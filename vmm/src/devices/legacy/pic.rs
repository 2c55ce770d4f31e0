// Copyright 2026 the project authors.
// SPDX-License-Identifier: Apache-2.0

//! Userspace model of the PC/AT cascaded pair of Intel 8259A programmable interrupt
//! controllers (master at ports 0x20/0x21, slave at 0xA0/0xA1, slave INT wired to master IR2).
//!
//! The VMM runs without an in-kernel irqchip so that interrupt delivery is a deterministic
//! function of the guest's own port I/O and of the logged device events (see the determinism
//! contract in the design brief). Devices call [`Pic::set_irq_level`] / [`Pic::pulse_irq`]; at a
//! landmark where the vCPU can take an interrupt the VMM asks [`Pic::has_pending`] and, if so,
//! runs the INTA cycle with [`Pic::acknowledge`] and injects the vector with `KVM_INTERRUPT`.
//!
//! Section and command names below refer to the Intel 8259A datasheet (order no. 231468):
//! "Initialization Command Words" (ICW1-ICW4), "Operation Command Words" (OCW1-OCW3),
//! "Interrupt Sequence", "End of Interrupt", "Automatic Rotation", "Special Mask Mode",
//! "Poll Command", "Reading the 8259A Status", "Edge and Level Triggered Modes" and "Cascade Mode".

use serde::{Deserialize, Serialize};

use crate::persist::Persist;

/// Master command port (A0 = 0).
pub const MASTER_CMD: u16 = 0x20;
/// Master data port (A0 = 1).
pub const MASTER_DATA: u16 = 0x21;
/// Slave command port (A0 = 0).
pub const SLAVE_CMD: u16 = 0xa0;
/// Slave data port (A0 = 1).
pub const SLAVE_DATA: u16 = 0xa1;
/// The master IR input that the slave's INT output is wired to on the PC/AT.
pub const CASCADE_IRQ: u8 = 2;

/// Where a chip is in the initialization sequence ("Initialization Command Words").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitStep {
    /// Initialized: writes with A0 = 1 are OCW1.
    #[default]
    Ready,
    /// ICW1 seen, next A0 = 1 write is ICW2 (vector base).
    Icw2,
    /// Next A0 = 1 write is ICW3 (cascade configuration).
    Icw3,
    /// Next A0 = 1 write is ICW4 (mode).
    Icw4,
}

/// Complete register state of one 8259A.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicChipState {
    /// Interrupt Request Register.
    pub irr: u8,
    /// In-Service Register.
    pub isr: u8,
    /// Interrupt Mask Register (OCW1).
    pub imr: u8,
    /// Current level of each IR input, kept for the edge-sense latch.
    pub lines: u8,
    /// T7-T3 of ICW2; the vector is `vector_base | ir`.
    pub vector_base: u8,
    /// IR level that currently has the highest priority (lowest-priority level + 1, mod 8).
    pub priority_base: u8,
    /// OCW3 RIS: true when an A0 = 0 read returns the ISR, false for the IRR.
    pub read_isr: bool,
    /// OCW3 P: the next read is a poll (one-shot).
    pub poll: bool,
    /// OCW3 SMM: special mask mode.
    pub special_mask: bool,
    /// Position in the ICW sequence.
    pub init_step: InitStep,
    /// ICW1 IC4.
    pub icw4_needed: bool,
    /// ICW1 SNGL: no slaves / not a slave; ICW3 is skipped.
    pub single: bool,
    /// ICW1 LTIM: level-triggered inputs (for all eight IRs of this chip).
    pub level_triggered: bool,
    /// ICW3: master = bit mask of IRs with a slave, slave = its slave ID.
    pub icw3: u8,
    /// ICW4 uPM: 8086/8088 mode (the only one meaningful on x86).
    pub x86_mode: bool,
    /// ICW4 AEOI.
    pub auto_eoi: bool,
    /// ICW4 SFNM: special fully nested mode.
    pub special_fully_nested: bool,
    /// OCW2 "rotate in automatic EOI mode" (set/clear commands).
    pub rotate_on_auto_eoi: bool,
}

/// Snapshot of both chips.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicState {
    pub master: PicChipState,
    pub slave: PicChipState,
}

impl PicState {
    /// Requests, in service and masked, (master, slave): what status reports show.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "irr": [self.master.irr, self.slave.irr],
            "isr": [self.master.isr, self.slave.isr],
            "imr": [self.master.imr, self.slave.imr],
        })
    }
}

impl PicChipState {
    /// The datasheet leaves the power-on state undefined until ICW1. We start with every input
    /// masked (so nothing is delivered before the guest programs the chip) and the PC/AT
    /// cascade wiring in ICW3.
    fn power_on(icw3: u8) -> Self {
        PicChipState {
            imr: 0xff,
            icw3,
            x86_mode: true,
            ..Default::default()
        }
    }

    /// Priority rank (0 = highest) of the highest-priority bit set in `mask`, honouring the
    /// rotation base ("Automatic Rotation", "Specific Rotation").
    fn rank(&self, mask: u8) -> Option<u8> {
        (0..8u8).find(|p| mask & (1 << ((p + self.priority_base) & 7)) != 0)
    }

    fn ir_of_rank(&self, rank: u8) -> u8 {
        (rank + self.priority_base) & 7
    }

    /// The priority resolver: the IR that would drive INT, i.e. the highest-priority unmasked
    /// request whose priority is above every (counted) in-service level. `ignore_isr` removes
    /// ISR bits from the comparison (special fully nested mode on the master).
    fn resolve(&self, ignore_isr: u8) -> Option<u8> {
        let req_rank = self.rank(self.irr & !self.imr)?;
        let mut in_service = self.isr & !ignore_isr;
        if self.special_mask {
            // "Special Mask Mode": a masked in-service level no longer inhibits lower levels.
            in_service &= !self.imr;
        }
        match self.rank(in_service) {
            Some(cur) if cur <= req_rank => None,
            _ => Some(self.ir_of_rank(req_rank)),
        }
    }

    /// "Edge and Level Triggered Modes". Edge mode latches the IRR on a low-to-high transition
    /// and keeps it until the INTA cycle. (The datasheet also wants the line still high at the
    /// first INTA pulse; we keep the latch so that a pulse between two landmarks is not lost.)
    /// Level mode: the IRR follows the line.
    fn set_line(&mut self, ir: u8, level: bool) {
        let bit = 1u8 << ir;
        if self.level_triggered {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.lines & bit == 0 {
            self.irr |= bit;
        }
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// The INTA pulses for `ir` ("Interrupt Sequence" steps 4-5): set ISR, clear the edge
    /// latch (level-mode IRR keeps following the line), or in AEOI mode end the interrupt
    /// immediately, rotating if "rotate in automatic EOI mode" is set.
    fn ack(&mut self, ir: u8) {
        let bit = 1u8 << ir;
        if !self.level_triggered {
            self.irr &= !bit;
        }
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_base = (ir + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
    }

    /// A0 = 0 write: ICW1 (D4 = 1), OCW3 (D4 = 0, D3 = 1) or OCW2 (D4 = 0, D3 = 0).
    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            self.icw1(value);
        } else if value & 0x08 != 0 {
            self.ocw3(value);
        } else {
            self.ocw2(value);
        }
    }

    /// ICW1. The datasheet lists what the start of initialization does: the edge-sense
    /// circuit is reset (a line that is high must go low and high again), the IMR is
    /// cleared, IR7 gets the lowest priority, special mask mode is cleared and status read
    /// selects the IRR; without IC4 all ICW4 functions are zero. We also clear the ISR and any
    /// pending poll, as a re-initialization abandons the interrupts in service.
    /// ADI and A7-A5 only matter for the MCS-80/85 CALL vectoring and are ignored.
    fn icw1(&mut self, value: u8) {
        let level_triggered = value & 0x08 != 0;
        *self = PicChipState {
            icw4_needed: value & 0x01 != 0,
            single: value & 0x02 != 0,
            level_triggered,
            irr: if level_triggered { self.lines } else { 0 },
            lines: self.lines,
            vector_base: self.vector_base,
            icw3: self.icw3,
            init_step: InitStep::Icw2,
            ..Default::default()
        };
    }

    /// A0 = 1 write: ICW2/ICW3/ICW4 during initialization, OCW1 (the IMR) otherwise.
    fn write_data(&mut self, value: u8) {
        match self.init_step {
            InitStep::Icw2 => {
                // In 8086 mode T7-T3 are the vector base and the IR number fills bits 2-0.
                self.vector_base = value & 0xf8;
                self.init_step = if !self.single {
                    InitStep::Icw3
                } else {
                    self.after_icw3()
                };
            }
            InitStep::Icw3 => {
                self.icw3 = value;
                self.init_step = self.after_icw3();
            }
            InitStep::Icw4 => {
                self.icw4(value);
                self.init_step = InitStep::Ready;
            }
            InitStep::Ready => self.imr = value,
        }
    }

    fn after_icw3(&mut self) -> InitStep {
        if self.icw4_needed {
            InitStep::Icw4
        } else {
            log::warn!("8259A initialized without ICW4 (MCS-80/85 mode); using 8086 vectors");
            InitStep::Ready
        }
    }

    /// ICW4: uPM, AEOI and SFNM are honoured; BUF and M/S only select the SP/EN pin function
    /// (buffered mode) and have no effect on a software model.
    fn icw4(&mut self, value: u8) {
        self.x86_mode = value & 0x01 != 0;
        self.auto_eoi = value & 0x02 != 0;
        self.special_fully_nested = value & 0x10 != 0;
        if !self.x86_mode {
            log::warn!("8259A ICW4 selects MCS-80/85 mode; using 8086 vectors");
        }
    }

    /// OCW2: R, SL, EOI in D7-D5, L2-L0 in D2-D0 ("End of Interrupt", "Automatic Rotation",
    /// "Specific Rotation").
    fn ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value >> 5 {
            // Rotate in automatic EOI mode: clear (000) / set (100).
            0b000 => self.rotate_on_auto_eoi = false,
            0b100 => self.rotate_on_auto_eoi = true,
            // Non-specific EOI (001), rotate on non-specific EOI (101): reset the highest
            // priority ISR bit. In special mask mode an ISR bit masked by the IMR is not reset.
            cmd @ (0b001 | 0b101) => {
                let candidates = if self.special_mask {
                    self.isr & !self.imr
                } else {
                    self.isr
                };
                if let Some(rank) = self.rank(candidates) {
                    let ir = self.ir_of_rank(rank);
                    self.isr &= !(1 << ir);
                    if cmd == 0b101 {
                        self.priority_base = (ir + 1) & 7;
                    }
                }
            }
            // Specific EOI (011), rotate on specific EOI (111).
            0b011 => self.isr &= !(1 << level),
            0b111 => {
                self.isr &= !(1 << level);
                self.priority_base = (level + 1) & 7;
            }
            // Set priority command (110): L2-L0 becomes the lowest priority level.
            0b110 => self.priority_base = (level + 1) & 7,
            // 010: no operation.
            _ => {}
        }
    }

    /// OCW3: ESMM/SMM (D6/D5), P (D2), RR/RIS (D1/D0).
    fn ocw3(&mut self, value: u8) {
        if value & 0x04 != 0 {
            self.poll = true;
        }
        if value & 0x02 != 0 {
            self.read_isr = value & 0x01 != 0;
        }
        if value & 0x40 != 0 {
            self.special_mask = value & 0x20 != 0;
        }
    }
}

/// The cascaded master/slave 8259A pair of a PC/AT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pic {
    master: PicChipState,
    slave: PicChipState,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

/// Both chips' registers are the whole state: nothing on the host side.
impl Persist for Pic {
    type State = PicState;
    type ConstructorArgs = ();
    type Error = std::convert::Infallible;

    fn save(&self) -> PicState {
        PicState {
            master: self.master.clone(),
            slave: self.slave.clone(),
        }
    }

    fn restore((): (), state: &PicState) -> Result<Self, Self::Error> {
        Ok(Pic {
            master: state.master.clone(),
            slave: state.slave.clone(),
        })
    }
}

impl Pic {
    /// Power-on state: both chips uninitialized with all inputs masked.
    pub fn new() -> Self {
        Pic {
            master: PicChipState::power_on(1 << CASCADE_IRQ),
            slave: PicChipState::power_on(CASCADE_IRQ),
        }
    }

    /// Guest read of 0x20, 0x21, 0xA0 or 0xA1; any other port reads as 0xff (floating bus).
    pub fn pio_read(&mut self, port: u16) -> u8 {
        let value = match port {
            MASTER_CMD | MASTER_DATA if self.master.poll => {
                let ignore = self.master_ignored_isr();
                Self::poll(&mut self.master, ignore)
            }
            SLAVE_CMD | SLAVE_DATA if self.slave.poll => Self::poll(&mut self.slave, 0),
            MASTER_CMD => Self::status(&self.master),
            SLAVE_CMD => Self::status(&self.slave),
            MASTER_DATA => self.master.imr,
            SLAVE_DATA => self.slave.imr,
            _ => 0xff,
        };
        self.update_cascade();
        value
    }

    /// Guest write of 0x20, 0x21, 0xA0 or 0xA1; other ports are ignored.
    pub fn pio_write(&mut self, port: u16, value: u8) {
        match port {
            MASTER_CMD => self.master.write_command(value),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_CMD => self.slave.write_command(value),
            SLAVE_DATA => self.slave.write_data(value),
            _ => log::debug!("8259A: write {value:#04x} to unhandled port {port:#x}"),
        }
        self.update_cascade();
    }

    /// Drive ISA interrupt line `irq` (0-15). IRQ 2 is the cascade input and cannot be driven
    /// from outside; it and numbers above 15 are ignored.
    pub fn set_irq_level(&mut self, irq: u8, level: bool) {
        match irq {
            CASCADE_IRQ => log::warn!("8259A: IRQ 2 is the cascade input; ignored"),
            0..=7 => self.master.set_line(irq, level),
            8..=15 => self.slave.set_line(irq - 8, level),
            _ => log::warn!("8259A: no IRQ {irq}; ignored"),
        }
        self.update_cascade();
    }

    /// An edge on `irq`: the line goes high, then low again.
    pub fn pulse_irq(&mut self, irq: u8) {
        self.set_irq_level(irq, true);
        self.set_irq_level(irq, false);
    }

    /// Whether the master's INT output is asserted: an unmasked request with priority above
    /// every in-service level; slave requests count through the master's IR2.
    pub fn has_pending(&self) -> bool {
        self.master.resolve(self.master_ignored_isr()).is_some()
    }

    /// The CPU's INTA cycle, for a CPU that has just seen INT asserted. Returns `None` when INT
    /// is not asserted (the CPU would not run an INTA cycle, so the VMM must inject nothing).
    /// Otherwise returns the vector and moves IRR to ISR on the master and, for IR2 in cascade
    /// mode, on the slave. If the master's IR2 request was latched but the slave no longer
    /// requests anything, the slave answers with its IR7 vector (spurious IRQ 15) and its ISR
    /// is left alone ("Interrupt Sequence": "the 8259A will issue an interrupt level 7").
    pub fn acknowledge(&mut self) -> Option<u8> {
        if self.has_pending() {
            Some(self.inta())
        } else {
            None
        }
    }

    /// A raw INTA cycle as the hardware runs it, whether or not INT is asserted. If no request
    /// is present at that moment (it vanished since INT was sampled) the master answers with
    /// its IR7 vector (spurious IRQ 7) and sets no ISR bit; Linux recognises a spurious IRQ 7
    /// by the clear ISR bit. Prefer [`Pic::acknowledge`]: a VMM samples INT and runs INTA in
    /// the same step, so it should simply inject nothing when nothing is pending.
    pub fn inta(&mut self) -> u8 {
        let Some(ir) = self.master.resolve(self.master_ignored_isr()) else {
            return self.master.vector_base | 7;
        };
        let vector = if ir == CASCADE_IRQ && self.cascade_active() {
            let vector = match self.slave.resolve(0) {
                Some(slave_ir) => {
                    self.slave.ack(slave_ir);
                    self.slave.vector_base | slave_ir
                }
                None => self.slave.vector_base | 7,
            };
            // During the INTA sequence the slave's INT drops; if it still has a request
            // afterwards (e.g. in AEOI mode) the master's IR2 sees a fresh edge.
            self.master.set_line(CASCADE_IRQ, false);
            vector
        } else {
            self.master.vector_base | ir
        };
        self.master.ack(ir);
        self.update_cascade();
        vector
    }

    /// "Cascade Mode": the master expects a slave on IR2 when it is not in single mode and
    /// ICW3 has bit 2 set; otherwise it vectors IR2 itself.
    fn cascade_active(&self) -> bool {
        !self.master.single && self.master.icw3 & (1 << CASCADE_IRQ) != 0
    }

    /// In special fully nested mode the master does not let an in-service IR2 block further
    /// requests from the slave (ICW4 SFNM), so a higher-priority slave IRQ can nest.
    fn master_ignored_isr(&self) -> u8 {
        if self.master.special_fully_nested && self.cascade_active() {
            1 << CASCADE_IRQ
        } else {
            0
        }
    }

    /// The slave's INT output is the level on the master's IR2.
    fn update_cascade(&mut self) {
        let slave_int = self.slave.resolve(0).is_some();
        self.master.set_line(CASCADE_IRQ, slave_int);
    }

    /// "Reading the 8259A Status": A0 = 0 reads the IRR or the ISR as selected by OCW3.
    fn status(chip: &PicChipState) -> u8 {
        if chip.read_isr {
            chip.isr
        } else {
            chip.irr
        }
    }

    /// "Poll Command": the read acts as an interrupt acknowledge and returns
    /// I (bit 7) | W2-W0; the poll is valid for one read only.
    fn poll(chip: &mut PicChipState, ignore_isr: u8) -> u8 {
        chip.poll = false;
        chip.resolve(ignore_isr).map_or(0, |ir| {
            chip.ack(ir);
            0x80 | ir
        })
    }
}

#[cfg(test)]
#[path = "pic_tests.rs"]
mod tests;
