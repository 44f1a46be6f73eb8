//! `histogram_quantile` over classic histograms: one series per bucket with an `le` label.

use std::collections::HashMap;

use crate::eval::Val;
use crate::labels::{Labels, METRIC_NAME};
use crate::value::Sample;

/// Estimates the `q`-quantile of each histogram in `v` (series grouped by their labels
/// without `le` and the metric name), interpolating linearly inside the bucket it falls in.
pub(crate) fn quantile(q: f64, v: Vec<Sample>, t: i64) -> Val {
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for s in v {
        let Some(upper) = parse_le(s.labels.get("le")) else {
            continue;
        };
        let mut labels = s.labels.clone();
        labels.remove("le");
        labels.remove(METRIC_NAME);
        match index.get(&labels) {
            Some(&i) => groups[i].1.push((upper, s.v)),
            None => {
                index.insert(labels.clone(), groups.len());
                groups.push((labels, vec![(upper, s.v)]));
            }
        }
    }
    Val::Vector(
        groups
            .into_iter()
            .map(|(labels, buckets)| Sample {
                labels,
                t,
                v: bucket_quantile(q, buckets),
                drop_name: false,
            })
            .collect(),
    )
}

fn parse_le(text: &str) -> Option<f64> {
    match text {
        "" => None,
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Buckets with the same bound (e.g. le="1" and le="1.0") count as one.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (upper, count) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == upper => last.1 += count,
            _ => merged.push((upper, count)),
        }
    }
    let buckets = &mut merged;
    if buckets.len() < 2 || buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Counts must not decrease with the bound; scrape races can make them, so take the
    // running maximum.
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        if b.1 < max {
            b.1 = max;
        } else {
            max = b.1;
        }
    }
    let last = buckets.len() - 1;
    let observations = buckets[last].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets.partition_point(|x| x.1 < rank);
    if b == last {
        return buckets[last - 1].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_inside_the_bucket() {
        let buckets = vec![(0.1, 10.0), (0.5, 30.0), (f64::INFINITY, 40.0)];
        // rank 20 falls in (0.1, 0.5]: 10 of its 20 observations in.
        assert!((bucket_quantile(0.5, buckets.clone()) - 0.3).abs() < 1e-12);
        assert_eq!(bucket_quantile(0.99, buckets), 0.5);
        assert!(bucket_quantile(0.5, vec![(1.0, 1.0)]).is_nan());
    }
}
