//! Password hashing: argon2id with the crate's recommended parameters, off the async threads.
//!
//! Each hash needs `m_cost` KiB of working memory (19 MiB with the defaults), and a process that
//! idles after a burst of sign-ins must still be small (SPEC §10: < 30 MB). Hence:
//! - at most one hash per CPU runs at a time ([`HASHING`]): hashing is CPU-bound, so twenty
//!   sign-ins at once are no slower for it, and need two working memories instead of twenty;
//! - the working memory comes from the system allocator ([`argon2_output`]), not the global one:
//!   the global allocator keeps freed memory for reuse and gives it back to the OS only on a later
//!   allocation, which an idle process never makes; the system allocator maps a block this large
//!   on its own and unmaps it when the hash ends (see [`ALWAYS_MAPPED_BYTES`] for how large).

use std::num::NonZeroUsize;
use std::sync::LazyLock;

use allocator_api2::alloc::System;
use allocator_api2::vec::Vec as SystemVec;
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::password_hash::{self, try_generate_salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::sync::Semaphore;

pub const MIN_LENGTH: usize = 8;
/// Hashing cost grows with length; nobody needs more.
pub const MAX_LENGTH: usize = 256;

/// The most memory (KiB) a stored hash may ask for: 64 MiB, RFC 9106's second recommended setting.
/// We write 19 MiB; a stored hash asking for more than this was not written by anyone we want to
/// spend gigabytes on, so it never matches.
const MAX_STORED_M_COST: u32 = 64 * 1024;
/// The most passes a stored hash may ask for (the RFC's and OWASP's settings use at most 5).
const MAX_STORED_T_COST: u32 = 16;

/// The working memory's capacity is at least this, so that glibc's malloc maps it on its own. It
/// does so for requests above its mmap threshold, but raises that threshold to the size of each
/// such mapping freed, up to 32 MiB: after the first hash, a 19 MiB request would come from a
/// per-thread heap that keeps it resident when freed (measured: 450 MB idle after twenty sign-ins
/// at once). A request above 32 MiB is always mapped and never moves the threshold. Only the
/// blocks a hash uses are ever written, so the rest of the capacity is address space, not memory.
/// (musl maps every allocation this large.)
const ALWAYS_MAPPED_BYTES: usize = 32 * 1024 * 1024 + 1;

/// One permit per CPU: the bound on hashes running at once (see the module docs).
static HASHING: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
});

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least {MIN_LENGTH} characters")]
    TooShort,
    #[error("password must be at most {MAX_LENGTH} characters")]
    TooLong,
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Checks a new password against the policy.
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    match password.chars().count() {
        n if n < MIN_LENGTH => Err(PasswordError::TooShort),
        n if n > MAX_LENGTH => Err(PasswordError::TooLong),
        _ => Ok(()),
    }
}

/// The PHC string (`$argon2id$v=19$…`) of `password`, with a fresh random salt.
pub async fn hash(password: &str) -> Result<String, PasswordError> {
    let password = password.to_owned();
    let permit = HASHING
        .acquire()
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        // Held until the hash ends, even if the caller stops waiting for it.
        let _permit = permit;
        hash_now(password.as_bytes()).map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| PasswordError::Hash(e.to_string()))?
}

/// Whether `password` matches `phc`. A malformed stored hash never matches.
pub async fn verify(password: &str, phc: &str) -> bool {
    let password = password.to_owned();
    let phc = phc.to_owned();
    let Ok(permit) = HASHING.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        verify_now(password.as_bytes(), &phc)
    })
    .await
    .unwrap_or(false)
}

