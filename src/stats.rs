//! Order statistics of timed runs, the one place the crate computes them.
//!
//! Two conventions, each kept where its figures were published with it:
//! - [`median`] and [`median_ticks`]: of an even count, the mean of the two
//!   middle values, so that neither side of a comparison gets the benefit
//!   of the doubt. The tuner scores candidates with it; `net` reports its
//!   step times with it.
//! - [`quantile`]: the nearest rank (the upper middle of an even count at
//!   0.5), a value that was measured. The benchmark's medians and spreads,
//!   the ceiling and the TSC calibration use it.

/// The median; of an even count, the mean of the two middle values. 0 of
/// none.
pub fn median(values: &[f64]) -> f64 {
    let v = sorted(values.iter().copied());
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// [`median`] of TSC ticks, rounded down (without overflowing). 0 of none.
pub fn median_ticks(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => v[n / 2 - 1] / 2 + v[n / 2] / 2 + (v[n / 2 - 1] % 2 + v[n / 2] % 2) / 2,
    }
}

/// The `q` quantile (0 to 1) of `sorted` by nearest rank: the element at
/// `(len − 1) · q` rounded (so the median of an even count is the upper
/// middle one). `None` of none.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get((last as f64 * q).round() as usize).copied()
}

/// `values` in ascending order (NaNs last, by [`f64::total_cmp`]).
pub fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_even_counts_favour_neither_side() {
        assert_eq!(median(&[1.0, 3.0, 2.0]), 2.0);
        assert_eq!(median(&[0.9, 1.1]), 1.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median_ticks(&[4, 1, 3, 2]), 2);
        assert_eq!(median_ticks(&[5, 8]), 6);
        assert_eq!(median_ticks(&[u64::MAX, u64::MAX]), u64::MAX);
        assert_eq!(median_ticks(&[]), 0);
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v = sorted([4.0, 1.0, 3.0, 2.0]);
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!((quantile(&v, 0.0), quantile(&v, 1.0)), (Some(1.0), Some(4.0)));
        assert_eq!((quantile(&v, 0.25), quantile(&v, 0.75)), (Some(2.0), Some(3.0)));
        assert_eq!(quantile(&[7u64, 8, 9], 0.5), Some(8));
        // The median by nearest rank is the element at half the length.
        for n in 1..10usize {
            let v: Vec<usize> = (0..n).collect();
            assert_eq!(quantile(&v, 0.5), Some(n / 2), "{n}");
        }
        assert_eq!(quantile::<f64>(&[], 0.5), None);
    }
}
