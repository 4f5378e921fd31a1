//! The significance tests root-cause analysis reports with its suspects.

/// Pearson's chi-square test of a 2×2 table with Yates' continuity
/// correction: does a property (an operation failing, an attribute value)
/// occur in `bad_with` of `bad` traces more or less often than in
/// `base_with` of `base`? Returns `(chi², p-value)`; `None` when a row or
/// column is empty and the test says nothing.
pub fn chi_square_2x2(bad_with: u64, bad: u64, base_with: u64, base: u64) -> Option<(f64, f64)> {
    let (a, b) = (bad_with as f64, (bad - bad_with.min(bad)) as f64);
    let (c, d) = (base_with as f64, (base - base_with.min(base)) as f64);
    let n = a + b + c + d;
    let (row1, row2, col1, col2) = (a + b, c + d, a + c, b + d);
    if row1 == 0.0 || row2 == 0.0 || col1 == 0.0 || col2 == 0.0 {
        return None;
    }
    let corrected = ((a * d - b * c).abs() - n / 2.0).max(0.0);
    let chi2 = n * corrected * corrected / (row1 * row2 * col1 * col2);
    // One degree of freedom: P(X > x) = erfc(sqrt(x / 2)).
    Some((chi2, libm::erfc((chi2 / 2.0).sqrt())))
}

/// The two-sample Kolmogorov–Smirnov test: the largest distance between the
/// two empirical distributions, and its asymptotic p-value. `None` when
/// either sample is empty.
pub fn kolmogorov_smirnov(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let sorted = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (a, b) = (sorted(a), sorted(b));
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut distance) = (0, 0, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        distance = distance.max((i as f64 / n - j as f64 / m).abs());
    }
    let effective = (n * m / (n + m)).sqrt();
    let lambda = (effective + 0.12 + 0.11 / effective) * distance;
    Some((distance, kolmogorov_survival(lambda)))
}

/// Q(λ) = 2 Σ (-1)^(k-1) e^(-2k²λ²), the Kolmogorov distribution's tail.
fn kolmogorov_survival(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += if k as u64 % 2 == 1 { term } else { -term };
        if term < 1e-12 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi_square_matches_a_worked_example() {
        // 40 of 50 bad vs 10 of 50 baseline: χ² (Yates) = 100·(1500 − 50)² / 50⁴ = 33.64, p ≈ 6.7e-9.
        let (chi2, p) = chi_square_2x2(40, 50, 10, 50).unwrap();
        assert!((chi2 - 33.64).abs() < 1e-9, "{chi2}");
        assert!(p < 1e-8 && p > 1e-9, "{p}");
        // No difference: p near 1.
        let (_, p) = chi_square_2x2(10, 50, 10, 50).unwrap();
        assert!(p > 0.8, "{p}");
        assert_eq!(chi_square_2x2(0, 0, 3, 10), None);
    }

    #[test]
    fn ks_tells_shifted_samples_from_equal_ones() {
        let a: Vec<f64> = (0..200).map(f64::from).collect();
        let shifted: Vec<f64> = (0..200).map(|x| f64::from(x) + 100.0).collect();
        let (d, p) = kolmogorov_smirnov(&a, &shifted).unwrap();
        assert!((d - 0.5).abs() < 1e-9, "{d}");
        assert!(p < 1e-10, "{p}");
        let (d, p) = kolmogorov_smirnov(&a, &a).unwrap();
        assert_eq!(d, 0.0);
        assert!(p > 0.99);
        assert_eq!(kolmogorov_smirnov(&a, &[]), None);
    }
}
