//! Passwords: argon2id hashing and verification on a small pool of low-priority threads, and
//! the verified-credential cache that makes repeat logins cheap.
//!
//! An argon2id verification with the recommended parameters costs tens of milliseconds of
//! CPU. Run on an executor it would stall every chat on that core, so it runs here, on
//! threads niced below the executors: a login storm slows logins, not chat. The queue in
//! front of the pool is bounded; when it is full the login is answered `server busy`.
//!
//! The cache works as mail servers do: after a successful verification the owning shard keeps,
//! in memory only, a keyed BLAKE3 digest of (user, stored hash, presented password) under a
//! random per-process key, with a time-to-live. A repeat login with the same password then
//! costs one BLAKE3 call; a wrong password or a changed stored hash never matches it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use futures_channel::oneshot;

pub use corechat_shards::state::Remembered;

/// The outcome of a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Correct. `rehash` is set when the stored password was legacy plaintext and must be
    /// replaced by this hash.
    Valid {
        rehash: Option<String>,
    },
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("server busy")]
    Busy,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

enum Job {
    Verify {
        stored: String,
        password: String,
        reply: oneshot::Sender<Verdict>,
    },
    Hash {
        password: String,
        reply: oneshot::Sender<Result<String, AuthError>>,
    },
}

/// The password pool. Cheap to clone; every shard holds one.
#[derive(Clone)]
pub struct Auth {
    jobs: crossbeam_channel::Sender<Job>,
    key: Arc<[u8; 32]>,
    ttl: Duration,
}

