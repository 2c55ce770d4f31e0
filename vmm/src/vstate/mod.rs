//! KVM state: the VM (memory slots) and the single vCPU with its run loop.
mod control;
pub mod events;
mod replay;
mod takeover;
mod transfer;
pub mod vcpu;
pub mod vm;
