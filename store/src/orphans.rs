//! Segments in an object store that no catalog names, and when to delete them.
//!
//! A writer that dies between uploading a segment and committing the catalog
//! that names it, or after a merge committed but before it deleted the
//! replaced files, leaves files nobody will read or delete. Any writer can
//! tell, from the listing of the bucket and every node's catalog, which those
//! are; it deletes a file only when that cannot race with anyone:
//!
//! - written at least [`MIN_AGE`] ago, and named by a UUIDv7 at least as old
//!   (weft's segment ids), so an upload whose commit is still on its way is
//!   never taken for an orphan;
//! - found unnamed by every catalog at two sweeps at least `hold` (the
//!   deletion grace) apart, so a query that started before a merge replaced
//!   the file can still finish reading it, as with the merging writer's own
//!   deletions.
//!
//! Files whose names are not segment ids are never touched.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How old a segment must be, by its id and by its file, to be taken for an
/// orphan: far longer than any upload and commit takes.
pub(crate) const MIN_AGE: Duration = Duration::from_secs(3600);

/// The unnamed segments one writer has seen in its sweeps.
#[derive(Debug, Default)]
pub(crate) struct OrphanSweep {
    last: Option<Instant>,
    /// Unnamed segments old enough, with the sweep that first found them so.
    unnamed_since: HashMap<String, Instant>,
}

impl OrphanSweep {
    /// Whether the last sweep was at least `every` ago (or there was none).
    pub(crate) fn due(&self, every: Duration, now: Instant) -> bool {
        self.last
            .is_none_or(|last| now.duration_since(last) >= every)
    }

    /// One sweep: given every stored segment with when its file was written,
    /// and every id a catalog names, the segments to delete now.
    pub(crate) fn sweep(
        &mut self,
        stored: Vec<(String, SystemTime)>,
        named: &HashSet<String>,
        hold: Duration,
        now: Instant,
        wall_now: SystemTime,
    ) -> Vec<String> {
        self.last = Some(now);
        let old_enough =
            |at: SystemTime| wall_now.duration_since(at).is_ok_and(|age| age >= MIN_AGE);
        let unnamed: HashMap<String, Instant> = stored
            .into_iter()
            .filter(|(id, written)| {
                !named.contains(id)
                    && old_enough(*written)
                    && id_created_at(id).is_some_and(old_enough)
            })
            .map(|(id, _)| {
                let since = self.unnamed_since.get(&id).copied().unwrap_or(now);
                (id, since)
            })
            .collect();
        // A segment named again (a commit that was merely slow) drops out.
        self.unnamed_since = unnamed;
        let due: Vec<String> = self
            .unnamed_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= hold)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            self.unnamed_since.remove(id);
        }
        due
    }
}

/// When a segment id (a UUIDv7, as weft names segments) was made.
fn id_created_at(id: &str) -> Option<SystemTime> {
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    let (seconds, nanos) = uuid.get_timestamp()?.to_unix();
    (uuid.get_version_num() == 7).then(|| UNIX_EPOCH + Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_made(ago: Duration) -> String {
        let at = SystemTime::now() - ago;
        let since = at.duration_since(UNIX_EPOCH).unwrap();
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
        uuid::Uuid::new_v7(ts).simple().to_string()
    }

    #[test]
    fn only_old_unnamed_segments_go_and_only_at_a_second_sweep_a_hold_later() {
        let hour = Duration::from_secs(3600);
        let wall = SystemTime::now();
        let (orphan, named, recent_file, recent_id) = (
            id_made(2 * hour),
            id_made(2 * hour),
            id_made(2 * hour),
            id_made(Duration::from_secs(5)),
        );
        let stored = vec![
            (orphan.clone(), wall - 2 * hour),
            (named.clone(), wall - 2 * hour),
            // Uploaded just now, e.g. a segment moved into the bucket with its old id.
            (recent_file.clone(), wall),
            (recent_id.clone(), wall - 2 * hour),
            ("not-a-segment-id".to_string(), wall - 2 * hour),
        ];
        let catalogs: HashSet<String> = [named].into();
        let hold = Duration::from_secs(120);
        let mut sweep = OrphanSweep::default();
        let start = Instant::now();
        assert!(sweep.due(hold, start));
        assert!(sweep
            .sweep(stored.clone(), &catalogs, hold, start, wall)
            .is_empty());
        assert!(!sweep.due(hold, start + Duration::from_secs(60)));
        let later = start + hold;
        assert_eq!(
            sweep.sweep(stored.clone(), &catalogs, hold, later, wall),
            [orphan]
        );
        // Gone from the candidates once handed out.
        assert!(sweep
            .sweep(stored, &catalogs, hold, later + hold, wall)
            .is_empty());
    }

    #[test]
    fn a_segment_named_between_sweeps_starts_over() {
        let hour = Duration::from_secs(3600);
        let wall = SystemTime::now();
        let slow = id_made(2 * hour);
        let stored = vec![(slow.clone(), wall - 2 * hour)];
        let hold = Duration::from_secs(120);
        let mut sweep = OrphanSweep::default();
        let start = Instant::now();
        assert!(sweep
            .sweep(stored.clone(), &HashSet::new(), hold, start, wall)
            .is_empty());
        let named: HashSet<String> = [slow.clone()].into();
        assert!(sweep
            .sweep(stored.clone(), &named, hold, start + hold, wall)
            .is_empty());
        // Unnamed again (say, merged away): a full hold from now, not from the first sighting.
        let again = start + 2 * hold;
        assert!(sweep
            .sweep(stored.clone(), &HashSet::new(), hold, again, wall)
            .is_empty());
        assert_eq!(
            sweep.sweep(stored, &HashSet::new(), hold, again + hold, wall),
            [slow]
        );
    }
}
