//! Partitions: one logical queue spread over N hash tags (`AFTERCALL_PARTITIONS`), so on
//! Redis Cluster its memory and its scripts' CPU spread over N primaries.
//!
//! - A call and everything made of it (its call-ended job, its actions, its completion
//!   callback, its analysis) live in one partition, chosen from the call id, so the
//!   idempotency check, the fan-out and the settling stay one atomic script each.
//! - A job's id names its partition (`job<p>_<uuid>`), so finishing, renewing,
//!   replaying or reading a job needs no lookup. With one partition ids stay `job_<uuid>`
//!   and the keys stay `{prefix}:…`: a single-partition queue is laid out as before.
//! - What is shared by the whole queue (agents, destinations' health, limits, opt-outs,
//!   sessions, workers, alerts) stays under the home tag `{prefix}`.
//! - Partition p's tag is chosen so that its cluster slot falls in the p-th N-th of the
//!   slot space, which is where `redis-cli --cluster create` puts the p-th of N evenly
//!   sliced primaries: with N a multiple of the primaries, each primary gets N / primaries
//!   partitions.

use crate::keys::Keys;

/// Redis Cluster's slot count.
const SLOTS: u32 = 16_384;

/// The most partitions a queue may have (each costs an empty fetch when idle).
pub const MAX_PARTITIONS: usize = 64;

/// The cluster slot of a hash tag (CRC16/XMODEM, as Redis computes it).
pub fn slot(tag: &str) -> u16 {
    (crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) as u32 % SLOTS) as u16
}

/// The hash tags of `n` partitions of queue `prefix` (`n` = 1: the prefix itself).
pub fn tags(prefix: &str, n: usize) -> Vec<String> {
    if n <= 1 {
        return vec![prefix.to_string()];
    }
    let width = SLOTS / n as u32;
    (0..n)
        .map(|p| {
            // The middle half of the p-th N-th of the slots: clear of its edges, which
            // a cluster's slicing may round either way.
            let lo = p as u32 * width + width / 4;
            let hi = p as u32 * width + 3 * width / 4;
            (0..)
                .map(|salt| match salt {
                    0 => format!("{prefix}.p{p}"),
                    s => format!("{prefix}.p{p}.{s}"),
                })
                .find(|t| (lo..hi.max(lo + 1)).contains(&(slot(t) as u32)))
                .expect("CRC16 reaches every slot range")
        })
        .collect()
}

/// The partition of a call (FNV-1a of its id): stable across versions and replicas.
pub fn of_call(call_id: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in call_id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

/// The partition a job id names (`job<p>_…`, its actions `job<p>_….<i>`); 0 for an id
/// that names none (a one-partition id, or not a job id: reading it finds nothing).
pub fn of_job(job_id: &str, n: usize) -> usize {
    aftercall_core::job::partition_of(job_id)
        .filter(|p| *p < n)
        .unwrap_or(0)
}

/// A new call-ended job id in partition `p` of `n`.
pub fn job_id(p: usize, n: usize) -> String {
    aftercall_core::job::new_job_id((n > 1).then_some(p))
}

/// A new call-ended job id for call `call_id`, in its partition of `n`.
pub(crate) fn call_job_id(call_id: &str, n: usize) -> String {
    job_id(of_call(call_id, n), n)
}

/// The queue's keys: the home tag's, and each partition's.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub home: Keys,
    pub parts: Vec<Keys>,
}

impl Layout {
    pub fn new(prefix: &str, n: usize) -> Layout {
        let n = n.clamp(1, MAX_PARTITIONS);
        let home = Keys::new(prefix);
        let parts = if n == 1 {
            vec![home.clone()]
        } else {
            tags(prefix, n).iter().map(|t| Keys::new(t)).collect()
        };
        Layout { home, parts }
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }
}

