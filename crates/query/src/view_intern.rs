//! Dense ids for string (and binary) views, probing the table a few rows ahead.
//!
//! A group-by on a column of hundreds of thousands of distinct strings (the user names of a
//! 10M-event archive: 285,000 names of about 28 bytes) is bound by memory latency: the table of
//! all values is megabytes, so a row's probe misses the cache on the table slot and on the
//! stored bytes it compares against. DataFusion's `ArrowBytesViewMap` probes row after row, and
//! the processor overlaps little of one row's misses with the next row's work.
//!
//! [`ViewInterner`] hashes a batch first and then, while it probes row `i`, asks the processor
//! to fetch the slot that row `i + LOOKAHEAD` will probe ([`prefetch`]), so that most probes
//! find their slot in cache. It is an open-addressing table of 32-byte slots (hash, the value's
//! view, id) with linear probing, at most half full, holding values longer than 12 bytes in one
//! byte buffer of its own. On the 4.3M user names of one partition of the benchmark's
//! `many_countries` query it interns in 189–227 ms where `ArrowBytesViewMap` takes 293–416 ms;
//! a radix-partitioned variant (tables small enough for the cache, rows sorted by partition a
//! chunk at a time) measured no faster than `ArrowBytesViewMap` (docs/SQL.md).

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryViewArray, StringViewArray};
use datafusion::arrow::buffer::{Buffer, NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err, internal_err};

/// Values up to this many bytes sit inside their 16-byte view. Arrow zero-pads the unused bytes,
/// so two inline views are equal exactly when their values are.
const INLINE: u32 = 12;

/// How many rows ahead the slot to probe is prefetched: between the distances that measured
/// best on the benchmark's user names (4 rows ahead took 195–258 ms, 8 and 16 rows 189–227 ms,
/// 32 rows 202–272 ms).
const LOOKAHEAD: usize = 12;

/// Marks an empty slot.
const EMPTY: u32 = u32::MAX;

/// A distinct value as the table holds it. 32 bytes, aligned so that a slot never straddles
/// two cache lines (the prefetch fetches one).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    hash: u64,
    /// The value's view as four words (no 16-byte alignment needed): length, then the inline
    /// bytes, or the 4-byte prefix, 0 and the offset into [`ViewInterner::bytes`].
    view: [u32; 4],
    id: u32,
}

const EMPTY_SLOT: Slot = Slot {
    hash: 0,
    view: [0; 4],
    id: EMPTY,
};

/// Interns the values of Utf8View or BinaryView arrays to dense ids `0, 1, 2, …` in order of
/// first appearance.
pub(crate) struct ViewInterner {
    data_type: DataType,
    slots: Vec<Slot>,
    /// The view of each id, in id order; non-inline ones point into [`Self::bytes`] (buffer 0).
    views: Vec<u128>,
    /// Bytes of the values longer than [`INLINE`].
    bytes: Vec<u8>,
    /// The id of the null value, once a null was seen.
    null: Option<usize>,
    /// Seeded at random per interner: the values (user names) can be chosen by whoever sends
    /// the events, and with a known seed they could be picked to collide and make probes long.
    state: foldhash::fast::RandomState,
    /// Hashes of the batch being interned, kept to reuse the allocation.
    hashes: Vec<u64>,
}

fn words(view: u128) -> [u32; 4] {
    [
        view as u32,
        (view >> 32) as u32,
        (view >> 64) as u32,
        (view >> 96) as u32,
    ]
}

fn join(words: [u32; 4]) -> u128 {
    u128::from(words[0])
        | (u128::from(words[1]) << 32)
        | (u128::from(words[2]) << 64)
        | (u128::from(words[3]) << 96)
}

