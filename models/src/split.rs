//! Seeded, stratified train/test splits: the same seed gives the same split, and each class is
//! split in the same proportion, so a rare seed is represented on both sides.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Row indices `(train, test)`, with `test_fraction` of each class (rounded) in the test set.
pub fn stratified(labels: &[bool], test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in [true, false] {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|i| labels[*i] == class).collect();
        rows.shuffle(&mut rng);
        let n_test = ((rows.len() as f64) * test_fraction.clamp(0.0, 1.0)).round() as usize;
        test.extend_from_slice(&rows[..n_test]);
        train.extend_from_slice(&rows[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_stratified_disjoint_and_reproducible() {
        let labels: Vec<bool> = (0..100).map(|i| i % 10 == 0).collect();
        let (train, test) = stratified(&labels, 0.3, 7);
        assert_eq!(test.iter().filter(|i| labels[**i]).count(), 3);
        assert_eq!(train.len() + test.len(), 100);
        assert!(train.iter().all(|i| !test.contains(i)));
        assert_eq!(stratified(&labels, 0.3, 7), (train, test));
        assert_ne!(stratified(&labels, 0.3, 8).1, stratified(&labels, 0.3, 7).1);
    }
}
