//! KVM state: the VM (memory slots) and the single vCPU with its run loop.
pub mod vcpu;
pub mod vm;
