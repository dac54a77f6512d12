//! Rendezvous scores and each shard's preference order over workers.
//!
//! `score = siphash24(k0, k1; len(shard_key) ‖ shard_key ‖ len(worker) ‖ worker)` with
//! lengths as little-endian u64. Higher scores come first; equal scores fall back to
//! the worker id (smaller first), which is the worker index order of the state.

use std::hash::Hasher;

use siphasher::sip::SipHasher24;

use super::problem::Params;
use crate::ids::WorkerId;

/// The rendezvous score of `worker` for `shard_key` (see [`ModelKey::shard_key`]).
///
/// This is the reference definition, computed with the `siphasher` crate; placement
/// itself uses a specialised implementation that tests check against this one.
///
/// [`ModelKey::shard_key`]: crate::ids::ModelKey::shard_key
pub fn score(params: &Params, shard_key: &str, worker: &WorkerId) -> u64 {
    let mut h = SipHasher24::new_with_keys(params.k0, params.k1);
    // `Hasher::write` only: the `Hash` impl of `str` would append a 0xff byte.
    h.write(&(shard_key.len() as u64).to_le_bytes());
    h.write(shard_key.as_bytes());
    h.write(&(worker.as_str().len() as u64).to_le_bytes());
    h.write(worker.as_str().as_bytes());
    h.finish()
}

/// A worker's part of every score, `len(w) ‖ w`, cut into SipHash message words for
/// each number of bytes (0..8) a shard prefix may leave pending, so that scoring a
/// worker is nothing but SipHash rounds.
#[derive(Debug, Clone)]
pub(crate) struct WorkerWords {
    /// `words[pending]`: the words of `pending` zero bytes ‖ suffix; the last one is
    /// the final partial word without SipHash's length byte.
    words: [Box<[u64]>; 8],
    len: u64,
}

impl WorkerWords {
    pub(crate) fn new(worker: &str) -> Self {
        let mut suffix = (worker.len() as u64).to_le_bytes().to_vec();
        suffix.extend_from_slice(worker.as_bytes());
        let words = std::array::from_fn(|pending| {
            let mut bytes = vec![0u8; pending];
            bytes.extend_from_slice(&suffix);
            let chunks = bytes.chunks_exact(8);
            let last = le_word(chunks.remainder());
            chunks.map(le_word).chain([last]).collect()
        });
        Self {
            words,
            len: suffix.len() as u64,
        }
    }
}

