//! Which notices this replica is acting on, with the receipts of every copy of their message
//! that arrived meanwhile: at-least-once delivery hands out duplicates, and a duplicate waits
//! for the first copy and is deleted with it (never a second drain).

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct InFlight {
    notices: Mutex<HashMap<String, Vec<String>>>,
}

impl InFlight {
    /// Starts acting on `notice`; false (and `receipt` kept for later) when it already is.
    pub fn join(&self, notice: &str, receipt: &str) -> bool {
        let mut map = self.notices.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(notice) {
            Some(copies) => {
                copies.push(receipt.to_owned());
                false
            }
            None => {
                map.insert(notice.to_owned(), Vec::new());
                true
            }
        }
    }

    /// Stops acting on `notice`; returns the duplicates' receipts, to delete when it is done.
    pub fn leave(&self, notice: &str) -> Vec<String> {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(notice)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_copy_acts_duplicates_ride_along_and_leaving_resets() {
        let f = InFlight::default();
        assert!(f.join("n1", "r1"));
        assert!(!f.join("n1", "r2"));
        assert!(!f.join("n1", "r3"));
        assert!(f.join("n2", "r4"), "another notice is independent");
        assert_eq!(f.leave("n1"), vec!["r2".to_owned(), "r3".to_owned()]);
        assert!(f.leave("n1").is_empty(), "leaving twice is harmless");
        // A copy arriving after the first finished acts again (its claim then says done).
        assert!(f.join("n1", "r5"));
        assert_eq!(f.leave("n2"), Vec::<String>::new());
        assert!(!f.join("n1", "r6"));
        assert_eq!(f.leave("n1"), vec!["r6".to_owned()]);
    }
}
