//! Which alert transitions have been delivered: the state last sent (or found
//! sent) per alert key. A record is a new transition when its key has no state
//! yet or another one; several workers publishing one crossing, and the same
//! record read again, are not. Pure.

use std::collections::HashMap;

use switchyard_core::alert::AlertState;

/// The state delivered per alert key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transitions {
    states: HashMap<String, AlertState>,
}

impl Transitions {
    /// Whether an alert in `state` under `key` still has to be sent.
    pub fn is_new(&self, key: &str, state: AlertState) -> bool {
        self.states.get(key) != Some(&state)
    }

    /// `key` is now in `state` (sent, or given up, or read from the history
    /// below the committed offset).
    pub fn record(&mut self, key: String, state: AlertState) {
        self.states.insert(key, state);
    }

    /// Keys known.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_of_a_key_is_new_once_in_a_row() {
        let mut t = Transitions::default();
        let key = "budget_threshold|acme/retail|0.8|2026-11";
        assert!(t.is_new(key, AlertState::Firing));
        t.record(key.into(), AlertState::Firing);
        assert!(!t.is_new(key, AlertState::Firing), "a second worker's copy");
        assert!(t.is_new(key, AlertState::Resolved));
        t.record(key.into(), AlertState::Resolved);
        assert!(!t.is_new(key, AlertState::Resolved));
        assert!(
            t.is_new(key, AlertState::Firing),
            "fired again: a new transition"
        );
        assert!(t.is_new(
            "budget_threshold|acme/retail|0.8|2026-12",
            AlertState::Resolved
        ));
        assert_eq!(t.len(), 1);
    }
}
