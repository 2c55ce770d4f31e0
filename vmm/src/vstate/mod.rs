//! KVM state: the VM (memory slots) and the single vCPU with its run loop. The vCPU thread
//! hands every non-deterministic input to the replication engine (ft::engine) and knows
//! nothing of records or roles.
mod control;
mod events;
pub mod machine;
mod snapshot;
pub mod vcpu;
pub mod vm;
