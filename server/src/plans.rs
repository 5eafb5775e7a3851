//! Plans made by GetFlightInfo, kept for the DoGet that redeems their ticket.
//!
//! A ticket stays self-contained: any server can redeem it by planning its SQL
//! again. This only spares the server that planned it from doing so twice (a
//! context, a parse and a logical plan: most of a short statement's cost).

use std::time::{Duration, Instant};

use contrail_planner::Planned;
use dashmap::DashMap;
use datafusion::prelude::SessionContext;

/// How long an unredeemed plan is kept.
const TTL: Duration = Duration::from_secs(60);
/// At most this many plans wait; past it, new ones are not kept.
const CAPACITY: usize = 1024;

struct Entry {
    ctx: SessionContext,
    planned: Planned,
    made: Instant,
}

/// Plans waiting for their DoGet, by ticket id.
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
    /// Keep the plan of ticket `id` (planned in `ctx`).
    pub(crate) fn insert(&self, id: String, ctx: SessionContext, planned: Planned) {
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
                ctx,
                planned,
                made: Instant::now(),
            },
        );
    }

    /// The plan of ticket `id`, once: a second DoGet of the same ticket plans again.
    pub(crate) fn take(&self, id: &str) -> Option<(SessionContext, Planned)> {
        let (_, e) = self.plans.remove(id)?;
        (e.made.elapsed() < TTL).then_some((e.ctx, e.planned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contrail_planner::{Engine, EngineOptions, SessionSettings};

    #[tokio::test]
    async fn a_plan_is_taken_once_and_capacity_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(EngineOptions::new(dir.path())).await.expect("engine");
        let settings = SessionSettings::default();
        let cache = PlanCache::default();
        for i in 0..CAPACITY + 10 {
            let ctx = engine.context(&settings).expect("context");
            let planned = engine.plan_with(&ctx, "SELECT 1").await.expect("plan");
            cache.insert(format!("t{i}"), ctx, planned);
        }
        // Full of fresh plans: the last ten were not kept.
        assert_eq!(cache.plans.len(), CAPACITY);
        assert!(cache.take(&format!("t{}", CAPACITY + 5)).is_none());
        assert!(cache.take("t0").is_some());
        assert!(cache.take("t0").is_none(), "a plan is handed out once");
    }
}
