"""Workflow(id): a workflow's status, result, steps and cancellation; Workflows(): the workflows on the namespace.
Re-exported by api.py. What a workflow is and guarantees is in jiggler_gevent/workflow.py."""

import time
from typing import cast

from .. import config, scripts
from .. import workflow as workflow_mod
from .jobs import Job, Paged


class Workflow(workflow_mod.Workflow):
    """A workflow by its id: `status`, `result(timeout)`, `steps`, `cancel()`. LookupError when unknown or expired."""

    def cancel(self) -> bool:
        """Cancel the workflow: no step not yet pushed ever is, and the pushed steps that have not ended are cancelled
        as api.Job.cancel does (a running one is stopped at its next safe point, also while it computes). True when
        the workflow was running; False when it had ended already (nothing is changed then)."""
        self._read()  # LookupError for an unknown workflow
        pushed = scripts.register(self.redis).workflow_cancel(
            keys=[self.key], args=[time.time(), config.BATCH_TTL], client=self.redis
        )
        if not pushed:
            return False
        listed = self.steps
        for index in cast("list[str]", pushed):
            Job(listed[int(index)].jid).cancel()
        return True


class Workflows(Paged):
    """The workflows on the namespace, newest first (those expired are left out)."""

    def __init__(self) -> None:
        cfg = config.current()
        self.redis, self.keys = config.redis_client(cfg.url), cfg.keys

    def __len__(self) -> int:
        return int(self.redis.zcard(self.keys.workflows))

    def page(self, offset: int = 0, limit: int = 25) -> list[Workflow]:
        """Up to `limit` workflows from the `offset`-th newest."""
        ids = cast("list[str]", self.redis.zrevrange(self.keys.workflows, offset, offset + limit - 1))
        found = []
        for wid in ids:
            if self.redis.exists(self.keys.workflow(wid)):
                found.append(Workflow(wid))
            else:
                self.redis.zrem(self.keys.workflows, wid)
        return found
