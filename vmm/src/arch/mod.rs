//! Architecture support. Only x86_64 is supported: the VMM relies on port I/O landmarks and
//! the x86 Linux boot protocol.
pub mod x86_64;
