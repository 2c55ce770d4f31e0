//! KVM state: the VM (memory slots) and the single vCPU with its run loop.
mod control;
pub mod vcpu;
pub mod vm;
