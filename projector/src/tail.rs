//! One read of the log's tail for every view: a shared, single-flight reader.
//!
//! Every runner used to read the tail itself, so six views meant six identical PostgreSQL
//! reads per batch. Rows of a gap-safe read are final (committed, below every running
//! transaction), so any suffix of a read is itself a valid read after the position it starts
//! from: a runner asking for the rows after `P` is served from a recent read that contains
//! `P`, and only reads (one runner at a time; the others wait and reuse it) when none does.
//! A view that lags keeps its own recent read in the cache beside the head's, so it neither
//! evicts the others' nor waits for them beyond one query.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use domain::Position;
use event_store::{EventStore, StoreError, TailRow};

use crate::engine::row_position;

/// How many recent reads are kept: one per view is enough for every view to find its own.
const KEPT: usize = read_model::View::ALL.len();

struct Read {
    /// The read's start: its rows are the log after this position.
    after: Position,
    /// The limit it was read with; a read that came back shorter reached the readable end.
    limit: i64,
    rows: Vec<TailRow>,
    /// Counts reads, so a runner that waited can tell a read made while it waited.
    seq: u64,
}

impl Read {
    /// The rows after `from`, if this read contains `from` (its start or one of its rows).
    fn suffix(&self, from: Position, limit: i64) -> Option<Vec<TailRow>> {
        let start = if from == self.after {
            0
        } else {
            self.rows.iter().position(|r| row_position(r) == from)? + 1
        };
        let take = usize::try_from(limit).unwrap_or(0);
        Some(self.rows[start..].iter().take(take).cloned().collect())
    }
}

#[derive(Default)]
pub struct SharedTail {
    reads: Mutex<Vec<Read>>,
    /// Single flight: one PostgreSQL read at a time.
    reading: tokio::sync::Mutex<()>,
    seq: AtomicU64,
}

impl SharedTail {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many reads of PostgreSQL it has made.
    pub fn reads(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// What a recent read holds after `from`. Any non-empty suffix will do, however old the
    /// read (its rows are final). With `fresh_since`, a read made after that sequence number
    /// (while the caller waited) may also answer "nothing yet", if it reached the readable
    /// end rather than its limit.
    fn cached(&self, from: Position, limit: i64, fresh_since: Option<u64>) -> Option<Vec<TailRow>> {
        let reads = self.reads.lock().ok()?;
        reads.iter().rev().find_map(|r| {
            let rows = r.suffix(from, limit)?;
            if !rows.is_empty() {
                return Some(rows);
            }
            let reached_end = (r.rows.len() as i64) < r.limit;
            match fresh_since {
                Some(seq) if r.seq > seq && reached_end => Some(rows),
                _ => None,
            }
        })
    }

    /// Up to `limit` rows of the log after `from`, as `EventStore::read_committed_after`
    /// returns them, read at most once for all the runners that ask together.
    pub async fn read_after(
        &self,
        store: &EventStore,
        from: Position,
        limit: i64,
    ) -> Result<Vec<TailRow>, StoreError> {
        if let Some(rows) = self.cached(from, limit, None) {
            metrics::counter!("projector_tail_reads_shared_total").increment(1);
            return Ok(rows);
        }
        let seen = self.seq.load(Ordering::Acquire);
        let _reading = self.reading.lock().await;
        if let Some(rows) = self.cached(from, limit, Some(seen)) {
            metrics::counter!("projector_tail_reads_shared_total").increment(1);
            return Ok(rows);
        }
        let rows = store.read_committed_after(from, limit).await?;
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::counter!("projector_tail_reads_total").increment(1);
        if let Ok(mut reads) = self.reads.lock() {
            // A read from the same start supersedes the older one.
            reads.retain(|r| r.after != from);
            if reads.len() >= KEPT {
                reads.remove(0);
            }
            reads.push(Read {
                after: from,
                limit,
                rows: rows.clone(),
                seq,
            });
        }
        Ok(rows)
    }
}
