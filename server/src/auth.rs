//! Authentication: Basic credentials in the Flight handshake, answered with a
//! bearer token that every later call presents.
//!
//! Tokens are `base64url(user:expiry_unix:nonce).base64url(hmac)`, signed with
//! the server secret: no server-side token table, and tokens stay valid across
//! a restart. With no users configured, authentication is off.
//!
//! Password checks (argon2, ~20 ms of CPU each) run on blocking threads, at
//! most [`CONCURRENT_CHECKS`] at once, never on the threads that serve gRPC
//! calls. An unknown user costs a check against a decoy hash, so the time of
//! an answer does not tell which users exist. After [`FREE_FAILURES`] failed
//! logins in a row for one user or from one address, further attempts are
//! refused without a check for a time that doubles with each failure (up to
//! [`MAX_LOCKOUT`]); a success clears the user's and the address's count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::Semaphore;
use tracing::warn;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
#[cfg(test)]
use base64::engine::general_purpose::STANDARD;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::handle::Signer;

/// One user from the config file.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub name: String,
    /// An argon2 PHC string (`contrail hash-password` makes one).
    pub password_hash: String,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// The bearer token presented (sessions are keyed by it when there is no cookie).
    pub token: Option<String>,
}

/// Password checks running at once (each takes a core for ~20 ms).
pub const CONCURRENT_CHECKS: usize = 2;
/// Failed logins in a row (per user, per address) before attempts are delayed.
pub const FREE_FAILURES: u32 = 5;
/// The longest an attempt is refused after failures.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(60);
/// Failure records kept at most (one per user name or address tried).
const MAX_FAILURE_RECORDS: usize = 100_000;

/// Failed logins in a row of one user or address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// Until when attempts are refused, if they are.
    fn locked_until(&self) -> Option<Instant> {
        let over = self.count.checked_sub(FREE_FAILURES)?;
        let lockout = Duration::from_secs(1u64 << over.min(16)).min(MAX_LOCKOUT);
        Some(self.last + lockout)
    }
}

/// Checks credentials and tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    users: HashMap<String, String>,
    signer: Signer,
    token_ttl: Duration,
    /// What an unknown user's password is checked against.
    decoy: Arc<String>,
    checks: Arc<Semaphore>,
    failures: Arc<DashMap<String, Failures>>,
}

impl Authenticator {
    pub fn new(users: &[User], signer: Signer, token_ttl: Duration) -> Result<Self> {
        let mut map = HashMap::new();
        for u in users {
            PasswordHash::new(&u.password_hash).map_err(|e| {
                Error::invalid(format!(
                    "user '{}': password_hash is not an argon2 PHC string: {e}",
                    u.name
                ))
            })?;
            map.insert(u.name.clone(), u.password_hash.clone());
        }
        // Only needed to make unknown users as slow as known ones.
        let decoy = if map.is_empty() {
            String::new()
        } else {
            hash_password(&format!("{:032x}", rand::random::<u128>()))?
        };
        Ok(Self {
            users: map,
            signer,
            token_ttl,
            decoy: Arc::new(decoy),
            checks: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
            failures: Arc::new(DashMap::new()),
        })
    }

    /// [`Authenticator::login_basic`] as the handshake runs it: the password
    /// check on a blocking thread, failures counted per user and per `peer`,
    /// attempts past [`FREE_FAILURES`] refused for a while.
    pub async fn login_basic_from(&self, header: &str, peer: Option<IpAddr>) -> Result<(String, String)> {
        let (user, password) = basic_credentials(header)?;
        let keys = [Some(format!("user:{user}")), peer.map(|p| format!("peer:{p}"))];
        let now = Instant::now();
        for key in keys.iter().flatten() {
            if let Some(until) = self.failures.get(key).and_then(|f| f.locked_until())
                && until > now
            {
                return Err(Error::TooManyLogins {
                    retry_after: until - now,
                });
            }
        }
        let permit = Arc::clone(&self.checks)
            .acquire_owned()
            .await
            .map_err(|e| Error::Internal { message: e.to_string() })?;
        let this = self.clone();
        let login_user = user.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.login(&login_user, &password)
        })
        .await
        .map_err(|e| Error::Internal {
            message: format!("password check failed: {e}"),
        })?;
        match &checked {
            Ok(_) => {
                for key in keys.iter().flatten() {
                    self.failures.remove(key);
                }
            }
            Err(_) => {
                if self.failures.len() >= MAX_FAILURE_RECORDS {
                    self.failures.retain(|_, f| f.last.elapsed() < MAX_LOCKOUT);
                }
                for key in keys.iter().flatten() {
                    let mut entry = self.failures.entry(key.clone()).or_insert(Failures {
                        count: 0,
                        last: Instant::now(),
                    });
                    entry.count = entry.count.saturating_add(1);
                    entry.last = Instant::now();
                    if entry.count >= FREE_FAILURES {
                        warn!(who = %key, failures = entry.count, "repeated failed logins: attempts are delayed");
                    }
                }
            }
        }
        checked
    }

    /// Whether authentication is required.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// Check `Authorization: Basic ...` and issue a token (here, on this
    /// thread: see [`Authenticator::login_basic_from`]).
    pub fn login_basic(&self, header: &str) -> Result<(String, String)> {
        let (user, password) = basic_credentials(header)?;
        self.login(&user, &password)
    }

    /// Check a user's password and issue a token. An unknown user's password is
    /// checked too, against a decoy, so both take the same time.
    pub fn login(&self, user: &str, password: &str) -> Result<(String, String)> {
        let bad = || Error::unauthenticated("invalid user name or password");
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash.as_str(), true),
            None => (self.decoy.as_str(), false),
        };
        let parsed = PasswordHash::new(hash).map_err(|_| bad())?;
        let matches = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        if !(known && matches) {
            return Err(bad());
        }
        Ok((user.to_string(), self.issue(user)?))
    }

    /// A fresh token for `user`.
    pub fn issue(&self, user: &str) -> Result<String> {
        let expiry = now_secs() + self.token_ttl.as_secs();
        let nonce: u64 = rand::random();
        let payload = format!("{user}:{expiry}:{nonce:016x}");
        let sig = self.signer.sign(payload.as_bytes())?;
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(sig)
        ))
    }

    /// Validate `Authorization: Bearer ...`.
    pub fn verify_bearer(&self, header: &str) -> Result<Identity> {
        let token = strip_scheme(header, "bearer")
            .ok_or_else(|| Error::unauthenticated("expected 'Authorization: Bearer <token>'"))?
            .trim();
        let bad = || Error::unauthenticated("invalid or expired token; authenticate again");
        let (payload_b64, sig_b64) = token.split_once('.').ok_or_else(bad)?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| bad())?;
        let sig = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| bad())?;
        if !self.signer.verify(&payload, &sig) {
            return Err(bad());
        }
        let payload = String::from_utf8(payload).map_err(|_| bad())?;
        let mut parts = payload.rsplitn(3, ':');
        let _nonce = parts.next().ok_or_else(bad)?;
        let expiry: u64 = parts.next().and_then(|e| e.parse().ok()).ok_or_else(bad)?;
        let user = parts.next().ok_or_else(bad)?;
        if expiry < now_secs() {
            return Err(bad());
        }
        if !self.users.contains_key(user) {
            return Err(Error::PermissionDenied {
                message: format!("user '{user}' is no longer configured"),
            });
        }
        Ok(Identity {
            user: user.to_string(),
            token: Some(token.to_string()),
        })
    }
}

