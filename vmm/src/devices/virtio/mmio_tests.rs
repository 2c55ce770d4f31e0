//! Tests of the virtio-mmio register file against a fake device.

use std::sync::{Arc, Mutex};

use super::*;

#[derive(Default)]
struct Seen {
    activated: Option<(u64, Vec<QueueConfig>)>,
    resets: u32,
}

struct FakeDevice {
    seen: Arc<Mutex<Seen>>,
    fail_activate: bool,
}

impl VirtioBackend for FakeDevice {
    fn device_type(&self) -> u32 {
        2
    }
    fn num_queues(&self) -> usize {
        2
    }
    fn queue_max_size(&self) -> u16 {
        256
    }
    fn device_features(&self) -> u64 {
        1 << 9 // VIRTIO_BLK_F_FLUSH
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset.to_le_bytes()[0].wrapping_add(i.to_le_bytes()[0]);
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(
        &mut self,
        driver_features: u64,
        queues: &[QueueConfig],
    ) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::NotConnected);
        }
        self.seen.lock().expect("lock").activated = Some((driver_features, queues.to_vec()));
        Ok(())
    }
    fn reset(&mut self) {
        self.seen.lock().expect("lock").resets += 1;
    }
}

fn transport(fail_activate: bool) -> (MmioTransport, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    (
        MmioTransport::new(Box::new(FakeDevice {
            seen: seen.clone(),
            fail_activate,
        })),
        seen,
    )
}