/// Asks the processor to bring `slot` into the cache; no effect on the program's meaning.
#[inline(always)]
fn prefetch(slot: &Slot) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is a hint: it reads no memory the program can observe, cannot fault
    // (it is given a reference, so the address is valid anyway), and SSE, the only target feature
    // it needs, is part of the x86_64 baseline.
    #[allow(unsafe_code)]
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(slot).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// The bytes of a value longer than [`INLINE`], given its view and its array's buffers.
fn out_of_line(view: u128, buffers: &[Buffer]) -> Result<&[u8]> {
    let len = view as u32 as usize;
    let index = (view >> 64) as u32 as usize;
    let offset = (view >> 96) as u32 as usize;
    match buffers.get(index).and_then(|b| b.get(offset..offset + len)) {
        Some(bytes) => Ok(bytes),
        None => {
            internal_err!("view of {len} bytes at buffer {index}, offset {offset}: out of range")
        }
    }
}

/// A byte-view array's views, data buffers and nulls, whatever its value type.
fn parts(array: &ArrayRef) -> Result<(&[u128], &[Buffer], Option<&NullBuffer>)> {
    Ok(match array.data_type() {
        DataType::Utf8View => {
            let a = array.as_string_view();
            (a.views().as_ref(), a.data_buffers(), a.nulls())
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            (a.views().as_ref(), a.data_buffers(), a.nulls())
        }
        other => return exec_err!("view interner: expected a view array, got {other}"),
    })
}

impl ViewInterner {
    /// An interner for `data_type`, Utf8View or BinaryView.
    pub(crate) fn new(data_type: &DataType) -> Result<Self> {
        if !matches!(data_type, DataType::Utf8View | DataType::BinaryView) {
            return exec_err!("view interner: no support for {data_type}");
        }
        Ok(Self {
            data_type: data_type.clone(),
            slots: vec![EMPTY_SLOT; 1024],
            views: Vec::new(),
            bytes: Vec::new(),
            null: None,
            state: foldhash::fast::RandomState::default(),
            hashes: Vec::new(),
        })
    }

    /// Ids handed out so far (the null's included): every id is below it.
    pub(crate) fn len(&self) -> usize {
        self.views.len()
    }

    /// The id the null value got, if a null was interned.
    pub(crate) fn null_id(&self) -> Option<usize> {
        self.null
    }

    /// Interns every row of `array` (of the interner's type), writing the rows' ids to `ids`.
    pub(crate) fn intern(&mut self, array: &ArrayRef, ids: &mut Vec<usize>) -> Result<()> {
        if array.data_type() != &self.data_type {
            return exec_err!(
                "view interner: expected {}, got {}",
                self.data_type,
                array.data_type()
            );
        }
        let (views, buffers, nulls) = parts(array)?;
        let rows = views.len();
        self.hashes.clear();
        for (row, &view) in views.iter().enumerate() {
            // A null row's view may be anything: it is not read.
            let hash = if nulls.is_some_and(|n| n.is_null(row)) {
                0
            } else if (view as u32) <= INLINE {
                self.state.hash_one(view)
            } else {
                self.state.hash_one(out_of_line(view, buffers)?)
            };
            self.hashes.push(hash);
        }
        let mut mask = self.slots.len() - 1;
        for &hash in self.hashes.iter().take(LOOKAHEAD) {
            prefetch(&self.slots[hash as usize & mask]);
        }
        ids.clear();
        ids.reserve(rows);
        for (row, &view) in views.iter().enumerate() {
            if let Some(&ahead) = self.hashes.get(row + LOOKAHEAD) {
                prefetch(&self.slots[ahead as usize & mask]);
            }
            if nulls.is_some_and(|n| n.is_null(row)) {
                ids.push(self.null_id_or_new()?);
                continue;
            }
            // At most half full, so probe sequences stay short and an empty slot always ends
            // them. Growing here (not for the batch's row count up front) keeps the table sized
            // by distinct values: a merge interns many repeated values at once. The prefetches
            // already issued then point at the old table, which costs only their benefit.
            if (self.views.len() + 1) * 2 > self.slots.len() {
                self.grow(self.slots.len() * 2);
                mask = self.slots.len() - 1;
            }
            let hash = self.hashes[row];
            ids.push(self.probe(view, hash, buffers, mask)?);
        }
        Ok(())
    }

