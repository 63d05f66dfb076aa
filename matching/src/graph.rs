//! Union-find (disjoint sets) over dense `u32` ids, for de-duplication and identity graphs.

/// Disjoint sets with path halving and union by size.
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        Self { parent: (0..n as u32).collect(), size: vec![1; n] }
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// Adds a new singleton set and returns its id.
    pub fn push(&mut self) -> u32 {
        let id = self.parent.len() as u32;
        self.parent.push(id);
        self.size.push(1);
        id
    }

    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grandparent = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grandparent;
            x = grandparent;
        }
        x
    }

    /// Joins the sets of `a` and `b`; returns whether they were separate.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.size[ra as usize] < self.size[rb as usize] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.size[ra as usize] += self.size[rb as usize];
        true
    }

    /// Dense component labels `0..components` in order of first appearance, and their count.
    pub fn labels(&mut self) -> (Vec<u32>, usize) {
        let n = self.parent.len();
        let mut label_of_root = vec![u32::MAX; n];
        let mut labels = Vec::with_capacity(n);
        let mut next = 0u32;
        for x in 0..n as u32 {
            let r = self.find(x) as usize;
            if label_of_root[r] == u32::MAX {
                label_of_root[r] = next;
                next += 1;
            }
            labels.push(label_of_root[r]);
        }
        (labels, next as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn components() {
        let mut uf = UnionFind::new(6);
        assert!(uf.union(0, 1));
        assert!(uf.union(4, 5));
        assert!(uf.union(1, 5));
        assert!(!uf.union(0, 4));
        let (labels, n) = uf.labels();
        assert_eq!(n, 3);
        assert_eq!(labels, vec![0, 0, 1, 2, 0, 0]);
        assert_eq!(uf.push(), 6);
        assert_eq!(uf.labels().1, 4);
    }

    proptest! {
        /// Labels agree with a naive transitive closure of the edges.
        #[test]
        fn labels_match_the_transitive_closure(n in 1usize..40, edges in proptest::collection::vec((0u32..40, 0u32..40), 0..60)) {
            let edges: Vec<(u32, u32)> = edges.into_iter().filter(|(a, b)| (*a as usize) < n && (*b as usize) < n).collect();
            let mut uf = UnionFind::new(n);
            for (a, b) in &edges { uf.union(*a, *b); }
            let (labels, _) = uf.labels();
            // Naive: repeatedly merge component ids until stable.
            let mut comp: Vec<usize> = (0..n).collect();
            loop {
                let mut changed = false;
                for (a, b) in &edges {
                    let (ca, cb) = (comp[*a as usize], comp[*b as usize]);
                    if ca != cb {
                        let (lo, hi) = (ca.min(cb), ca.max(cb));
                        for c in comp.iter_mut() { if *c == hi { *c = lo; changed = true; } }
                    }
                }
                if !changed { break; }
            }
            for i in 0..n { for j in 0..n {
                prop_assert_eq!(labels[i] == labels[j], comp[i] == comp[j]);
            }}
        }
    }
}
