//! Dependency graphs among sibling steps: `needs` resolution (with the
//! implicit previous-sibling rule), cycle finding, topological order and
//! levels. Validation and plans use this one implementation.

use std::collections::{BTreeSet, HashMap};

use crate::definition::Step;

/// A graph over `n` nodes where `needs[i]` lists the nodes `i` waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dag {
    /// For each node, the nodes it needs, ascending, without duplicates.
    pub needs: Vec<Vec<usize>>,
}

impl Dag {
    /// The graph of a sibling list. `needs` entries that name no sibling are
    /// left out (validation reports them); a step without `needs` waits for
    /// the step before it.
    pub fn of_steps(steps: &[Step]) -> Self {
        let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let needs = steps
            .iter()
            .enumerate()
            .map(|(i, step)| match &step.needs {
                None => i.checked_sub(1).into_iter().collect(),
                Some(list) => {
                    let set: BTreeSet<usize> =
                        list.iter().filter_map(|id| index.get(id.as_str()).copied()).collect();
                    set.into_iter().collect()
                }
            })
            .collect();
        Self { needs }
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.needs.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.needs.is_empty()
    }

    /// A cycle, as its nodes in order with the first repeated at the end
    /// (`[a, b, a]`), or `None`. Iterative: deep chains cannot overflow the stack.
    pub fn find_cycle(&self) -> Option<Vec<usize>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark = vec![Mark::New; self.len()];
        for start in 0..self.len() {
            if mark[start] != Mark::New {
                continue;
            }
            // (node, next edge to follow)
            let mut stack = vec![(start, 0usize)];
            mark[start] = Mark::Open;
            while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
                if let Some(&next) = self.needs[node].get(*edge) {
                    *edge += 1;
                    match mark[next] {
                        Mark::New => {
                            mark[next] = Mark::Open;
                            stack.push((next, 0));
                        }
                        Mark::Open => {
                            let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                            // The stack runs against the arrows (a needs b): reverse it so
                            // the cycle reads in execution order.
                            let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                            cycle.reverse();
                            cycle.push(cycle[0]);
                            return Some(cycle);
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
        None
    }

    /// Level of each node: 0 for roots, else one more than its deepest need.
    /// `None` when the graph has a cycle.
    pub fn levels(&self) -> Option<Vec<usize>> {
        let order = self.topological_order()?;
        let mut level = vec![0usize; self.len()];
        for &node in &order {
            level[node] = self.needs[node].iter().map(|&n| level[n] + 1).max().unwrap_or(0);
        }
        Some(level)
    }

    /// Kahn's algorithm; ties go to the node written first, so the order is
    /// stable and reads like the file. `None` when the graph has a cycle.
    pub fn topological_order(&self) -> Option<Vec<usize>> {
        let mut waiting: Vec<usize> = self.needs.iter().map(Vec::len).collect();
        let mut dependents = vec![Vec::new(); self.len()];
        for (node, needs) in self.needs.iter().enumerate() {
            for &n in needs {
                dependents[n].push(node);
            }
        }
        let mut ready: BTreeSet<usize> = (0..self.len()).filter(|&n| waiting[n] == 0).collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(node) = ready.pop_first() {
            order.push(node);
            for &d in &dependents[node] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        (order.len() == self.len()).then_some(order)
    }

    /// Which nodes each node transitively needs, as a bit matrix built in
    /// one pass over the topological order. `None` when the graph has a cycle.
    pub fn reach(&self) -> Option<Reach> {
        let order = self.topological_order()?;
        let words = self.len().div_ceil(64);
        let mut bits = vec![0u64; words * self.len()];
        for &node in &order {
            for &need in &self.needs[node] {
                let (row, from) = (node * words, need * words);
                for w in 0..words {
                    bits[row + w] |= bits[from + w];
                }
                bits[row + need / 64] |= 1 << (need % 64);
            }
        }
        Some(Reach { words, bits })
    }
}

/// The transitive `needs` of every node, one bit row per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    words: usize,
    bits: Vec<u64>,
}

impl Reach {
    /// Whether `node` transitively needs `ancestor`.
    pub fn needs(&self, node: usize, ancestor: usize) -> bool {
        self.bits.get(node * self.words + ancestor / 64).is_some_and(|w| w & (1 << (ancestor % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dag(needs: &[&[usize]]) -> Dag {
        Dag { needs: needs.iter().map(|n| n.to_vec()).collect() }
    }

    #[test]
    fn diamond_levels_and_order() {
        let d = dag(&[&[], &[0], &[0], &[1, 2]]);
        assert_eq!(d.topological_order(), Some(vec![0, 1, 2, 3]));
        assert_eq!(d.levels(), Some(vec![0, 1, 1, 2]));
        assert_eq!(d.find_cycle(), None);
        let reach = d.reach().expect("acyclic");
        assert!(reach.needs(3, 0) && reach.needs(3, 1) && reach.needs(1, 0));
        assert!(!reach.needs(1, 2) && !reach.needs(0, 3) && !reach.needs(0, 0));
    }

    #[test]
    fn names_cycles_in_execution_order() {
        // a needs c, b needs a, c needs b: a -> b -> c -> a
        let d = dag(&[&[2], &[0], &[1]]);
        let cycle = d.find_cycle().expect("cycle");
        assert_eq!(cycle.len(), 4);
        assert_eq!(cycle.first(), cycle.last());
        for w in cycle.windows(2) {
            assert!(d.needs[w[1]].contains(&w[0]), "{cycle:?}");
        }
        assert_eq!(dag(&[&[0]]).find_cycle(), Some(vec![0, 0]));
        assert_eq!(d.levels(), None);
    }

    #[test]
    fn long_chains_do_not_overflow() {
        let needs: Vec<Vec<usize>> =
            (0..200_000).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect();
        let d = Dag { needs };
        assert_eq!(d.find_cycle(), None);
        assert_eq!(d.levels().map(|l| l[199_999]), Some(199_999));
    }

    /// Random DAGs: every edge points to an earlier node in a random permutation.
    fn random_dag() -> impl Strategy<Value = Dag> {
        (1usize..40)
            .prop_flat_map(|n| {
                (
                    Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                    proptest::collection::vec(
                        proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
                        n,
                    ),
                )
            })
            .prop_map(|(perm, picks)| {
                let n = perm.len();
                let mut needs = vec![Vec::new(); n];
                for (rank, node) in perm.iter().enumerate() {
                    if rank == 0 {
                        continue;
                    }
                    let set: BTreeSet<usize> = picks[*node].iter().map(|ix| perm[ix.index(rank)]).collect();
                    needs[*node] = set.into_iter().collect();
                }
                Dag { needs }
            })
    }

    proptest! {
        #[test]
        fn random_dags_order_and_level_correctly(d in random_dag()) {
            let order = d.topological_order().expect("acyclic");
            let mut pos = vec![0; d.len()];
            for (i, n) in order.iter().enumerate() { pos[*n] = i; }
            let levels = d.levels().expect("acyclic");
            for (node, needs) in d.needs.iter().enumerate() {
                for &n in needs {
                    prop_assert!(pos[n] < pos[node]);
                    prop_assert!(levels[n] < levels[node]);
                }
                if !needs.is_empty() {
                    prop_assert!(needs.iter().any(|&n| levels[n] + 1 == levels[node]));
                }
            }
            prop_assert_eq!(d.find_cycle(), None);
        }

        #[test]
        fn a_back_edge_always_makes_a_found_cycle(d in random_dag(), pick in any::<prop::sample::Index>()) {
            let order = d.topological_order().expect("acyclic");
            // Close a cycle: the first node in order now needs the last one
            // that (transitively) needs it, or itself.
            let first = order[0];
            let reach = d.reach().expect("acyclic");
            let needers: Vec<usize> = (0..d.len()).filter(|n| reach.needs(*n, first)).collect();
            let last = if needers.is_empty() { first } else { needers[pick.index(needers.len())] };
            let mut cyclic = d.clone();
            cyclic.needs[first].push(last);
            let cycle = cyclic.find_cycle().expect("cycle found");
            prop_assert_eq!(cycle.first(), cycle.last());
            for w in cycle.windows(2) {
                prop_assert!(cyclic.needs[w[1]].contains(&w[0]));
            }
            prop_assert_eq!(cyclic.topological_order(), None);
        }
    }
}
