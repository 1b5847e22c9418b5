//! Job ids that sort in push order.
//!
//! apalis-sqlite hands out a queue's waiting jobs by `run_at` (in seconds), then `id`, so on
//! SQLite the FIFO of a queue (SPEC §8.1) rests on the ids. apalis' default ids are random ULIDs:
//! time-ordered to the millisecond, in random order within it, so a batch pushed in one
//! millisecond ran in random order. On Redis our push appends to a list, which keeps push order
//! by itself; the ids still sort in that order, which is how retention finds the newest jobs.
//!
//! One process-wide monotonic generator: every id is greater than the one before it, even within
//! a millisecond or when the clock steps back.

use std::sync::{Mutex, PoisonError};

use ulid::{Generator, Ulid};

static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());

/// The next job id of this process, greater than every id it handed out before.
pub(super) fn next() -> Ulid {
    let mut generator = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    // 2^80 ids in one millisecond overflow into the next millisecond, still increasing.
    generator
        .generate()
        .unwrap_or_else(|overflow| overflow.commit_overflow_increment())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_drawn_in_one_burst_increase_strictly() {
        let ids: Vec<_> = (0..10_000).map(|_| super::next()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        // The text form apalis stores and sorts by keeps the order.
        let text: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert!(text.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
