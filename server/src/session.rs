//! Client sessions and the Flight session-option messages.
//!
//! A session is found by the `arrow_flight_session_id` cookie (what ADBC's
//! cookie middleware and the JDBC driver send back), else by the bearer token.
//! A request with neither gets a fresh session, announced with `Set-Cookie`
//! on that response (clients do not all read cookies from every call, so the
//! first response a client sees carries it). A session enters the registry
//! only when its settings change: until then it holds nothing a new session
//! would not, so clients that never send the cookie back (plain
//! `pyarrow.flight`, health checks) cost no memory. Idle sessions are evicted.
//!
//! Only this server mints session ids: an id is a random UUID and a MAC of it
//! under the server key, so a cookie a client made up is not a session. A
//! request with such a cookie gets a fresh session (and its `Set-Cookie`), as
//! one with none does. The registry is bounded, in all and per user; past a
//! bound the least recently used session is evicted (a client of an evicted
//! session goes on with the default settings, as after a restart).
//!
//! The messages below are Flight's session-option protos (Flight.proto,
//! `SetSessionOptionsRequest` and friends), which arrow-flight 59 does not
//! generate yet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contrail_planner::SessionSettings;
use dashmap::DashMap;

use crate::auth::Identity;
use crate::handle::Signer;

/// Sessions kept at most (each holds its settings: a few hundred bytes).
pub const MAX_SESSIONS: usize = 10_000;
/// Sessions kept at most per user (with authentication on).
pub const MAX_SESSIONS_PER_USER: usize = 1_000;

/// Name of the Flight SQL session cookie.
pub const SESSION_COOKIE: &str = "arrow_flight_session_id";

/// One client session.
#[derive(Debug)]
pub struct Session {
    id: String,
    /// Who it belongs to (with authentication on).
    user: Option<String>,
    settings: Mutex<SessionSettings>,
    last_used: AtomicU64,
    /// Kept in the registry: its settings have been changed.
    stored: AtomicBool,
    /// Needs a `Set-Cookie` on the current response.
    announce: AtomicBool,
}

