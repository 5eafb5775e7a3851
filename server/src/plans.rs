//! Plans kept for the next call that would make them again: GetFlightInfo's for
//! the DoGet that redeems its ticket, and CreatePreparedStatement's for the
//! first GetFlightInfo of its handle (ADBC and the JDBC driver prepare every
//! query, then execute it at once).
//!
//! Tickets and handles stay self-contained: any server can redeem them by
//! planning their SQL again. This only spares the server that planned one from
//! doing so twice (a parse and a logical plan: most of a short
//! statement's cost, ~1.3 ms for a TPC-H query). A plan is handed out once, and
//! only to a call with the settings it was planned under while the catalog is
//! at the version it was planned at (no table created, dropped, cached or
//! uncached since): what planning again would make.

use std::time::{Duration, Instant};

use contrail_planner::{Engine, Planned, SessionSettings, StatementContext};
use dashmap::DashMap;

use crate::error::Result;

/// How long an unredeemed plan is kept.
const TTL: Duration = Duration::from_secs(60);
/// At most this many plans wait; past it, new ones are not kept.
const CAPACITY: usize = 1024;

/// A plan, the context it was made in and the catalog version read before it
/// was made (`Catalog::version`).
pub(crate) struct Kept {
    pub(crate) catalog: u64,
    pub(crate) context: StatementContext,
    pub(crate) planned: Planned,
}

impl Kept {
    /// Plan `sql` in the context of `settings`, the catalog's version read
    /// first (a table dropped while planning then makes the plan stale).
    pub(crate) async fn plan(engine: &Engine, settings: &SessionSettings, sql: &str) -> Result<Self> {
        let catalog = engine.catalog().version();
        let context = engine.statement(settings)?;
        let planned = engine.plan_with(&context, sql).await?;
        Ok(Self {
            catalog,
            context,
            planned,
        })
    }
}

struct Entry {
    settings: SessionSettings,
    kept: Kept,
    made: Instant,
}

/// Plans waiting for their next call, by ticket or handle id.
#[derive(Default)]
pub(crate) struct PlanCache {
    plans: DashMap<String, Entry>,
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanCache").field("plans", &self.plans.len()).finish()
    }
}

impl PlanCache {
    /// Keep the plan of ticket or handle `id`, made from `settings`.
    pub(crate) fn insert(&self, id: String, settings: SessionSettings, kept: Kept) {
        if self.plans.len() >= CAPACITY {
            // Clients that never redeem (schema lookups) leave plans behind.
            self.plans.retain(|_, e| e.made.elapsed() < TTL);
            if self.plans.len() >= CAPACITY {
                return;
            }
        }
        self.plans.insert(
            id,
            Entry {
                settings,
                kept,
                made: Instant::now(),
            },
        );
    }

    /// Drop the plans kept past their TTL (tickets never redeemed, handles
    /// never executed or closed), which hold their tables and literals.
    pub(crate) fn evict_expired(&self) {
        // None only within a TTL of the clock's start: nothing is that old.
        if let Some(cutoff) = Instant::now().checked_sub(TTL) {
            self.evict_made_before(cutoff);
        }
    }

    fn evict_made_before(&self, cutoff: Instant) {
        self.plans.retain(|_, e| e.made >= cutoff);
    }

    /// Drop the plan of `id`, if still kept.
    pub(crate) fn forget(&self, id: &str) {
        self.plans.remove(id);
    }

    /// The plan of `id`, once (a second DoGet of the same ticket plans again),
    /// if it was made with `settings` (a session may change them in between)
    /// at catalog version `catalog`.
    pub(crate) fn take(&self, id: &str, settings: &SessionSettings, catalog: u64) -> Option<Kept> {
        let (_, e) = self.plans.remove(id)?;
        let current = e.made.elapsed() < TTL && e.settings == *settings && e.kept.catalog == catalog;
        current.then_some(e.kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contrail_planner::{Engine, EngineOptions, SessionSettings};

    async fn plan(engine: &Engine, settings: &SessionSettings) -> Kept {
        Kept::plan(engine, settings, "SELECT 1").await.expect("plan")
    }

    #[tokio::test]
    async fn a_plan_is_taken_once_and_capacity_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(EngineOptions::new(dir.path())).await.expect("engine");
        let settings = SessionSettings::default();
        let version = engine.catalog().version();
        let cache = PlanCache::default();
        for i in 0..CAPACITY + 10 {
            cache.insert(format!("t{i}"), settings.clone(), plan(&engine, &settings).await);
        }
        // Full of fresh plans: the last ten were not kept.
        assert_eq!(cache.plans.len(), CAPACITY);
        assert!(cache.take(&format!("t{}", CAPACITY + 5), &settings, version).is_none());
        assert!(cache.take("t0", &settings, version).is_some());
        assert!(
            cache.take("t0", &settings, version).is_none(),
            "a plan is handed out once"
        );
    }

    #[tokio::test]
    async fn expired_plans_are_dropped_by_the_sweep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(EngineOptions::new(dir.path())).await.expect("engine");
        let settings = SessionSettings::default();
        let cache = PlanCache::default();
        cache.insert("old".into(), settings.clone(), plan(&engine, &settings).await);
        let cutoff = Instant::now();
        cache.insert("new".into(), settings.clone(), plan(&engine, &settings).await);
        cache.evict_made_before(cutoff);
        let version = engine.catalog().version();
        assert!(cache.take("old", &settings, version).is_none());
        assert!(cache.take("new", &settings, version).is_some());
    }

    #[tokio::test]
    async fn a_plan_is_only_handed_out_where_planning_again_would_make_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(EngineOptions::new(dir.path())).await.expect("engine");
        let settings = SessionSettings::default();
        let cache = PlanCache::default();
        let mut other = SessionSettings::default();
        other.schema = Some("tpch".to_string());

        cache.insert("p".to_string(), settings.clone(), plan(&engine, &settings).await);
        let version = engine.catalog().version();
        assert!(
            cache.take("p", &other, version).is_none(),
            "planned under other settings"
        );
        assert!(cache.take("p", &settings, version).is_none(), "and dropped");

        cache.insert("p".to_string(), settings.clone(), plan(&engine, &settings).await);
        let mut session = settings.clone();
        engine
            .sql(&mut session, "CREATE TABLE t AS SELECT 1 AS x")
            .await
            .expect("create");
        let after = engine.catalog().version();
        assert_ne!(after, version, "a new table changes the catalog's version");
        assert!(
            cache.take("p", &settings, after).is_none(),
            "planned before the table existed"
        );
    }
}
