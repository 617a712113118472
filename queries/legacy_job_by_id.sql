-- legacy_job_by_id: replay of Coder's GetProvisionerJobByID (docs/coder-contract.md §4.1, label J).
-- Built only with the `legacy` feature, for benchmarks.
--
-- Parameter: $1 (uuid) job id.
-- Result: at most one row; `kind` is the job type as text. Index: provisioner_jobs_pkey (id).
SELECT
    id,
    type::text AS "kind!"
FROM provisioner_jobs
WHERE id = $1
