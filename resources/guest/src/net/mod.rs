//! Networking of the kv mode: smoltcp's device interface on virtio-net (`phy`) and the TCP
//! server with its connections (`server`).

pub mod phy;
pub mod server;
