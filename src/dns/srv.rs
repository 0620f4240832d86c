//! RFC 2782 target selection, pure: lowest priority first; within a
//! priority, a weighted random draw repeated until every record is placed,
//! so the whole list stays available for failover.

/// One SRV record as the ordering needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Target host name (without the trailing dot).
    pub target: String,
}

/// Orders `records` per RFC 2782 ("Usage rules"), returning indices into
/// `records`. `rand_upto(n)` must return a uniform integer in `0..=n`.
///
/// Within one priority the RFC's algorithm is followed to the letter: the
/// records not yet placed are listed with the weight-0 ones first, a running
/// sum of weights is computed, a number in `0..=sum` is drawn and the first
/// record whose running sum reaches it is placed next. A weight-0 record is
/// therefore chosen only when the draw is 0 (probability 1/(sum+1)) and
/// otherwise ends up after the weighted ones.
pub fn order(records: &[SrvRecord], mut rand_upto: impl FnMut(u32) -> u32) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..records.len()).collect();
    // Stable: records of equal priority keep the order they arrived in.
    idx.sort_by_key(|&i| records[i].priority);
    let mut out = Vec::with_capacity(records.len());
    let mut start = 0;
    while start < idx.len() {
        let prio = records[idx[start]].priority;
        let end = idx[start..]
            .iter()
            .position(|&i| records[i].priority != prio)
            .map_or(idx.len(), |p| start + p);
        let mut group: Vec<usize> = idx[start..end].to_vec();
        // Weight 0 first, as the RFC prescribes for the running sum.
        group.sort_by_key(|&i| records[i].weight != 0);
        while !group.is_empty() {
            let sum: u32 = group.iter().map(|&i| u32::from(records[i].weight)).sum();
            let pick = if sum == 0 {
                0
            } else {
                let r = rand_upto(sum).min(sum);
                let mut acc = 0u32;
                group
                    .iter()
                    .position(|&i| {
                        acc += u32::from(records[i].weight);
                        acc >= r
                    })
                    .unwrap_or(0)
            };
            out.push(group.remove(pick));
        }
        start = end;
    }
    out
}

/// True for the RFC 2782 "service decidedly not available" answer: a single
/// record whose target is the root (`.`).
pub fn not_available(records: &[SrvRecord]) -> bool {
    !records.is_empty()
        && records
            .iter()
            .all(|r| r.target.is_empty() || r.target == ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    /// Deterministic source: SplitMix64.
    fn rng(seed: u64) -> impl FnMut(u32) -> u32 {
        let mut s = seed;
        move |n| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z % (u64::from(n) + 1)) as u32
        }
    }

    fn names(records: &[SrvRecord], order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| records[i].target.clone()).collect()
    }

    #[test]
    fn lowest_priority_first_and_every_record_kept() {
        let r = vec![
            rec(20, 0, "c"),
            rec(10, 50, "a"),
            rec(30, 5, "d"),
            rec(10, 50, "b"),
        ];
        let o = order(&r, rng(7));
        assert_eq!(o.len(), 4);
        let n = names(&r, &o);
        assert!(n[..2].contains(&"a".to_string()) && n[..2].contains(&"b".to_string()));
        assert_eq!(&n[2..], ["c", "d"]);
    }

    #[test]
    fn empty_and_single() {
        assert!(order(&[], rng(1)).is_empty());
        assert_eq!(order(&[rec(0, 0, "x")], rng(1)), vec![0]);
    }

    #[test]
    fn all_zero_weights_keep_arrival_order() {
        let r = vec![rec(1, 0, "a"), rec(1, 0, "b"), rec(1, 0, "c")];
        assert_eq!(names(&r, &order(&r, rng(3))), ["a", "b", "c"]);
    }

    #[test]
    fn fixed_seed_is_reproducible() {
        let r = vec![
            rec(1, 10, "a"),
            rec(1, 20, "b"),
            rec(1, 30, "c"),
            rec(2, 1, "d"),
        ];
        assert_eq!(order(&r, rng(42)), order(&r, rng(42)));
    }

    #[test]
    fn draw_of_zero_picks_a_weight_zero_record() {
        // RFC 2782: weight-0 entries sit at the start of the running sum, so
        // only a draw of 0 selects one.
        let r = vec![rec(1, 10, "heavy"), rec(1, 0, "zero")];
        assert_eq!(names(&r, &order(&r, |_| 0)), ["zero", "heavy"]);
        assert_eq!(names(&r, &order(&r, |n| n)), ["heavy", "zero"]);
    }

    #[test]
    fn weight_split_is_proportional() {
        // 3:1 weights: the first pick is "a" about 75 % of the time.
        let r = vec![rec(1, 30, "a"), rec(1, 10, "b")];
        let mut next = rng(2024);
        let n = 20_000;
        let first_a = (0..n).filter(|_| order(&r, &mut next)[0] == 0).count();
        let share = first_a as f64 / f64::from(n);
        // 30/41 and 10/41 with the draw in 0..=40: a wins for r in 0..=30.
        let expected = 31.0 / 41.0;
        assert!(
            (share - expected).abs() < 0.02,
            "share {share}, expected {expected}"
        );
    }

    #[test]
    fn weight_zero_is_rarely_first() {
        let r = vec![rec(1, 50, "a"), rec(1, 50, "b"), rec(1, 0, "z")];
        let mut next = rng(99);
        let n = 20_000;
        let z_first = (0..n).filter(|_| order(&r, &mut next)[0] == 2).count();
        let share = z_first as f64 / f64::from(n);
        assert!(share < 0.02, "weight-0 first in {share}");
        let z_last = (0..n).filter(|_| order(&r, &mut next)[2] == 2).count();
        assert!(z_last as f64 / f64::from(n) > 0.95);
    }

    #[test]
    fn dot_target_means_not_available() {
        assert!(not_available(&[rec(0, 0, ".")]));
        assert!(!not_available(&[rec(0, 0, "."), rec(1, 0, "a")]));
        assert!(!not_available(&[rec(0, 0, "a")]));
        assert!(!not_available(&[]));
    }
}