    /// The id of the value with `view` (over `buffers`) and `hash`, added if new.
    #[inline(always)]
    fn probe(&mut self, view: u128, hash: u64, buffers: &[Buffer], mask: usize) -> Result<usize> {
        let len = view as u32;
        let words = words(view);
        let value: &[u8] = if len <= INLINE {
            &[]
        } else {
            out_of_line(view, buffers)?
        };
        let mut at = hash as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot.id == EMPTY {
                break;
            }
            if slot.hash == hash && slot.view[0] == len && slot.view[1] == words[1] {
                let equal = if len <= INLINE {
                    slot.view == words
                } else {
                    let offset = slot.view[3] as usize;
                    self.bytes.get(offset..offset + len as usize) == Some(value)
                };
                if equal {
                    return Ok(slot.id as usize);
                }
            }
            at = (at + 1) & mask;
        }
        let id = self.next_id()?;
        let mut stored = words;
        if len > INLINE {
            let Ok(offset) = u32::try_from(self.bytes.len()) else {
                return exec_err!("view interner: more than 4 GiB of distinct values");
            };
            if u32::try_from(self.bytes.len() + value.len()).is_err() {
                return exec_err!("view interner: more than 4 GiB of distinct values");
            }
            self.bytes.extend_from_slice(value);
            stored[2] = 0;
            stored[3] = offset;
        }
        self.views.push(join(stored));
        self.slots[at] = Slot {
            hash,
            view: stored,
            id: id as u32,
        };
        Ok(id)
    }

    /// The next id, refused past `u32` (the slot's width; `EMPTY` is reserved).
    fn next_id(&self) -> Result<usize> {
        let id = self.views.len();
        if id >= EMPTY as usize {
            return exec_err!("view interner: more than {} distinct values", EMPTY - 1);
        }
        Ok(id)
    }

    /// The null's id, given it now if it has none.
    fn null_id_or_new(&mut self) -> Result<usize> {
        if let Some(id) = self.null {
            return Ok(id);
        }
        let id = self.next_id()?;
        self.views.push(0);
        self.null = Some(id);
        Ok(id)
    }

    /// Rebuilds the table with `capacity` slots (a power of two).
    fn grow(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY_SLOT; capacity]);
        let mask = capacity - 1;
        for slot in old.into_iter().filter(|s| s.id != EMPTY) {
            let mut at = slot.hash as usize & mask;
            while self.slots[at].id != EMPTY {
                at = (at + 1) & mask;
            }
            self.slots[at] = slot;
        }
    }

    /// The distinct values in id order, as an array of the interner's type; the interner is
    /// empty afterwards.
    pub(crate) fn take_values(&mut self) -> Result<ArrayRef> {
        let views = ScalarBuffer::from(std::mem::take(&mut self.views));
        let buffers = vec![Buffer::from_vec(std::mem::take(&mut self.bytes))];
        self.slots = vec![EMPTY_SLOT; 1024];
        let nulls = self.null.take().map(|id| {
            let mut valid = vec![true; views.len()];
            valid[id] = false;
            NullBuffer::from(valid)
        });
        // The values came from arrays of the interner's type, so strings are UTF-8;
        // `try_new` checks that and the views.
        Ok(match self.data_type {
            DataType::Utf8View => Arc::new(StringViewArray::try_new(views, buffers, nulls)?),
            _ => Arc::new(BinaryViewArray::try_new(views, buffers, nulls)?),
        })
    }

    /// Bytes held: table, stored values, views and scratch space.
    pub(crate) fn size(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>()
            + self.bytes.capacity()
            + self.views.capacity() * size_of::<u128>()
            + self.hashes.capacity() * size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringViewArray::from(values.to_vec()))
    }

    #[test]
    fn equal_values_get_equal_ids_across_batches_and_lengths() {
        let mut interner = ViewInterner::new(&DataType::Utf8View).unwrap();
        let long = "a.user.with.a.long.name@example.com";
        let mut ids = Vec::new();
        interner
            .intern(
                &strings(&[Some("short"), Some(long), None, Some("short"), Some("")]),
                &mut ids,
            )
            .unwrap();
        assert_eq!(ids, [0, 1, 2, 0, 3]);
        // Same values in another array (other buffers, other offsets) and a near miss of the
        // long one that shares its prefix and length.
        let near = "a.user.with.a.long.name@example.org";
        interner
            .intern(
                &strings(&[Some(near), None, Some(long), Some("short"), Some(near)]),
                &mut ids,
            )
            .unwrap();
        assert_eq!(ids, [4, 2, 1, 0, 4]);
        let values = interner.take_values().unwrap();
        let values = values.as_string_view();
        let got: Vec<Option<&str>> = values.iter().collect();
        assert_eq!(got, [Some("short"), Some(long), None, Some(""), Some(near)]);
        assert_eq!(interner.len(), 0);
    }

    /// Enough values to grow the table several times, short (inline) and long, with nulls, in
    /// sliced arrays (views and nulls at an offset); every id is checked against a map.
    #[test]
    fn many_values_keep_their_ids_through_growth() {
        let mut interner = ViewInterner::new(&DataType::Utf8View).unwrap();
        let mut expected: std::collections::HashMap<Option<String>, usize> = Default::default();
        let mut ids = Vec::new();
        for round in 0..3 {
            let names: Vec<Option<String>> = (0..20_000)
                .map(|i| match (i * 7919 + round) % 30_000 {
                    k if k % 97 == 0 => None,
                    k if k % 2 == 0 => Some(format!("u{k}")),
                    k => Some(format!("user{k:05}@tenant{}.example.com", i % 3)),
                })
                .collect();
            let array: ArrayRef = Arc::new(StringViewArray::from(names.clone()));
            // Skip the first 100 rows: the slice's views and nulls start at an offset.
            let array = array.slice(100, names.len() - 100);
            interner.intern(&array, &mut ids).unwrap();
            assert_eq!(ids.len(), names.len() - 100);
            for (name, &id) in names[100..].iter().zip(&ids) {
                let next = expected.len();
                assert_eq!(
                    *expected.entry(name.clone()).or_insert(next),
                    id,
                    "{name:?}"
                );
            }
        }
        assert!(expected.contains_key(&None), "the data has nulls");
        let values = interner.take_values().unwrap();
        let values = values.as_string_view();
        assert_eq!(values.len(), expected.len());
        for (name, id) in expected {
            assert_eq!(
                values.is_valid(id).then(|| values.value(id)),
                name.as_deref()
            );
        }
    }

    /// A null row keeps whatever view it had (as `nullif` leaves it): the null gets its own id,
    /// and the value behind the masked view is not interned for it.
    #[test]
    fn a_null_rows_view_is_not_interned() {
        let long = "a value longer than twelve bytes";
        let valid = StringViewArray::from(vec![long, long]);
        let masked = StringViewArray::try_new(
            valid.views().clone(),
            valid.data_buffers().to_vec(),
            Some(NullBuffer::from(vec![false, true])),
        )
        .unwrap();
        let mut interner = ViewInterner::new(&DataType::Utf8View).unwrap();
        let mut ids = Vec::new();
        interner
            .intern(&(Arc::new(masked) as ArrayRef), &mut ids)
            .unwrap();
        assert_eq!(ids, [0, 1]);
        assert_eq!(interner.null_id(), Some(0));
        let values = interner.take_values().unwrap();
        let values = values.as_string_view();
        assert!(values.is_null(0));
        assert_eq!(values.value(1), long);
    }

    #[test]
    fn binary_views_and_wrong_types() {
        let mut interner = ViewInterner::new(&DataType::BinaryView).unwrap();
        let array: ArrayRef = Arc::new(BinaryViewArray::from(vec![
            &b"\xff\x00 binary value of some length"[..],
            b"\x01",
            b"\xff\x00 binary value of some length",
        ]));
        let mut ids = Vec::new();
        interner.intern(&array, &mut ids).unwrap();
        assert_eq!(ids, [0, 1, 0]);
        assert_eq!(interner.take_values().unwrap().len(), 2);
        let err = interner
            .intern(&strings(&[Some("x")]), &mut ids)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected BinaryView, got Utf8View"),
            "{err}"
        );
        assert!(ViewInterner::new(&DataType::Utf8).is_err());
    }
}
