//! Authentication: Basic credentials in the Flight handshake, answered with a
//! bearer token that every later call presents.
//!
//! Tokens are `base64url(user:expiry_unix:nonce).base64url(hmac)`, signed with
//! the server secret: no server-side token table, and tokens stay valid across
//! a restart. With no users configured, authentication is off.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Checks credentials and tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    users: HashMap<String, String>,
    signer: Signer,
    token_ttl: Duration,
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
        Ok(Self {
            users: map,
            signer,
            token_ttl,
        })
    }

    /// Whether authentication is required.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// Check `Authorization: Basic ...` and issue a token.
    pub fn login_basic(&self, header: &str) -> Result<(String, String)> {
        let encoded = strip_scheme(header, "basic")
            .ok_or_else(|| Error::unauthenticated("expected 'Authorization: Basic' credentials in the handshake"))?;
        // Some clients (ADBC's Go driver) send base64 without padding.
        let encoded = encoded.trim().trim_end_matches('=');
        let decoded = STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| Error::unauthenticated("malformed Basic credentials"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| Error::unauthenticated("malformed Basic credentials"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Error::unauthenticated("malformed Basic credentials"))?;
        self.login(user, password)
    }

    /// Check a user's password and issue a token.
    pub fn login(&self, user: &str, password: &str) -> Result<(String, String)> {
        let bad = || Error::unauthenticated("invalid user name or password");
        let hash = self.users.get(user).ok_or_else(bad)?;
        let parsed = PasswordHash::new(hash).map_err(|_| bad())?;
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .map_err(|_| bad())?;
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
}
