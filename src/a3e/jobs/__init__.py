"""Background jobs on Huey: embedded (an SQLite queue in the data directory, consumed inside the
service) or scaled out (Redis, consumed by `a3e worker` processes on any machine).

Declare jobs with `job` (see `registry`); queue them with `enqueue` or, inside a request's
transaction, `enqueue_after_commit` (see `service`). Importing this package does no I/O and does
not import Huey: the queue is built from Settings when the service or a worker starts.
"""

from a3e.jobs.registry import JOB_MODULES, JobContext, TransientJobError, UnknownJob, crontab, job
from a3e.jobs.service import JobQueueUnavailable, JobRuntime, enqueue, enqueue_after_commit

__all__ = [
    "JOB_MODULES",
    "JobContext",
    "JobQueueUnavailable",
    "JobRuntime",
    "TransientJobError",
    "UnknownJob",
    "crontab",
    "enqueue",
    "enqueue_after_commit",
    "job",
]
