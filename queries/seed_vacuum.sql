-- seed_vacuum: used only by `instauth seed` (load-test data), never on the request path.
--
-- Leaves the freshly seeded tables as a database in service keeps them: planner statistics
-- current and the visibility map set, so the lookup's index-only scan of workspace_builds
-- reads no heap pages. Without it, a load test started right after seeding measures whether
-- autovacuum has got round to the new rows yet.
-- Parameters: none.
-- Result: none.
VACUUM (ANALYZE) workspaces, workspace_builds, workspace_resources, workspace_agents, provisioner_jobs
