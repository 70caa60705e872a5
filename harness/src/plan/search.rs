//! The search for the fewest keys that meet the goal, on one tier with one set of fallbacks.
//!
//! More keys never hurt, so whether `k` keys pass is monotone in `k`. A failing run is cheap
//! (it stops at the goal's first break) and a passing one costs the whole traffic, so the
//! search climbs from one key by doubling (1, 2, 4, ... up to the most allowed) until a count
//! passes, then halves the gap between the last failure and that pass: at most about
//! 2·log2(max) runs, and few of them whole.

/// Where a search stands; ask [`KeySearch::next`] what to try, tell [`KeySearch::record`] how
/// it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySearch {
    /// Fewest keys not yet known to fail.
    low: usize,
    /// Fewest keys known to pass, if any.
    pass: Option<usize>,
    /// Most keys allowed.
    max: usize,
    /// The next count of the climb, until a count passes.
    climb: Option<usize>,
}

impl KeySearch {
    /// A search over 1..=`max` keys; `known_pass`: a count already known to pass (from a
    /// candidate with fewer fallbacks on the same tier), which caps the search.
    pub fn new(max: usize, known_pass: Option<usize>) -> Self {
        let max = max.max(1);
        KeySearch {
            low: 1,
            pass: known_pass.filter(|k| *k >= 1).map(|k| k.min(max)),
            max,
            climb: Some(1),
        }
    }

    /// The next key count to run, or `None` when the answer is known.
    pub fn next(&self) -> Option<usize> {
        let upper = self.pass.unwrap_or(self.max + 1);
        if self.low >= upper {
            return None;
        }
        Some(match self.climb {
            Some(c) => c.max(self.low).min(upper - 1),
            None => self.low + (upper - self.low) / 2,
        })
    }

    /// Takes a run's outcome.
    pub fn record(&mut self, keys: usize, passed: bool) {
        if passed {
            self.pass = Some(self.pass.map_or(keys, |p| p.min(keys)));
            self.climb = None;
        } else {
            self.low = self.low.max(keys + 1);
            self.climb = self.climb.map(|_| (keys * 2).max(self.low));
        }
    }

    /// The fewest keys that pass, once [`KeySearch::next`] is `None` (`None`: not even the
    /// most allowed).
    pub fn answer(&self) -> Option<usize> {
        self.pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against "passes from `need` keys on" and returns (answer, runs, passing runs).
    fn search(
        max: usize,
        need: Option<usize>,
        known: Option<usize>,
    ) -> (Option<usize>, usize, usize) {
        let mut s = KeySearch::new(max, known);
        let (mut runs, mut passes) = (0, 0);
        while let Some(k) = s.next() {
            assert!((1..=max).contains(&k), "tried {k} of 1..={max}");
            let pass = need.is_some_and(|n| k >= n);
            runs += 1;
            passes += usize::from(pass);
            s.record(k, pass);
            assert!(runs <= 2 * max, "the search does not end");
        }
        (s.answer(), runs, passes)
    }

    #[test]
    fn the_search_finds_the_fewest_keys_for_every_threshold() {
        for max in 1..=16 {
            for need in 1..=max {
                let (answer, runs, passes) = search(max, Some(need), None);
                assert_eq!(answer, Some(need), "max {max}, need {need}");
                let bound = 2 * (usize::BITS - max.leading_zeros()) as usize + 1;
                assert!(
                    runs <= bound,
                    "max {max}, need {need}: {runs} runs > {bound}"
                );
                assert!(
                    passes <= bound / 2 + 1,
                    "max {max}, need {need}: {passes} passing runs"
                );
            }
            assert_eq!(
                search(max, None, None).0,
                None,
                "nothing passes within {max}"
            );
        }
    }

    #[test]
    fn one_key_enough_costs_one_run_and_a_known_pass_caps_the_search() {
        assert_eq!(search(8, Some(1), None), (Some(1), 1, 1));
        // 8 keys known to pass without a fallback: with it, 3 are enough, and 8 is not rerun.
        let (answer, runs, _) = search(8, Some(3), Some(8));
        assert_eq!(answer, Some(3));
        assert!(runs <= 4, "{runs}");
        assert_eq!(search(8, Some(5), Some(5)).0, Some(5));
    }
}