/// What argon2's `PasswordHasher::hash_password` makes, byte for byte.
fn hash_now(password: &[u8]) -> password_hash::Result<String> {
    let salt = Salt::new(&try_generate_salt()?)?;
    let argon2 = Argon2::default();
    let output_len = argon2
        .params()
        .output_len()
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = argon2_output(&argon2, password, &salt, output_len)?;
    let phc = PasswordHash {
        algorithm: Algorithm::default().into(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(argon2.params())?,
        salt: Some(salt),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// What argon2's `PasswordVerifier::verify_password` decides, with the algorithm, version and
/// parameters read from `phc`, except that a hash costlier than [`MAX_STORED_M_COST`] or
/// [`MAX_STORED_T_COST`] is refused instead of computed.
fn verify_now(password: &[u8], phc: &str) -> bool {
    let Ok(stored) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
        return false;
    };
    let argon2 = match argon2_for(&stored) {
        Ok(argon2) => argon2,
        Err(e) => {
            tracing::warn!("a stored password hash cannot be verified: {e}");
            return false;
        }
    };
    // `Output`'s equality is constant-time.
    argon2_output(&argon2, password, salt, expected.len()).is_ok_and(|output| output == *expected)
}

/// The argon2 context a stored hash was made with, if it is within our cost limits.
fn argon2_for(stored: &PasswordHash) -> password_hash::Result<Argon2<'static>> {
    let algorithm = Algorithm::try_from(stored.algorithm.as_str())?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(stored)?;
    if params.m_cost() > MAX_STORED_M_COST {
        return Err(password_hash::Error::ParamInvalid { name: "m" });
    }
    if params.t_cost() > MAX_STORED_T_COST {
        return Err(password_hash::Error::ParamInvalid { name: "t" });
    }
    Ok(Argon2::new(algorithm, version, params))
}

/// The raw argon2 output of `output_len` bytes, computed in working memory from the system
/// allocator (see the module docs).
fn argon2_output(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    output_len: usize,
) -> password_hash::Result<Output> {
    let blocks = argon2.params().block_count();
    let mut memory = SystemVec::new_in(System);
    let capacity = blocks.max(ALWAYS_MAPPED_BYTES.div_ceil(Block::SIZE));
    memory
        .try_reserve_exact(capacity)
        .map_err(|_| argon2::Error::OutOfMemory)?;
    memory.resize(blocks, Block::new());
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let out = buffer
        .get_mut(..output_len)
        .ok_or(password_hash::Error::OutputSize)?;
    argon2.hash_password_into_with_memory(password, salt, out, memory.as_mut_slice())?;
    Ok(Output::new(out)?)
}

/// A random password for generated accounts: 24 letters and digits (about 142 bits).
pub fn generate() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let phc = hash("correct horse").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse", &phc).await);
        assert!(!verify("correct horsf", &phc).await);
        assert!(!verify("correct horse", "not a hash").await);
    }

    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crate_both_ways() {
        let ours = hash("correct horse").await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"correct horsf", &parsed)
                .is_err()
        );

        let theirs = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        assert!(verify("correct horse", &theirs).await);
        assert!(!verify("correct horsf", &theirs).await);
    }

    #[test]
    fn the_same_salt_gives_the_argon2_crate_s_string_byte_for_byte() {
        let salt = b"sixteen-byte-slt";
        let theirs = Argon2::default()
            .hash_password_with_salt(b"correct horse", salt)
            .unwrap()
            .to_string();
        let argon2 = Argon2::default();
        let output = argon2_output(&argon2, b"correct horse", salt, 32).unwrap();
        let ours = PasswordHash {
            algorithm: Algorithm::Argon2id.into(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(argon2.params()).unwrap(),
            salt: Some(Salt::new(salt).unwrap()),
            hash: Some(output),
        };
        assert_eq!(ours.to_string(), theirs);
    }

    #[tokio::test]
    async fn hashes_with_other_parameters_still_verify() {
        for (algorithm, m, t, p, len) in [
            (Algorithm::Argon2id, 47_104, 1, 1, 32),
            (Algorithm::Argon2id, 12_288, 3, 1, 32),
            (Algorithm::Argon2id, 8 * 1024, 2, 4, 64),
            (Algorithm::Argon2i, 4096, 3, 1, 16),
        ] {
            let params = Params::new(m, t, p, Some(len)).unwrap();
            let phc = Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"correct horse")
                .unwrap()
                .to_string();
            assert!(verify("correct horse", &phc).await, "{phc}");
            assert!(!verify("correct horsf", &phc).await, "{phc}");
        }
    }

    #[tokio::test]
    async fn a_stored_hash_asking_for_too_much_memory_or_time_never_matches() {
        // Valid PHC strings whose parameters would cost 4 GiB or a billion passes.
        let real = hash("correct horse").await.unwrap();
        for costly in ["m=4194304,t=2,p=1", "m=19456,t=1000000000,p=1"] {
            let phc = real.replace("m=19456,t=2,p=1", costly);
            assert!(PasswordHash::new(&phc).is_ok());
            assert!(!verify("correct horse", &phc).await, "{phc}");
        }
    }

    #[test]
    fn policy_bounds_length() {
        assert!(matches!(
            check_policy("short"),
            Err(PasswordError::TooShort)
        ));
        assert!(check_policy("long enough").is_ok());
        assert!(matches!(
            check_policy(&"x".repeat(300)),
            Err(PasswordError::TooLong)
        ));
    }

    #[test]
    fn generated_passwords_differ_and_pass_the_policy() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(check_policy(&a).is_ok());
    }
}
