//! Which stream sits in which batch row.
//!
//! Streams join and leave at any time. A joining stream takes the lowest free row (its state
//! zeroed); when no row is free the batch grows to the next power of two, and past 1,024 rows
//! to the next multiple of 1,024 (a power of two would waste up to half of a large batch), so
//! the engine sees few distinct shapes. Leaving frees the row; rows of streams that have no audio in a round are
//! run with `advance = false` and keep their state.

use anyhow::Result;

use super::Engine;

/// Opaque stream identifier chosen by the caller.
pub type StreamId = u64;

/// Batch size for `needed` rows: powers of two up to 1,024, then multiples of 1,024.
pub fn grown_capacity(needed: usize) -> usize {
    const STEP: usize = 1024;
    if needed <= STEP {
        needed.next_power_of_two()
    } else {
        needed.div_ceil(STEP) * STEP
    }
}

#[derive(Debug, Default, Clone)]
pub struct SlotTable {
    rows: Vec<Option<StreamId>>,
}

impl SlotTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            rows: vec![None; capacity],
        }
    }

    pub fn capacity(&self) -> usize {
        self.rows.len()
    }

    pub fn len(&self) -> usize {
        self.rows.iter().filter(|r| r.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn row_of(&self, id: StreamId) -> Option<usize> {
        self.rows.iter().position(|r| *r == Some(id))
    }

    /// Places `id` in a free row (growing `engine` if needed) with a zeroed state.
    pub fn join(&mut self, engine: &mut Engine, id: StreamId) -> Result<usize> {
        if let Some(r) = self.row_of(id) {
            return Ok(r);
        }
        if self.rows.len() != engine.capacity() {
            self.rows.resize(engine.capacity(), None);
        }
        let row = match self.rows.iter().position(Option::is_none) {
            Some(r) => r,
            None => {
                let r = self.rows.len();
                let grown = grown_capacity(r + 1);
                engine.resize(grown)?;
                self.rows.resize(grown, None);
                r
            }
        };
        self.rows[row] = Some(id);
        engine.reset_row(row)?;
        Ok(row)
    }

    /// Frees `id`'s row. Returns the row it had.
    pub fn leave(&mut self, id: StreamId) -> Option<usize> {
        let r = self.row_of(id)?;
        self.rows[r] = None;
        Some(r)
    }

    /// `advance` flags for a round in which `ready(row)` says which rows have a hop.
    pub fn advance_mask(&self, mut ready: impl FnMut(usize, StreamId) -> bool) -> Vec<bool> {
        self.rows
            .iter()
            .enumerate()
            .map(|(r, s)| s.is_some_and(|id| ready(r, id)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::grown_capacity;

    #[test]
    fn capacities_are_powers_of_two_then_multiples_of_1024() {
        let caps: Vec<usize> = [1, 2, 3, 5, 17, 1000, 1024, 1025, 5000, 10_000]
            .iter()
            .map(|&n| grown_capacity(n))
            .collect();
        assert_eq!(caps, [1, 2, 4, 8, 32, 1024, 1024, 2048, 5120, 10_240]);
    }
}
