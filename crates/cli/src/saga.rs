//! Reading one order's saga from its events: causal order. Where it is waiting is
//! `bazaar_saga::progress`, checked against the services' rules by the saga simulator.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What the ordering needs of an event.
#[derive(Debug, Clone)]
pub struct Node {
    pub event_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    /// Breaks ties between events of the same microsecond: (topic, partition, offset).
    pub position: (String, i32, i64),
}

/// Indices of `nodes` in causal order: an event comes after the event that caused it, and
/// otherwise the earliest comes first (a topological sort that prefers time).
pub fn causal_order(nodes: &[Node]) -> Vec<usize> {
    let index: HashMap<Uuid, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.event_id, i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut ready = BinaryHeap::new();
    let key = |i: usize| Reverse((nodes[i].occurred_at, nodes[i].position.clone(), i));
    for (i, node) in nodes.iter().enumerate() {
        match node.causation_id.and_then(|cause| index.get(&cause)) {
            // An event naming itself as cause would never become ready.
            Some(&parent) if parent != i => children.entry(parent).or_default().push(i),
            _ => ready.push(key(i)),
        }
    }
    let mut order = Vec::with_capacity(nodes.len());
    let mut emitted = HashSet::new();
    while let Some(Reverse((_, _, i))) = ready.pop() {
        if !emitted.insert(i) {
            continue;
        }
        order.push(i);
        for &child in children.get(&i).into_iter().flatten() {
            ready.push(key(child));
        }
    }
    // A causation cycle (corrupt headers) would leave events out: append them by time.
    if order.len() < nodes.len() {
        let mut rest: Vec<usize> = (0..nodes.len()).filter(|i| !emitted.contains(i)).collect();
        rest.sort_by_key(|&i| (nodes[i].occurred_at, nodes[i].position.clone()));
        order.extend(rest);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u128, cause: Option<u128>, millis: i64) -> Node {
        Node {
            event_id: Uuid::from_u128(id),
            causation_id: cause.map(Uuid::from_u128),
            occurred_at: DateTime::from_timestamp_millis(millis).expect("time"),
            position: ("t".into(), 0, i64::try_from(id).unwrap_or(0)),
        }
    }

    #[test]
    fn causes_come_first_even_when_clocks_disagree() {
        // 2 was caused by 1 but stamped earlier (another host's clock); 3 is unrelated.
        let nodes = [node(1, None, 100), node(2, Some(1), 90), node(3, None, 95)];
        assert_eq!(causal_order(&nodes), vec![2, 0, 1]);
        let nodes = [
            node(1, None, 100),
            node(2, Some(1), 110),
            node(3, None, 105),
        ];
        assert_eq!(causal_order(&nodes), vec![0, 2, 1]);
    }

    #[test]
    fn a_cycle_does_not_lose_events() {
        let nodes = [node(1, Some(2), 100), node(2, Some(1), 110)];
        let mut order = causal_order(&nodes);
        order.sort_unstable();
        assert_eq!(order, vec![0, 1]);
    }
}