/// Up to 8 bytes as a little-endian word.
fn le_word(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// SipHash-2-4 state after a shard's prefix `len(shard_key) ‖ shard_key`: the part
/// of every score that does not depend on the worker.
#[derive(Debug, Clone)]
pub(crate) struct ShardScorer {
    v: [u64; 4],
    /// Pending prefix bytes (little-endian), not yet a full word.
    tail: u64,
    pending: usize,
    len: u64,
}

impl ShardScorer {
    pub(crate) fn new(params: &Params, shard_key: &str) -> Self {
        let (k0, k1) = (params.k0, params.k1);
        let mut v = [
            k0 ^ 0x736f_6d65_7073_6575,
            k1 ^ 0x646f_7261_6e64_6f6d,
            k0 ^ 0x6c79_6765_6e65_7261,
            k1 ^ 0x7465_6462_7974_6573,
        ];
        let mut prefix = (shard_key.len() as u64).to_le_bytes().to_vec();
        prefix.extend_from_slice(shard_key.as_bytes());
        let chunks = prefix.chunks_exact(8);
        let rest = chunks.remainder();
        for chunk in chunks {
            compress(&mut v, le_word(chunk));
        }
        Self {
            v,
            tail: le_word(rest),
            pending: rest.len(),
            len: prefix.len() as u64,
        }
    }

    /// The score of the worker `w` stands for; equal to [`score`].
    pub(crate) fn score(&self, w: &WorkerWords) -> u64 {
        absorb(
            self.v,
            self.tail,
            (self.len + w.len) << 56,
            &w.words[self.pending],
        )
    }
}

#[inline(always)]
fn compress(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    round(v);
    round(v);
    v[0] ^= m;
}

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// A prefix of one shard's preference order over the candidate workers.
#[derive(Debug)]
pub(crate) struct Ranking {
    /// Best first.
    pub(crate) items: Vec<(u64, u32)>,
    /// Whether `items` holds every candidate, not only the best few.
    pub(crate) complete: bool,
}

/// The message words of every worker that may take shards, laid out flat so that
/// ranking a shard is one tight loop of SipHash rounds per group.
#[derive(Debug)]
pub(crate) struct ScoreTable {
    /// `groups[pending]`: the takers' words for a prefix leaving `pending` bytes.
    groups: [Vec<Group>; 8],
    len: usize,
}

/// Workers whose suffix has the same length (hence the same number of words).
#[derive(Debug)]
struct Group {
    suffix_len: u64,
    /// The leading words all workers of the group have in common, absorbed once per
    /// shard instead of once per worker. The first word always is (pending zero bytes
    /// and the start of `len(w)`); ids with a common prefix share more.
    shared: Vec<u64>,
    /// Words per worker after the shared ones (at least one).
    nwords: usize,
    workers: Vec<u32>,
    /// `nwords` words per worker, in `workers` order.
    words: Vec<u64>,
}

impl Group {
    /// Moves the leading words common to all workers into `shared`, keeping the last
    /// word (which carries the length byte) per worker.
    fn share_leading_words(&mut self) {
        let n = self.nwords;
        let mut common = n.saturating_sub(1);
        if let Some(first) = self.words.get(..n) {
            for ws in self.words.chunks_exact(n) {
                common = common.min(ws.iter().zip(first).take_while(|(a, b)| a == b).count());
            }
            self.shared = first[..common].to_vec();
        }
        self.words = self
            .words
            .chunks_exact(n)
            .flat_map(|ws| &ws[common..])
            .copied()
            .collect();
        self.nwords = n - common;
    }
}

impl ScoreTable {
    /// Table over `takers`, whose words are `words[taker]`.
    pub(crate) fn new(takers: &[u32], words: &[WorkerWords]) -> Self {
        let groups = std::array::from_fn(|pending| {
            let mut groups: Vec<Group> = Vec::new();
            for &w in takers {
                let ww = &words[w as usize];
                let mine = &ww.words[pending];
                let at = match groups.iter().position(|g| g.suffix_len == ww.len) {
                    Some(at) => at,
                    None => {
                        groups.push(Group {
                            suffix_len: ww.len,
                            shared: Vec::new(),
                            nwords: mine.len(),
                            workers: Vec::new(),
                            words: Vec::new(),
                        });
                        groups.len() - 1
                    }
                };
                groups[at].workers.push(w);
                groups[at].words.extend_from_slice(mine);
            }
            for g in &mut groups {
                g.share_leading_words();
            }
            groups
        });
        Self {
            groups,
            len: takers.len(),
        }
    }

    /// Appends `(score, worker)` for every worker whose score for `scorer` is at
    /// least `floor`; returns whether that was every worker.
    fn collect(&self, scorer: &ShardScorer, floor: u64, out: &mut Vec<(u64, u32)>) -> bool {
        let before = out.len();
        for g in &self.groups[scorer.pending] {
            let lenb = (scorer.len + g.suffix_len) << 56;
            let mut v = scorer.v;
            let mut tail = scorer.tail;
            for &m in &g.shared {
                compress(&mut v, m | tail);
                tail = 0;
            }
            let tail = tail;
            let (ws, workers) = (&g.words[..], &g.workers[..]);
            match g.nwords {
                1 => score_group::<1>(v, tail, lenb, ws, workers, floor, out),
                2 => score_group::<2>(v, tail, lenb, ws, workers, floor, out),
                3 => score_group::<3>(v, tail, lenb, ws, workers, floor, out),
                4 => score_group::<4>(v, tail, lenb, ws, workers, floor, out),
                n => {
                    for (ws, &w) in ws.chunks_exact(n).zip(workers) {
                        let s = absorb(v, tail, lenb, ws);
                        if s >= floor {
                            out.push((s, w));
                        }
                    }
                }
            }
        }
        out.len() - before == self.len
    }

    /// The best `limit` workers for `scorer` in preference order, skipping those for
    /// which `skip` holds; `limit = usize::MAX` ranks them all.
    pub(crate) fn rank(
        &self,
        scorer: &ShardScorer,
        limit: usize,
        skip: impl Fn(u32) -> bool,
    ) -> Ranking {
        // Scores are uniform over u64, so about `3·limit` of them are expected to
        // reach `floor`: only those are kept and sorted. The floor only prunes: should
        // fewer than `limit` candidates reach it, every worker is ranked instead, so
        // the answer never depends on it.
        let expected = 3 * limit as u128;
        let floor = match u128::from(u64::MAX).checked_div(self.len as u128) {
            Some(step) if expected < self.len as u128 => {
                (u128::from(u64::MAX) - step * expected) as u64
            }
            _ => 0,
        };
        let mut items: Vec<(u64, u32)> = Vec::with_capacity(4 * limit.min(self.len));
        let mut complete = self.collect(scorer, floor, &mut items);
        items.retain(|&(_, w)| !skip(w));
        if items.len() < limit && !complete {
            return self.rank(scorer, usize::MAX, skip);
        }
        items.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        if items.len() > limit {
            items.truncate(limit);
            complete = false;
        }
        Ranking { items, complete }
    }
}

#[inline(never)]
fn score_group<const N: usize>(
    v: [u64; 4],
    tail: u64,
    lenb: u64,
    words: &[u64],
    workers: &[u32],
    floor: u64,
    out: &mut Vec<(u64, u32)>,
) {
    for (ws, &w) in words.chunks_exact(N).zip(workers) {
        let s = absorb(v, tail, lenb, ws);
        if s >= floor {
            out.push((s, w));
        }
    }
}

/// Finishes a hash from a prefix state: `ws` are the worker's words, `tail` the
/// prefix's pending bytes (merged into the first word), `lenb` the length byte.
#[inline(always)]
fn absorb(mut v: [u64; 4], tail: u64, lenb: u64, ws: &[u64]) -> u64 {
    let last = ws.len() - 1;
    for (j, &m) in ws.iter().enumerate() {
        let mut m = m;
        if j == 0 {
            m |= tail;
        }
        if j == last {
            m |= lenb;
        }
        compress(&mut v, m);
    }
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}