impl crate::Queue {
    /// At connect: the queue's partition count is recorded under its home tag. Another
    /// count is taken up only when the old layout holds no unsettled work (queued,
    /// scheduled, running, waiting or dead jobs); otherwise the process stops with what to
    /// do, since its jobs would be out of its sight. Settled history under the old layout
    /// stays until the retention sweep of a process with the old count.
    pub(crate) async fn check_layout(&self, writes: bool) -> Result<(), crate::QueueError> {
        let n = self.partitions();
        let key = &self.home().partitions;
        let stored: Option<usize> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn())
            .await?;
        let old = stored.unwrap_or(1);
        if old != n {
            let prefix = &self.config().prefix;
            let mut unsettled = 0u64;
            for k in Layout::new(prefix, old).parts {
                let (a, b, c, d, e): (u64, u64, u64, u64, u64) = redis::pipe()
                    .llen(&k.ready)
                    .zcard(&k.scheduled)
                    .zcard(&k.running)
                    .zcard(&k.dead)
                    .hlen(&k.pending)
                    .query_async(&mut self.conn())
                    .await?;
                unsettled += a + b + c + d + e;
            }
            if unsettled > 0 {
                let msg = format!(
                    "AFTERCALL_PARTITIONS={n}, but queue `{prefix}` has {unsettled} unsettled jobs \
                     (queued, scheduled, running, waiting or dead) in {old} partition(s): run \
                     with AFTERCALL_PARTITIONS={old} until they settle and the dead letters \
                     are replayed or purged, then change it (docs/production.md, \"Partitions\")"
                );
                if writes {
                    return Err(crate::QueueError::Invalid(msg));
                }
                tracing::warn!("{msg}");
                return Ok(());
            }
        }
        // One partition is the default layout: recorded only by its absence.
        if writes && old != n {
            let mut cmd = if n == 1 {
                redis::cmd("DEL")
            } else {
                redis::cmd("SET")
            };
            cmd.arg(key);
            if n > 1 {
                cmd.arg(n);
            }
            let _: () = cmd.query_async(&mut self.conn()).await?;
        }
        Ok(())
    }
}

/// `items`' indices grouped by partition (in partition order, each group in item order).
pub(crate) fn group<T>(items: &[T], part: impl Fn(&T) -> usize) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = part(item);
        match groups.iter_mut().find(|(q, _)| *q == p) {
            Some((_, g)) => g.push(i),
            None => groups.push((p, vec![i])),
        }
    }
    groups.sort_by_key(|(p, _)| *p);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // CLUSTER KEYSLOT answers these (Redis's own test vectors).
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("aftercall"), slot("aftercall"));
    }

    #[test]
    fn one_partition_is_the_old_layout() {
        assert_eq!(tags("aftercall", 1), vec!["aftercall"]);
        let l = Layout::new("aftercall", 1);
        assert_eq!(l.parts[0].ready, "{aftercall}:ready");
        assert_eq!(l.home.ready, "{aftercall}:ready");
        assert_eq!(of_call("c1", 1), 0);
        assert_eq!(of_job("job_abc", 1), 0);
        assert!(job_id(0, 1).starts_with("job_"));
    }

    #[test]
    fn partitions_fall_in_their_share_of_the_slots() {
        for n in [2, 3, 4, 6, 12, 64] {
            let tags = tags("aftercall", n);
            let width = SLOTS / n as u32;
            for (p, t) in tags.iter().enumerate() {
                let s = slot(t) as u32;
                assert!(
                    s >= p as u32 * width && s < (p as u32 + 1) * width,
                    "{n}: {t} {s}"
                );
            }
        }
        // Three primaries sliced as `redis-cli --cluster create` slices them.
        let ranges = [0..5461, 5461..10923, 10923..16384];
        for (p, t) in tags("q", 3).iter().enumerate() {
            assert!(ranges[p].contains(&slot(t)), "{t}");
        }
    }

    #[test]
    fn jobs_name_their_partition() {
        for p in 0..6 {
            let id = job_id(p, 6);
            assert_eq!(of_job(&id, 6), p);
            assert_eq!(of_job(&format!("{id}.3"), 6), p);
        }
        assert_eq!(of_job("job_0192", 6), 0);
        assert_eq!(of_job("job9_0192", 6), 0);
        assert_eq!(of_job("nonsense", 6), 0);
    }

    #[test]
    fn calls_spread_evenly() {
        let n = 3;
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            counts[of_call(&format!("call-{i}"), n)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn groups_keep_item_order() {
        let g = group(&[2, 0, 2, 1, 0], |x| *x);
        assert_eq!(g, vec![(0, vec![1, 4]), (1, vec![3]), (2, vec![0, 2])]);
    }
}
