//! Exact rationals for building the transforms: a handful of small
//! matrices, whose entries stay far inside `i128`.

use std::ops::{Add, Div, Mul, Neg, Sub};

/// `num / den` in lowest terms, `den > 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ratio {
    num: i128,
    den: i128,
}

/// The greatest common divisor of `|a|` and `|b|` (0 for two zeros).
pub(super) fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Ratio {
    pub(super) const ZERO: Ratio = Ratio { num: 0, den: 1 };
    pub(super) const ONE: Ratio = Ratio { num: 1, den: 1 };

    /// `num / den`; `den` must not be zero.
    pub(super) fn new(num: i128, den: i128) -> Ratio {
        assert!(den != 0, "a rational with a zero denominator");
        let g = gcd(num, den).max(1) * den.signum();
        Ratio { num: num / g, den: den / g }
    }

    pub(super) fn int(n: i128) -> Ratio {
        Ratio { num: n, den: 1 }
    }

    pub(super) fn is_zero(self) -> bool {
        self.num == 0
    }

    pub(super) fn numer(self) -> i128 {
        self.num
    }

    pub(super) fn denom(self) -> i128 {
        self.den
    }

    pub(super) fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl Add for Ratio {
    type Output = Ratio;
    fn add(self, o: Ratio) -> Ratio {
        Ratio::new(self.num * o.den + o.num * self.den, self.den * o.den)
    }
}

impl Sub for Ratio {
    type Output = Ratio;
    fn sub(self, o: Ratio) -> Ratio {
        self + -o
    }
}

impl Neg for Ratio {
    type Output = Ratio;
    fn neg(self) -> Ratio {
        Ratio { num: -self.num, den: self.den }
    }
}

impl Mul for Ratio {
    type Output = Ratio;
    fn mul(self, o: Ratio) -> Ratio {
        Ratio::new(self.num * o.num, self.den * o.den)
    }
}

impl Div for Ratio {
    type Output = Ratio;
    fn div(self, o: Ratio) -> Ratio {
        Ratio::new(self.num * o.den, self.den * o.num)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_stays_in_lowest_terms() {
        let (a, b) = (Ratio::new(2, -4), Ratio::new(1, 3));
        assert_eq!(a, Ratio::new(-1, 2));
        assert_eq!(a + b, Ratio::new(-1, 6));
        assert_eq!(a - b, Ratio::new(-5, 6));
        assert_eq!(a * b, Ratio::new(-1, 6));
        assert_eq!(a / b, Ratio::new(-3, 2));
        assert_eq!((a / b).denom(), 2);
        assert!((Ratio::ONE + -Ratio::ONE).is_zero());
    }
}
