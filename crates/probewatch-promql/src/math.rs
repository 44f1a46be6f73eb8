//! Numerics shared by functions and aggregations, matching Prometheus's results: compensated
//! (Kahan–Neumaier) sums, means that survive overflow, φ-quantiles, regression, and Go's
//! float formatting and NaN-propagating min/max.

/// A compensated sum: exact enough that `sum(x) - sum(x)` style tests come out as 0.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KahanSum {
    sum: f64,
    c: f64,
}

impl KahanSum {
    pub fn add(&mut self, inc: f64) {
        let t = self.sum + inc;
        if t.is_infinite() {
            self.c = 0.0;
        } else if self.sum.abs() >= inc.abs() {
            self.c += (self.sum - t) + inc;
        } else {
            self.c += (inc - t) + self.sum;
        }
        self.sum = t;
    }

    pub fn value(&self) -> f64 {
        // Adding an infinite or NaN sum's compensation would turn it into NaN.
        if self.sum.is_finite() {
            self.sum + self.c
        } else {
            self.sum
        }
    }
}

/// The mean of `values`: a compensated sum divided by the count, or, when the sum overflows
/// although the values are finite, an incremental mean.
pub(crate) fn mean(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let mut sum = KahanSum::default();
    let mut n = 0.0;
    for v in values.clone() {
        sum.add(v);
        n += 1.0;
    }
    if n == 0.0 {
        return f64::NAN;
    }
    let total = sum.value();
    if total.is_finite() || values.clone().any(|v| !v.is_finite()) {
        return total / n;
    }
    let mut mean = KahanSum::default();
    let mut count = 0.0;
    for v in values {
        count += 1.0;
        let current = mean.value();
        mean.add(v / count - current / count);
    }
    mean.value()
}

/// Population variance with a compensated running mean (Welford).
pub(crate) fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut aux) = (0.0, KahanSum::default(), KahanSum::default());
    for v in values {
        count += 1.0;
        let delta = v - mean.value();
        mean.add(delta / count);
        aux.add(delta * (v - mean.value()));
    }
    if count == 0.0 {
        return f64::NAN;
    }
    aux.value() / count
}

/// The φ-quantile of `values` (sorted here) with linear interpolation, as Prometheus
/// computes `quantile` and `quantile_over_time`.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    // total_cmp puts positive NaN last and negative NaN first; Go's sort treats NaN as
    // smallest. Move NaNs to the front to match.
    let nans = values.iter().filter(|v| v.is_nan()).count();
    if nans > 0 {
        let mut ordered: Vec<f64> = values.iter().copied().filter(|v| v.is_nan()).collect();
        ordered.extend(values.iter().copied().filter(|v| !v.is_nan()));
        values.copy_from_slice(&ordered);
    }
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Least-squares fit of `points` with times in seconds relative to `intercept_ms`:
/// `(slope, intercept)`.
pub(crate) fn linear_regression(points: &[(i64, f64)], intercept_ms: i64) -> (f64, f64) {
    let (mut n, mut sx, mut sy, mut sxy, mut sx2) = (
        0.0,
        KahanSum::default(),
        KahanSum::default(),
        KahanSum::default(),
        KahanSum::default(),
    );
    let first = points.first().map_or(f64::NAN, |p| p.1);
    let mut constant = true;
    for &(t, v) in points {
        if v != first {
            constant = false;
        }
        n += 1.0;
        let x = (t - intercept_ms) as f64 / 1e3;
        sx.add(x);
        sy.add(v);
        sxy.add(x * v);
        sx2.add(x * x);
    }
    if constant {
        if first.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, first);
    }
    let (sx, sy, sxy, sx2) = (sx.value(), sy.value(), sxy.value(), sx2.value());
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Go's `math.Max`: NaN if either is NaN.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN if either is NaN.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// A value as Prometheus prints it in labels (`count_values`) and the HTTP API: shortest
/// round-trip decimal, `+Inf`, `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        let s = format!("{v}");
        // Go prints large and small magnitudes with an exponent ('g' style in the API); the
        // label form uses plain digits, which is what Rust's Display gives.
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kahan_keeps_small_terms() {
        let mut s = KahanSum::default();
        for v in [1e100, 1.0, -1e100] {
            s.add(v);
        }
        assert_eq!(s.value(), 1.0);
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0, 4.0]), 2.5);
        assert_eq!(quantile(2.0, &mut [1.0]), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }

    #[test]
    fn mean_survives_overflow() {
        let m = mean([f64::MAX, f64::MAX].into_iter());
        assert_eq!(m, f64::MAX);
    }
}
