//! Batch and job ids. A batch id is derived from the project and the SHA-256 of
//! the file, so submitting the same file to the same project again names the
//! same batch; a job id is the batch id plus the job's position among the
//! batch's accepted lines, so the same line always becomes the same job, and a
//! result's job id tells collect where its line goes without a lookup table.

use sha2::{Digest, Sha256};

/// Prefix of every batch id.
pub const BATCH_ID_PREFIX: &str = "batch_";

/// The batch id of `file_sha256` (hex) submitted to `project`.
pub fn batch_id(project: &str, file_sha256: &str) -> String {
    let mut h = Sha256::new();
    h.update(project.as_bytes());
    h.update([0u8]);
    h.update(file_sha256.as_bytes());
    let digest = h.finalize();
    // 96 bits: collisions are out of reach for any number of batches.
    format!("{BATCH_ID_PREFIX}{}", hex::encode(&digest[..12]))
}

/// The job id of the accepted line at `ordinal` (0-based) of `batch_id`.
pub fn job_id(batch_id: &str, ordinal: u64) -> String {
    format!("{batch_id}-{ordinal}")
}

/// The ordinal of `job_id` if it belongs to `batch_id`.
pub fn ordinal_of(batch_id: &str, job_id: &[u8]) -> Option<u64> {
    let rest = job_id.strip_prefix(batch_id.as_bytes())?;
    let digits = rest.strip_prefix(b"-")?;
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether `s` looks like a batch id (for early, friendly errors).
pub fn is_batch_id(s: &str) -> bool {
    s.strip_prefix(BATCH_ID_PREFIX)
        .is_some_and(|h| h.len() == 24 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_round_trip() {
        let a = batch_id("acme/a/b/c", "00ff");
        assert_eq!(a, batch_id("acme/a/b/c", "00ff"));
        assert_ne!(a, batch_id("acme/a/b/d", "00ff"));
        assert!(is_batch_id(&a));
        let j = job_id(&a, 41);
        assert_eq!(ordinal_of(&a, j.as_bytes()), Some(41));
        assert_eq!(ordinal_of(&a, b"other-1"), None);
        assert_eq!(ordinal_of(&a, format!("{a}-").as_bytes()), None);
        assert_eq!(ordinal_of(&a, format!("{a}-1x").as_bytes()), None);
    }
}