impl Auth {
    /// Starts `threads` worker threads with the given argon2id cost. `queue` bounds the jobs
    /// waiting for a thread.
    pub fn start(
        threads: usize,
        queue: usize,
        memory_kib: u32,
        passes: u32,
        ttl: Duration,
    ) -> std::io::Result<Auth> {
        let params = Params::new(memory_kib, passes, 1, None)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue.max(1));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let params = params.clone();
            std::thread::Builder::new()
                .name(format!("corechat-auth-{i}"))
                .spawn(move || {
                    lower_priority();
                    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                    // Reused by every verification: allocating (and faulting in) 19 MiB per
                    // login, then unmapping it, costs page faults and TLB shootdowns that
                    // interrupt the executors on every core.
                    let mut memory: Vec<argon2::Block> = Vec::new();
                    for job in rx {
                        match job {
                            Job::Verify {
                                stored,
                                password,
                                reply,
                            } => {
                                let v = verify(&argon, &mut memory, &stored, &password);
                                let _ = reply.send(v);
                            }
                            Job::Hash { password, reply } => {
                                let _ = reply.send(hash(&argon, &password));
                            }
                        }
                    }
                })?;
        }
        Ok(Auth {
            jobs: tx,
            key: Arc::new(rand::random()),
            ttl,
        })
    }

    /// Checks `password` against `stored` (a PHC string, or legacy plaintext).
    pub async fn verify(&self, stored: String, password: String) -> Result<Verdict, AuthError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .try_send(Job::Verify {
                stored,
                password,
                reply,
            })
            .map_err(|_| AuthError::Busy)?;
        rx.await.map_err(|_| AuthError::Busy)
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .try_send(Job::Hash { password, reply })
            .map_err(|_| AuthError::Busy)?;
        rx.await.map_err(|_| AuthError::Busy)?
    }

    /// The cache digest of a credential.
    pub fn digest(&self, user_id: &str, stored: &str, password: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for part in [user_id, stored, password] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// What to remember after a successful verification, if the cache is on.
    pub fn remember(&self, user_id: &str, stored: &str, password: &str) -> Option<Remembered> {
        if self.ttl.is_zero() {
            return None;
        }
        Some(Remembered {
            digest: self.digest(user_id, stored, password),
            until: Instant::now() + self.ttl,
        })
    }

    /// Does a remembered digest vouch for this password?
    pub fn recall(&self, r: &Remembered, user_id: &str, stored: &str, password: &str) -> bool {
        if Instant::now() >= r.until {
            return false;
        }
        let d = self.digest(user_id, stored, password);
        // Constant time, so timing tells nothing about how much of a guess matched.
        d.iter()
            .zip(r.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

fn verify(
    argon: &Argon2<'_>,
    memory: &mut Vec<argon2::Block>,
    stored: &str,
    password: &str,
) -> Verdict {
    match PasswordHash::new(stored) {
        Ok(parsed) => match verify_phc(memory, &parsed, password.as_bytes()) {
            Some(true) => Verdict::Valid { rehash: None },
            Some(false) => Verdict::Invalid,
            // Not an argon2 hash we can recompute in place: the general (allocating) path.
            None if argon.verify_password(password.as_bytes(), &parsed).is_ok() => {
                Verdict::Valid { rehash: None }
            }
            None => Verdict::Invalid,
        },
        // Not a PHC string: a plaintext password the old server stored.
        Err(_) => {
            let (a, b) = (stored.as_bytes(), password.as_bytes());
            let same =
                a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
            if !same || stored.is_empty() {
                return Verdict::Invalid;
            }
            match hash(argon, password) {
                Ok(h) => Verdict::Valid { rehash: Some(h) },
                // Still a valid login; the upgrade waits for the next one.
                Err(_) => Verdict::Valid { rehash: None },
            }
        }
    }
}

/// Recomputes an argon2 PHC hash into `memory` (grown as needed, kept between calls) and
/// compares in constant time. `None` if the string is not a complete argon2 hash.
fn verify_phc(
    memory: &mut Vec<argon2::Block>,
    parsed: &PasswordHash<'_>,
    pwd: &[u8],
) -> Option<bool> {
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(parsed).ok()?;
    let expected = parsed.hash?;
    let mut salt_buf = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt_buf).ok()?;
    let need = params.block_count();
    if memory.len() < need {
        memory.resize(need, argon2::Block::new());
    }
    let mut out = [0u8; 64];
    let out = out.get_mut(..expected.len())?;
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(pwd, salt, &mut *out, &mut memory[..need])
        .ok()?;
    let same = out
        .iter()
        .zip(expected.as_bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0;
    Some(same)
}

fn hash(argon: &Argon2<'_>, password: &str) -> Result<String, AuthError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Puts the calling thread below the executors in the scheduler's eyes.
///
/// Nice 19: against a busy executor or the persistence thread (nice 0) a password thread gets
/// about 1.5% of a contended core, so a storm of first logins barely delays chat or commits,
/// yet logins still progress when the machine is saturated (SCHED_IDLE would starve them).
fn lower_priority() {
    // SAFETY: setpriority on the calling thread (who = 0 means the caller for
    // PRIO_PROCESS on Linux threads) has no memory-safety preconditions.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Auth {
        // Small parameters: the tests check behaviour, not cost.
        Auth::start(1, 16, 64, 1, Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn hash_then_verify() {
        let a = pool();
        let h = futures_lite::future::block_on(a.hash("pw".into())).unwrap();
        assert!(h.starts_with("$argon2id$"));
        let ok = futures_lite::future::block_on(a.verify(h.clone(), "pw".into())).unwrap();
        assert_eq!(ok, Verdict::Valid { rehash: None });
        let bad = futures_lite::future::block_on(a.verify(h, "pW".into())).unwrap();
        assert_eq!(bad, Verdict::Invalid);
    }

    #[test]
    fn in_place_verification_agrees_with_the_crate() {
        let argon = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        );
        let h = hash(&argon, "pw").unwrap();
        let parsed = PasswordHash::new(&h).unwrap();
        let mut memory = Vec::new();
        assert_eq!(verify_phc(&mut memory, &parsed, b"pw"), Some(true));
        assert_eq!(verify_phc(&mut memory, &parsed, b"pW"), Some(false));
        assert_eq!(memory.len(), 64, "one KiB block per KiB of memory cost");
        // A hash made with other parameters than the pool's still verifies.
        let other = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(128, 2, 1, None).unwrap(),
        );
        let h2 = hash(&other, "x").unwrap();
        assert_eq!(
            verify(&argon, &mut memory, &h2, "x"),
            Verdict::Valid { rehash: None }
        );
        assert_eq!(verify(&argon, &mut memory, &h2, "y"), Verdict::Invalid);
    }

    #[test]
    fn legacy_plaintext_is_verified_and_rehashed() {
        let a = pool();
        match futures_lite::future::block_on(a.verify("alice-pw".into(), "alice-pw".into())) {
            Ok(Verdict::Valid { rehash: Some(h) }) => assert!(h.starts_with("$argon2id$")),
            other => panic!("{other:?}"),
        }
        let bad = futures_lite::future::block_on(a.verify("alice-pw".into(), "alice-pX".into()));
        assert_eq!(bad, Ok(Verdict::Invalid));
        let empty = futures_lite::future::block_on(a.verify(String::new(), String::new()));
        assert_eq!(empty, Ok(Verdict::Invalid));
    }

    #[test]
    fn cache_matches_only_the_same_password_and_hash() {
        let a = pool();
        let r = a.remember("1", "$argon2id$h", "pw").unwrap();
        assert!(a.recall(&r, "1", "$argon2id$h", "pw"));
        assert!(!a.recall(&r, "1", "$argon2id$h", "pw2"));
        assert!(!a.recall(&r, "1", "$argon2id$other", "pw"));
        assert!(!a.recall(&r, "2", "$argon2id$h", "pw"));
        let expired = Remembered {
            until: Instant::now() - Duration::from_secs(1),
            ..r
        };
        assert!(!a.recall(&expired, "1", "$argon2id$h", "pw"));
        let other_process = pool();
        assert!(!other_process.recall(&r, "1", "$argon2id$h", "pw"));
    }

    #[test]
    fn full_queue_says_busy() {
        let (tx, _rx) = crossbeam_channel::bounded(0);
        let a = Auth {
            jobs: tx,
            key: Arc::new([0; 32]),
            ttl: Duration::ZERO,
        };
        assert_eq!(
            futures_lite::future::block_on(a.hash("x".into())),
            Err(AuthError::Busy)
        );
        assert!(a.remember("1", "h", "p").is_none());
    }
}
