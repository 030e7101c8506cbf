//! What became of one message: the `..._queue_messages_total{result}` label, and whether the
//! message is deleted. Pure, so the rules are tested on their own.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Ignored,
    Malformed,
    /// EC2 does not know the instance, or it is no node of this cluster.
    UnknownInstance,
    /// `--managed-tag` is set and the instance lacks it.
    Unmanaged,
    /// Another copy is being handled here: this one is deleted with it.
    Duplicate,
    /// Another replica finished this notice: delete our copy.
    AlreadyDone,
    /// Left on the queue: it comes back after its visibility timeout.
    Retry,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Ignored => "ignored",
            Self::Malformed => "malformed",
            Self::UnknownInstance => "unknown_instance",
            Self::Unmanaged => "unmanaged",
            Self::Duplicate | Self::AlreadyDone => "duplicate",
            Self::Retry => "retry",
        }
    }

    /// Whether the message is deleted now. A message about instances not ours is deleted
    /// unless `--delete-if-node-not-found=false` keeps it coming back (a node may join).
    pub fn deletes(self, delete_unknown: bool) -> bool {
        match self {
            Self::Retry | Self::Duplicate => false,
            Self::UnknownInstance | Self::Unmanaged => delete_unknown,
            Self::Done | Self::Ignored | Self::Malformed | Self::AlreadyDone => true,
        }
    }

    /// One message may name several instances (an AWS Health event): it is done when all of
    /// them are, and left on the queue while any one needs another try.
    pub fn combine(outcomes: &[Outcome]) -> Outcome {
        let any = |o: Outcome| outcomes.contains(&o);
        if outcomes.is_empty() {
            Self::Ignored
        } else if any(Self::Retry) {
            Self::Retry
        } else if any(Self::Duplicate) {
            Self::Duplicate
        } else if any(Self::AlreadyDone) {
            Self::AlreadyDone
        } else if outcomes.iter().all(|o| *o == Self::Unmanaged) {
            Self::Unmanaged
        } else if outcomes
            .iter()
            .all(|o| matches!(o, Self::UnknownInstance | Self::Unmanaged))
        {
            Self::UnknownInstance
        } else {
            Self::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome::*;
    use super::*;

    #[test]
    fn several_instances_in_one_message() {
        assert_eq!(Outcome::combine(&[Done, Done]), Done);
        assert_eq!(Outcome::combine(&[Done, UnknownInstance]), Done);
        assert_eq!(Outcome::combine(&[Done, Retry, Done]), Retry);
        assert_eq!(Outcome::combine(&[Duplicate, Done]), Duplicate);
        assert_eq!(Outcome::combine(&[AlreadyDone, Done]), AlreadyDone);
        assert_eq!(Outcome::combine(&[Unmanaged, Unmanaged]), Unmanaged);
        assert_eq!(
            Outcome::combine(&[Unmanaged, UnknownInstance]),
            UnknownInstance
        );
        assert_eq!(Outcome::combine(&[]), Ignored);
    }

    #[test]
    fn what_is_deleted() {
        for o in [Done, Ignored, Malformed, AlreadyDone] {
            assert!(o.deletes(false) && o.deletes(true), "{o:?}");
        }
        for o in [Retry, Duplicate] {
            assert!(!o.deletes(false) && !o.deletes(true), "{o:?}");
        }
        for o in [UnknownInstance, Unmanaged] {
            assert!(o.deletes(true) && !o.deletes(false), "{o:?}");
        }
        assert_eq!(Duplicate.label(), AlreadyDone.label());
    }
}
