//! Memory in use, for joins of a guest of real size (`kv` mode): `guest.touch=MIB` writes MIB
//! MiB of non-zero, non-repeating data at boot; `guest.dirty=MIB` rewrites that many MiB per
//! second of guest time while the server runs (over the touched memory, or over a buffer of
//! its own of MIB MiB). Everything written is a function of the position and of the PIT tick
//! count, so a backup that replays the guest writes the same bytes.

use alloc::vec::Vec;

/// splitmix64: a different, never-zero-in-practice word for every (index, generation).
fn word(index: u64, generation: u64) -> u64 {
    let mut z = index
        .wrapping_add(generation << 40)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

/// The memory is in pieces of this many MiB: RAM below and above the MMIO window are two
/// heap arenas, so one allocation cannot span both.
const PIECE_MIB: u64 = 64;

pub struct Ballast {
    pieces: Vec<Vec<u64>>,
    /// Words in all pieces.
    len: usize,
    /// Words rewritten per PIT tick.
    per_tick: usize,
    cursor: usize,
    generation: u64,
    last_tick: u64,
    /// Words owed for ticks that went by.
    owed: usize,
}

const WORDS_PER_MIB: usize = (1 << 20) / 8;

impl Ballast {
    /// `None` when both options are 0. `Err` with the MiB that did not fit in the heap.
    pub fn new(touch_mib: u64, dirty_mib: u64, hz: u64, tick: u64) -> Result<Option<Self>, u64> {
        if touch_mib == 0 && dirty_mib == 0 {
            return Ok(None);
        }
        let mib = if touch_mib > 0 { touch_mib } else { dirty_mib };
        let mut pieces = Vec::new();
        let mut left = mib;
        let mut index = 0u64;
        while left > 0 {
            let n = (left.min(PIECE_MIB) as usize) * WORDS_PER_MIB;
            let mut words = Vec::new();
            words.try_reserve_exact(n).map_err(|_| mib)?;
            words.extend((index..index + n as u64).map(|i| word(i, 0)));
            index += n as u64;
            left -= left.min(PIECE_MIB);
            pieces.push(words);
        }
        let len = index as usize;
        Ok(Some(Ballast {
            pieces,
            len,
            per_tick: (dirty_mib as usize * WORDS_PER_MIB) / hz.max(1) as usize,
            cursor: 0,
            generation: 1,
            last_tick: tick,
            owed: 0,
        }))
    }

    pub fn mib(&self) -> usize {
        self.len / WORDS_PER_MIB
    }

    /// Rewrites `per_tick` words for each tick since the last call, at most one tick's worth
    /// per call (so that the server loop, and its exits, go on between bursts) and at most
    /// one second's worth owed (a guest slowed down dirties less).
    pub fn tick(&mut self, now: u64, hz: u64) {
        let ticks = now.saturating_sub(self.last_tick) as usize;
        self.last_tick = now;
        if self.per_tick == 0 || self.len == 0 {
            return;
        }
        self.owed = (self.owed + ticks * self.per_tick).min(hz as usize * self.per_tick);
        let n = self.owed.min(self.per_tick);
        self.owed -= n;
        let piece_words = PIECE_MIB as usize * WORDS_PER_MIB;
        for _ in 0..n {
            let (p, i) = (self.cursor / piece_words, self.cursor % piece_words);
            if let Some(w) = self.pieces.get_mut(p).and_then(|piece| piece.get_mut(i)) {
                *w = word(self.cursor as u64, self.generation);
            }
            self.cursor += 1;
            if self.cursor == self.len {
                self.cursor = 0;
                self.generation += 1;
            }
        }
    }
}