impl Session {
    fn new(id: String, user: Option<String>, announce: bool) -> Self {
        Self {
            id,
            user,
            settings: Mutex::new(SessionSettings::default()),
            last_used: AtomicU64::new(now()),
            stored: AtomicBool::new(false),
            announce: AtomicBool::new(announce),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A copy of the current settings.
    pub fn settings(&self) -> SessionSettings {
        match self.settings.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replace the settings.
    pub fn set_settings(&self, settings: SessionSettings) {
        match self.settings.lock() {
            Ok(mut g) => *g = settings,
            Err(p) => *p.into_inner() = settings,
        }
    }

    /// Take (and clear) the need to send `Set-Cookie`.
    pub fn take_announce(&self) -> bool {
        self.announce.swap(false, Ordering::AcqRel)
    }
}

/// Per-request context the service wrapper attaches to each request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub identity: Option<Identity>,
    pub session: Arc<Session>,
    sessions: Sessions,
}

impl RequestContext {
    /// Persist a settings change, entering the session in the registry if it
    /// was not.
    pub fn update_settings(&self, settings: SessionSettings) {
        if self.session.stored.swap(true, Ordering::AcqRel) {
            self.session.set_settings(settings);
            return;
        }
        self.sessions.make_room(self.session.user.as_deref());
        // A concurrent request of the same new session may have entered its own
        // copy first: the registry's copy takes the settings.
        let stored = self
            .sessions
            .map
            .entry(self.session.id.clone())
            .or_insert_with(|| self.session.clone())
            .clone();
        stored.set_settings(settings.clone());
        self.session.set_settings(settings);
    }

    /// Whether this session has never had its settings changed: a new one,
    /// or one evicted or lost in a restart since.
    pub fn is_fresh(&self) -> bool {
        !self.session.stored.load(Ordering::Acquire)
    }

    /// Close the session: forget it and its settings.
    pub fn close(&self) {
        self.sessions.map.remove(&self.session.id);
        self.session.set_settings(SessionSettings::default());
    }
}

/// The session registry.
#[derive(Debug, Clone)]
pub struct Sessions {
    map: Arc<DashMap<String, Arc<Session>>>,
    idle_timeout: Duration,
    signer: Signer,
    max: usize,
    max_per_user: usize,
}

/// Hex characters of an id's MAC.
const ID_MAC_HEX: usize = 32;

impl Sessions {
    pub fn new(idle_timeout: Duration, signer: Signer) -> Self {
        Self {
            map: Arc::new(DashMap::new()),
            idle_timeout,
            signer,
            max: MAX_SESSIONS,
            max_per_user: MAX_SESSIONS_PER_USER,
        }
    }

    /// A new session id: a random UUID and its MAC under the server key.
    fn mint(&self) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        format!("{id}.{}", self.mac_of(&id))
    }

    fn mac_of(&self, id: &str) -> String {
        let mac = self.signer.sign(id.as_bytes()).unwrap_or_default();
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        hex[..ID_MAC_HEX.min(hex.len())].to_string()
    }

    /// Whether `id` is one this server minted (with this key).
    fn minted(&self, id: &str) -> bool {
        let Some((uuid, mac)) = id.split_once('.') else {
            return false;
        };
        let expected = self.mac_of(uuid);
        if expected.is_empty() {
            return false;
        }
        // Constant time: the comparison must not tell how much of a guess was right.
        mac.len() == expected.len() && mac.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Make room for one more stored session of `user`: past a bound, the least
    /// recently used session (of that user, or of all) is evicted.
    fn make_room(&self, user: Option<&str>) {
        if let Some(user) = user {
            let of_user = self.map.iter().filter(|s| s.user.as_deref() == Some(user)).count();
            if of_user >= self.max_per_user {
                self.evict_least_recent(|s| s.user.as_deref() == Some(user));
            }
        }
        if self.map.len() >= self.max {
            self.evict_least_recent(|_| true);
        }
    }

    fn evict_least_recent(&self, among: impl Fn(&Session) -> bool) {
        let oldest = self
            .map
            .iter()
            .filter(|s| among(s.value()))
            .min_by_key(|s| s.last_used.load(Ordering::Relaxed))
            .map(|s| s.key().clone());
        if let Some(id) = oldest {
            self.map.remove(&id);
            tracing::debug!(session = %id, "session evicted: the registry is full");
        }
    }

    /// Find or create the session for a request. A cookie this server did not
    /// mint is ignored: the request gets a new session.
    pub fn resolve(&self, cookie: Option<&str>, identity: Option<Identity>) -> RequestContext {
        let cookie = cookie.filter(|id| self.minted(id));
        let key = cookie.map(str::to_string).or_else(|| {
            identity
                .as_ref()
                .and_then(|i| i.token.as_ref())
                .map(|t| format!("token-{}", short_hash(t)))
        });
        let found = key
            .as_ref()
            .and_then(|key| self.map.get(key).map(|s| Arc::clone(s.value())));
        let user = identity.as_ref().map(|i| i.user.clone());
        let session = match (found, key) {
            (Some(s), _) => {
                s.last_used.store(now(), Ordering::Relaxed);
                s
            }
            (None, Some(key)) => Arc::new(Session::new(key, user, false)),
            (None, None) => Arc::new(Session::new(self.mint(), user, true)),
        };
        RequestContext {
            identity,
            session,
            sessions: self.clone(),
        }
    }

    /// Drop sessions idle for longer than the timeout.
    pub fn evict_idle(&self) -> usize {
        let cutoff = now().saturating_sub(self.idle_timeout.as_secs());
        let before = self.map.len();
        self.map.retain(|_, s| s.last_used.load(Ordering::Relaxed) >= cutoff);
        before - self.map.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The session id in a `Cookie` header, if any.
pub fn cookie_session_id(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---- Flight session-option messages ----

/// `arrow.flight.protocol.SessionOptionValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionOptionValue {
    #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<OptionValue>,
}

/// The value of a session option.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OptionValue {
    #[prost(string, tag = "1")]
    StringValue(String),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(sfixed64, tag = "3")]
    Int64Value(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    #[prost(message, tag = "5")]
    StringListValue(StringListValue),
}

/// `SessionOptionValue.StringListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringListValue {
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

/// `SetSessionOptionsRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// `SetSessionOptionsResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetSessionOptionsError>,
}

/// `SetSessionOptionsResult.Error`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsError {
    /// 1 = invalid name, 2 = invalid value, 3 = error.
    #[prost(int32, tag = "1")]
    pub value: i32,
}

/// `GetSessionOptionsResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// `CloseSessionResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseSessionResult {
    /// 1 = closed.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// A session option value as the string our settings store.
pub fn option_to_string(v: &SessionOptionValue) -> Option<String> {
    Some(match v.option_value.as_ref()? {
        OptionValue::StringValue(s) => s.clone(),
        OptionValue::BoolValue(b) => b.to_string(),
        OptionValue::Int64Value(i) => i.to_string(),
        OptionValue::DoubleValue(d) => d.to_string(),
        OptionValue::StringListValue(l) => l.values.join(","),
    })
}

/// A stored setting as a typed session option value.
pub fn string_to_option(s: &str) -> SessionOptionValue {
    let v = if let Ok(b) = s.parse::<bool>() {
        OptionValue::BoolValue(b)
    } else if let Ok(i) = s.parse::<i64>() {
        OptionValue::Int64Value(i)
    } else {
        OptionValue::StringValue(s.to_string())
    };
    SessionOptionValue { option_value: Some(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        assert_eq!(cookie_session_id("a=b; arrow_flight_session_id=xyz; c=d"), Some("xyz"));
        assert_eq!(cookie_session_id("a=b"), None);
        assert_eq!(cookie_session_id("arrow_flight_session_id="), None);
    }

    fn sessions() -> Sessions {
        Sessions::new(Duration::from_secs(60), Signer::new(b"test key"))
    }

    #[test]
    fn new_sessions_are_announced_once() {
        let sessions = sessions();
        let rc = sessions.resolve(None, None);
        assert!(rc.session.take_announce());
        assert!(!rc.session.take_announce());
        assert!(rc.is_fresh());
        let mut s = rc.session.settings();
        s.schema = Some("x".into());
        rc.update_settings(s);
        assert!(!rc.is_fresh());
        assert_eq!(sessions.len(), 1);
        let again = sessions.resolve(Some(rc.session.id()), None);
        assert_eq!(again.session.settings().schema.as_deref(), Some("x"));
        assert!(!again.is_fresh());
    }

    /// Requests that never change a setting leave nothing behind, with or
    /// without a cookie, so clients that ignore cookies cost no memory.
    #[test]
    fn sessions_without_settings_are_not_kept() {
        let sessions = sessions();
        for _ in 0..100 {
            assert!(sessions.resolve(None, None).is_fresh());
        }
        // A session the client has the cookie of (minted here, not stored:
        // evicted, or from before a restart).
        let id = sessions.mint();
        let cookie = sessions.resolve(Some(&id), None);
        assert_eq!(cookie.session.id(), id);
        assert!(!cookie.session.take_announce(), "the client has the cookie already");
        assert!(sessions.is_empty());

        // Two concurrent requests of one new session, each with a SET: one copy
        // is kept, with the last SET's settings.
        let other = sessions.resolve(Some(&id), None);
        let mut s = cookie.session.settings();
        s.schema = Some("tpch".into());
        cookie.update_settings(s);
        let mut s = other.session.settings();
        s.catalog = Some("other".into());
        other.update_settings(s.clone());
        let stored = sessions.resolve(Some(&id), None).session.settings();
        assert_eq!(stored.catalog.as_deref(), Some("other"));
        assert_eq!(sessions.len(), 1);
    }

    fn set_schema(rc: &RequestContext, schema: &str) {
        let mut s = rc.session.settings();
        s.schema = Some(schema.into());
        rc.update_settings(s);
    }

    #[test]
    fn made_up_session_ids_are_not_sessions() {
        let sessions = sessions();
        let forged = sessions.resolve(Some("made-up"), None);
        assert_ne!(forged.session.id(), "made-up");
        assert!(forged.session.take_announce(), "a new session, announced");
        // A minted id with its MAC changed, and one minted under another key.
        let id = sessions.mint();
        let tampered = format!("{}0", &id[..id.len() - 1]);
        let other_key = Sessions::new(Duration::from_secs(60), Signer::new(b"other")).mint();
        for cookie in [tampered.as_str(), other_key.as_str()] {
            let rc = sessions.resolve(Some(cookie), None);
            set_schema(&rc, "x");
            assert_ne!(rc.session.id(), cookie);
        }
        assert!(sessions.resolve(Some(&id), None).session.id() == id);
    }

    #[test]
    fn the_registry_is_bounded_and_evicts_the_least_recently_used() {
        let mut sessions = sessions();
        sessions.max = 3;
        sessions.max_per_user = 2;
        let user = |name: &str| {
            Some(Identity {
                user: name.into(),
                token: None,
            })
        };
        let mut ids = Vec::new();
        for i in 0..2 {
            let rc = sessions.resolve(None, user("alice"));
            rc.session.last_used.store(i, Ordering::Relaxed);
            set_schema(&rc, "a");
            ids.push(rc.session.id().to_string());
        }
        // Alice's third session evicts her least recently used.
        let third = sessions.resolve(None, user("alice"));
        set_schema(&third, "a");
        assert_eq!(sessions.len(), 2);
        assert!(sessions.resolve(Some(&ids[0]), user("alice")).is_fresh(), "evicted");
        assert!(!sessions.resolve(Some(&ids[1]), user("alice")).is_fresh());
        // Past the bound of all sessions, the least recently used goes.
        for name in ["bob", "carol"] {
            let rc = sessions.resolve(None, user(name));
            set_schema(&rc, "b");
        }
        assert_eq!(sessions.len(), 3);
    }
}