/// Hash a password for the config file.
pub fn hash_password(password: &str) -> Result<String> {
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| Error::Internal { message: e.to_string() })?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal { message: e.to_string() })
}

/// The user and password of `Authorization: Basic ...`.
fn basic_credentials(header: &str) -> Result<(String, String)> {
    let encoded = strip_scheme(header, "basic")
        .ok_or_else(|| Error::unauthenticated("expected 'Authorization: Basic' credentials in the handshake"))?;
    // Some clients (ADBC's Go driver) send base64 without padding.
    let encoded = encoded.trim().trim_end_matches('=');
    let malformed = || Error::unauthenticated("malformed Basic credentials");
    let decoded = STANDARD_NO_PAD.decode(encoded).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (user, password) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok((user.to_string(), password.to_string()))
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_and_tokens() {
        let hash = hash_password("s3cret").expect("hash");
        let auth = Authenticator::new(
            &[User {
                name: "alice".into(),
                password_hash: hash,
            }],
            Signer::new(b"k"),
            Duration::from_secs(60),
        )
        .expect("auth");
        let basic = format!("Basic {}", STANDARD.encode("alice:s3cret"));
        let (user, token) = auth.login_basic(&basic).expect("login");
        let unpadded = format!("Basic {}", STANDARD_NO_PAD.encode("alice:s3cret"));
        assert!(
            auth.login_basic(&unpadded).is_ok(),
            "unpadded base64 (ADBC Go) is accepted"
        );
        assert_eq!(user, "alice");
        let id = auth.verify_bearer(&format!("Bearer {token}")).expect("verify");
        assert_eq!(id.user, "alice");
        assert!(auth.login("alice", "wrong").is_err());
        assert!(auth.login("bob", "s3cret").is_err());
        assert!(auth.verify_bearer("Bearer x.y").is_err());
        let other = Authenticator::new(&[], Signer::new(b"other"), Duration::from_secs(60)).expect("auth");
        assert!(other.verify_bearer(&format!("Bearer {token}")).is_err());
    }

    #[tokio::test]
    async fn repeated_failures_lock_out_the_user_and_the_address_and_success_clears_them() {
        let auth = Authenticator::new(
            &[User {
                name: "alice".into(),
                password_hash: hash_password("s3cret").expect("hash"),
            }],
            Signer::new(b"k"),
            Duration::from_secs(60),
        )
        .expect("auth");
        let basic = |user: &str, password: &str| format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..FREE_FAILURES {
            let e = auth.login_basic_from(&basic("alice", "wrong"), Some(peer)).await;
            assert!(matches!(e, Err(Error::Unauthenticated { .. })), "{e:?}");
        }
        // Now refused without a check: even the right password, from anywhere.
        let locked = auth.login_basic_from(&basic("alice", "s3cret"), None).await;
        assert!(matches!(locked, Err(Error::TooManyLogins { .. })), "{locked:?}");
        let from_peer = auth.login_basic_from(&basic("bob", "x"), Some(peer)).await;
        assert!(matches!(from_peer, Err(Error::TooManyLogins { .. })), "{from_peer:?}");
        // Another user from another address is not affected.
        let e = auth.login_basic_from(&basic("carol", "x"), None).await;
        assert!(matches!(e, Err(Error::Unauthenticated { .. })), "{e:?}");

        // Once the lockout has passed, a success clears the count.
        for key in ["user:alice", "peer:10.0.0.1"] {
            if let Some(mut f) = auth.failures.get_mut(key) {
                f.last -= MAX_LOCKOUT;
            }
        }
        assert!(
            auth.login_basic_from(&basic("alice", "s3cret"), Some(peer))
                .await
                .is_ok()
        );
        assert!(auth.failures.get("user:alice").is_none());
    }
}
