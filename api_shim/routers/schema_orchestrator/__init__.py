"""Schema Orchestrator contract under /api/v1 (login is in routers/schema_auth.py), mapped onto the
`schema-migration` and `schema-rollback` flows: an execution IS a flow run, its id the execution id.

    databases.py   POST/GET /databases: clusters whose connection strings become tenant-owned blocks
    migrations.py  POST/GET /migrations, GET /migrations/{id}, POST /migrations/{id}/validate
    executions.py  POST /migrations/{id}/execute, GET .../executions/{executionId}, POST .../rollback
    approvals.py   POST /migrations/{id}/submit-approval, /approve, /reject

Who may do what: Developers and Admins create migrations (10 a minute each); executing, dry-running and
rolling back on a Production database is for DBAs and Admins, on other environments Developers too;
only Admins approve or reject, and never a migration they wrote; anyone with read access lists and reads.
Another tenant's migration or database is 404.

How approval and execution fit together. A migration needs approval when its risk (from its statements,
at creation) and its database's environment say so (tasks.schema_validate.approval_required). Either order
works, and both end in the same place:
  - execute first: the run starts, validates, and suspends waiting for a decision; the migration and the
    execution are PendingApproval and a Pending approval (expiring in 7 days, the run's own timeout) is
    linked to the run. submit-approval then answers 409 (one is pending already). approve resumes the run
    (`submit_decision`), which applies the change; reject resumes it into Rejected.
  - submit-approval first: a Pending approval with no run. approve marks it Approved (status Approved);
    the next execute starts a run that does not wait (require_approval false) and uses the approval up.
    An execute while the approval is still Pending starts a run that waits for it (its expiry carried over).
A run that decided by itself to wait (its risk on a replica was higher) gets an approval on approve or
submit-approval. An expired approval is 409 (code CONFLICT, message "Approval expired ...").
"""
from fastapi import APIRouter

from api_shim.routers.schema_orchestrator import approvals, databases, executions, migrations

router = APIRouter(tags=["schema orchestrator"])
for area in (databases.router, migrations.router, executions.router, approvals.router):
    router.include_router(area)