fn read(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.mmio_read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn write(t: &mut MmioTransport, offset: u64, v: u32) {
    t.mmio_write(offset, &v.to_le_bytes());
}

/// The driver side of virtio 1.2 section 3.1.1, for queue 0 only.
fn initialise(t: &mut MmioTransport, features: u64) {
    write(t, REG_STATUS, 0);
    write(t, REG_STATUS, STATUS_ACKNOWLEDGE);
    write(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    write(t, REG_DRIVER_FEATURES_SEL, 0);
    write(
        t,
        REG_DRIVER_FEATURES,
        u32::try_from(features & 0xffff_ffff).expect("low half"),
    );
    write(t, REG_DRIVER_FEATURES_SEL, 1);
    write(
        t,
        REG_DRIVER_FEATURES,
        u32::try_from(features >> 32).expect("high half"),
    );
    write(
        t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    write(t, REG_QUEUE_SEL, 0);
    write(t, REG_QUEUE_NUM, 128);
    write(t, REG_QUEUE_DESC_LOW, 0x1000);
    write(t, REG_QUEUE_DESC_HIGH, 0x1);
    write(t, REG_QUEUE_DRIVER_LOW, 0x2000);
    write(t, REG_QUEUE_DEVICE_LOW, 0x3000);
    write(t, REG_QUEUE_READY, 1);
}

#[test]
fn identification_registers() {
    let (mut t, _) = transport(false);
    assert_eq!(read(&mut t, REG_MAGIC), 0x7472_6976);
    assert_eq!(read(&mut t, REG_VERSION), 2);
    assert_eq!(read(&mut t, REG_DEVICE_ID), 2);
    write(&mut t, REG_DEVICE_FEATURES_SEL, 0);
    assert_eq!(read(&mut t, REG_DEVICE_FEATURES), 1 << 9);
    write(&mut t, REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(read(&mut t, REG_DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
    write(&mut t, REG_QUEUE_SEL, 1);
    assert_eq!(read(&mut t, REG_QUEUE_NUM_MAX), 256);
    write(&mut t, REG_QUEUE_SEL, 2);
    assert_eq!(read(&mut t, REG_QUEUE_NUM_MAX), 0, "queue 2 does not exist");
}

#[test]
fn driver_ok_activates_with_negotiated_features_and_queues() {
    let (mut t, seen) = transport(false);
    initialise(&mut t, VIRTIO_F_VERSION_1 | (1 << 9));
    assert_eq!(
        read(&mut t, REG_STATUS) & STATUS_FEATURES_OK,
        STATUS_FEATURES_OK
    );
    write(
        &mut t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
    let (features, queues) = seen
        .lock()
        .expect("lock")
        .activated
        .clone()
        .expect("activated");
    assert_eq!(features, VIRTIO_F_VERSION_1 | (1 << 9));
    assert_eq!(
        queues[0],
        QueueConfig {
            size: 128,
            ready: true,
            desc: 0x1_0000_1000,
            driver: 0x2000,
            device: 0x3000
        }
    );
    assert!(!queues[1].ready);
    // Queue registers are frozen once the device is live.
    write(&mut t, REG_QUEUE_NUM, 64);
    assert_eq!(t.state().queues[0].size, 128);
}

#[test]
fn unknown_features_or_legacy_drivers_are_refused() {
    let (mut t, _) = transport(false);
    initialise(&mut t, VIRTIO_F_VERSION_1 | (1 << 5));
    assert_eq!(
        read(&mut t, REG_STATUS) & STATUS_FEATURES_OK,
        0,
        "bit 5 was never offered"
    );
    let (mut t, _) = transport(false);
    initialise(&mut t, 1 << 9);
    assert_eq!(
        read(&mut t, REG_STATUS) & STATUS_FEATURES_OK,
        0,
        "VERSION_1 is mandatory"
    );
}

#[test]
fn failed_activation_sets_needs_reset_and_reset_clears_everything() {
    let (mut t, seen) = transport(true);
    initialise(&mut t, VIRTIO_F_VERSION_1);
    write(
        &mut t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
    assert_ne!(read(&mut t, REG_STATUS) & STATUS_DEVICE_NEEDS_RESET, 0);
    write(&mut t, REG_STATUS, 0);
    assert_eq!(read(&mut t, REG_STATUS), 0);
    assert_eq!(t.state().queues[0], QueueConfig::default());
    assert_eq!(
        seen.lock().expect("lock").resets,
        0,
        "never activated, nothing to reset"
    );
}

#[test]
fn interrupt_status_is_acknowledged_bit_by_bit() {
    let (mut t, _) = transport(false);
    assert!(!t.signal_used(), "driver not live yet");
    assert_eq!(read(&mut t, REG_INTERRUPT_STATUS), INT_USED_RING);
    write(&mut t, REG_INTERRUPT_ACK, INT_CONFIG);
    assert_eq!(read(&mut t, REG_INTERRUPT_STATUS), INT_USED_RING);
    write(&mut t, REG_INTERRUPT_ACK, INT_USED_RING);
    assert_eq!(read(&mut t, REG_INTERRUPT_STATUS), 0);
}

#[test]
fn config_space_goes_to_the_device_and_odd_register_accesses_are_harmless() {
    let (mut t, _) = transport(false);
    let mut b = [0u8; 2];
    t.mmio_read(0x104, &mut b);
    assert_eq!(b, [4, 5]);
    let mut one = [0xaau8; 1];
    t.mmio_read(REG_MAGIC, &mut one);
    assert_eq!(one, [0]);
    t.mmio_write(REG_STATUS, &[1, 2]);
    assert_eq!(read(&mut t, REG_STATUS), 0);
}

#[test]
fn state_round_trips_and_a_restored_transport_reads_the_same() {
    use crate::persist::Persist;
    let (mut t, _) = transport(false);
    initialise(&mut t, VIRTIO_F_VERSION_1);
    write(&mut t, REG_STATUS, 0x0f); // DRIVER_OK
    t.signal_used();
    let state = t.save();
    let json = serde_json::to_vec(&state).expect("serialize");
    let state: MmioState = serde_json::from_slice(&json).expect("parse");
    let (fresh, seen) = transport(false);
    let args = TransportArgs {
        backend: Box::new(FakeDevice {
            seen: seen.clone(),
            fail_activate: false,
        }),
        hold_backend: true,
    };
    drop(fresh);
    let mut copy = MmioTransport::restore(args, &state).expect("restore");
    assert_eq!(copy.save(), state);
    assert!(
        seen.lock().expect("lock").activated.is_none(),
        "restore never starts the device"
    );
    for r in [
        REG_STATUS,
        REG_INTERRUPT_STATUS,
        REG_QUEUE_NUM,
        REG_QUEUE_DESC_HIGH,
    ] {
        assert_eq!(read(&mut copy, r), read(&mut t, r), "register {r:#x}");
    }
}

#[test]
fn a_state_that_does_not_fit_the_device_is_refused() {
    let (mut t, _) = transport(false);
    initialise(&mut t, VIRTIO_F_VERSION_1);
    let before = t.state().clone();
    let mut three = before.clone();
    three.queues.push(QueueConfig::default());
    assert!(matches!(
        t.reload(&three),
        Err(MmioStateError::Queues { got: 3, wanted: 2 })
    ));
    let mut huge = before.clone();
    huge.queues[1].size = 4096;
    assert!(matches!(
        t.reload(&huge),
        Err(MmioStateError::QueueSize { queue: 1, .. })
    ));
    assert_eq!(t.state(), &before, "a refused state changes nothing");
}
