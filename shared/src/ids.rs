//! Identifiers: a type prefix plus a ULID, so ids sort by creation time.

/// Ids made in the same millisecond still sort in the order they were made (a list page
/// ends exactly where the next begins).
pub fn new_id(prefix: &str) -> String {
    static GENERATOR: std::sync::Mutex<ulid::Generator> = std::sync::Mutex::new(ulid::Generator::new());
    let id = GENERATOR
        .lock()
        .map_err(|_| ())
        .and_then(|mut g| g.generate().map_err(|_| ()))
        // Overflow of the random part within one millisecond (2^80 ids): fall back to random.
        .unwrap_or_else(|()| ulid::Ulid::new());
    format!("{prefix}_{}", id.to_string().to_ascii_lowercase())
}

/// A secret for the caller to keep (API keys, trigger tokens): 32 random bytes, hex.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}_{}", hex::encode(bytes))
}

/// How secrets are stored: only comparison is ever needed, so a hash suffices.
pub fn hash_secret(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A fresh wait token for a block to hand out (256 bits), and the hash to put in its
/// `blocks::WaitSpec`: only the hash is stored, and the engine resumes the wait with the
/// token (`Engine::resume_by_token`).
pub fn new_wait_token() -> (String, String) {
    let token = new_secret("wt");
    let hash = hash_secret(&token);
    (token, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_in_one_millisecond_sort_in_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("run")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn ids_carry_prefix_and_sort_by_time() {
        let a = new_id("run");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("run");
        assert!(a.starts_with("run_") && b.starts_with("run_"));
        assert!(a < b);
    }

    #[test]
    fn secrets_hash_stably_and_differ() {
        let s = new_secret("bk");
        assert_eq!(hash_secret(&s), hash_secret(&s));
        assert_ne!(s, new_secret("bk"));
    }
}
