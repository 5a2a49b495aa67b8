//! Body-sized buffers kept from one scrape to the next.
//!
//! musl's malloc serves an allocation this large (etcd's /metrics is 150 to 250 KB) with a
//! fresh `mmap` and gives it back with `munmap` when it is freed, so every scrape paid a page
//! fault per 4 KiB of each buffer it touched, which took more CPU than the scrape's own work.
//! Keeping a few buffers bounds memory (at most [`KEEP`] of them, none above
//! [`MAX_CAPACITY`]) and makes a steady scrape allocate nothing large.

use std::sync::Mutex;

/// Buffers kept: two per scrape (etcd's text and our answer) for a few concurrent scrapes.
pub const KEEP: usize = 6;
/// Larger buffers (an unusually large answer from etcd) are freed, not kept.
pub const MAX_CAPACITY: usize = 4 << 20;
/// Smaller ones (small answers: /healthz, errors) would only be grown again.
pub const MIN_CAPACITY: usize = 16 << 10;

#[derive(Default)]
pub struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Buffers {
    /// An empty buffer, with the capacity of an earlier one when there is one.
    pub fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    /// A buffer back for a later scrape (or freed when enough are kept).
    pub fn give(&self, mut buffer: Vec<u8>) {
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&buffer.capacity()) {
            return;
        }
        buffer.clear();
        let mut free = self.lock();
        if free.len() < KEEP {
            free.push(buffer);
        }
    }

    /// A kept buffer as an empty `String`.
    pub fn take_string(&self) -> String {
        // An empty buffer is valid UTF-8.
        String::from_utf8(self.take()).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // Plain buffers cannot be left inconsistent by a panic elsewhere.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_number_of_cleared_buffers() {
        let buffers = Buffers::default();
        assert_eq!(buffers.take().capacity(), 0);
        for _ in 0..KEEP + 3 {
            buffers.give(b"etcd".repeat(MIN_CAPACITY));
        }
        buffers.give(Vec::with_capacity(MAX_CAPACITY + 1));
        buffers.give(b"ok".to_vec());
        let kept: Vec<_> = (0..KEEP + 1).map(|_| buffers.take()).collect();
        assert!(kept[..KEEP]
            .iter()
            .all(|b| b.is_empty() && b.capacity() >= 4 * MIN_CAPACITY));
        assert_eq!(kept[KEEP].capacity(), 0, "only KEEP buffers are kept");
        assert!(buffers.take_string().is_empty());
    }
}
