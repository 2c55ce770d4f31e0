//! `arbiter`: the test-and-set service that decides which side of an FT pair goes live.
//!
//! Split brain: when primary and backup lose contact, both may think the other has failed.
//! Before going live each asks `test_and_set(vm, epoch, owner)`; exactly one side wins the
//! flag of an epoch, the other halts. A grant is durable before it is sent, so it survives an
//! arbiter crash, and a request for an epoch older than the highest decided one is refused,
//! as is one far ahead of the arbiter's clock (limits.rs).
//! Wire protocol: docs/PROTOCOL.md, "Arbiter (test-and-set)". The same test-and-set on an
//! etcd cluster instead of this process: [`etcd`].

pub mod client;
pub mod conn;
pub mod error;
pub mod etcd;
pub mod limits;
pub mod pool;
pub mod protocol;
pub mod server;
pub mod status;
pub mod store;
mod sys;
pub mod transport;

pub use error::{Error, Result};
pub use protocol::{Decision, Flag, Request};
pub use server::Server;
pub use store::{Open, Store};
