//! The key-value server of the `kv` mode, minus the hardware: the Redis protocol (`resp`),
//! the commands (`commands`), the in-memory store (`store`) and its durable append-only log
//! (`log`, in the format of `format`, checksummed with `crc32`). The guest binary drives it from `src/modes/kv.rs`.

pub mod commands;
pub mod crc32;
pub mod format;
pub mod log;
pub mod resp;
pub mod store;
