//! Rendezvous (highest random weight) hashing: every agent computes the same ranking from
//! the same membership view, with no coordination.

use ring::digest::{digest, SHA256};

/// The weight of `node` for the decision named by `parts` (e.g. zone and slot): the first
/// 8 bytes of SHA-256 over the parts and the node, each terminated by a zero byte.
pub fn weight(parts: &[&str], node: &str) -> u64 {
    let mut input = Vec::with_capacity(64);
    for part in parts.iter().chain(std::iter::once(&node)) {
        input.extend_from_slice(part.as_bytes());
        input.push(0);
    }
    let hash = digest(&SHA256, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// The node with the highest weight for `parts` among `nodes` (ties broken by name).
pub fn choose<'a>(parts: &[&str], nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes
        .into_iter()
        .max_by_key(|node| (weight(parts, node), std::cmp::Reverse(*node)))
}

/// `nodes` ordered from the highest weight for `parts` to the lowest.
pub fn rank<'a>(parts: &[&str], nodes: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut ranked: Vec<&str> = nodes.into_iter().collect();
    ranked.sort_by_key(|node| (std::cmp::Reverse(weight(parts, node)), *node));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_is_stable_and_depends_on_parts() {
        let nodes = ["a1", "a2", "a3", "a4"];
        let first = choose(&["zone-a", "0"], nodes).unwrap();
        assert_eq!(
            choose(&["zone-a", "0"], nodes.iter().rev().copied()),
            Some(first)
        );
        let spread: std::collections::BTreeSet<&str> = (0..32)
            .map(|slot| choose(&["zone-a", &slot.to_string()], nodes).unwrap())
            .collect();
        assert!(
            spread.len() > 1,
            "slots should spread over nodes: {spread:?}"
        );
    }

    #[test]
    fn removing_a_loser_does_not_change_the_winner() {
        let nodes = ["n1", "n2", "n3", "n4", "n5"];
        let ranked = rank(&["vip"], nodes);
        let winner = ranked[0];
        for loser in &ranked[1..] {
            let rest = nodes.iter().copied().filter(|n| n != loser);
            assert_eq!(choose(&["vip"], rest), Some(winner));
        }
    }
}
