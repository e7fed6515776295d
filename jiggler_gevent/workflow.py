"""Workflows: chain, group and chord of signatures (`job.s(...)`, `job.si(...)`), nesting freely into a DAG.

    wf = chain(download.s(url), group(parse.s(), index.s()), store.s(bucket="b")).enqueue()
    print(wf.id, wf.result(timeout=60))

A chain runs its steps one after the other, each receiving the previous result as its first argument (a group's
result is the list of its members' results, in order); a group runs its members in parallel; a chord is a group
followed by one step. A `.si(...)` step receives nothing but its own arguments.

Guarantees (scripts/workflow_push.lua, lib_workflow.lua): enqueueing is one atomic script call, which writes the
whole workflow and pushes the steps that wait for nothing; nothing is written when it fails. Every later step is
pushed exactly once, by the settle of the last step it waits for, in the same atomic step that records that step's
first success; each step runs at least once, like every job (after a SIGKILL, the killed worker's step runs again,
and only its first success counts). A step that ends dead, dropped or cancelled fails the workflow: no step after
it is pushed. The steps are the members of a batch with the workflow's id, so the workflow's data expires as a
batch's does, and each step is tracked (its status and result kept as with `result_ttl`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from . import config, middleware, wire
from . import payload as payload_mod
from .connect import MAX_BLOCK, block_for
from .errors import JobCancelled, JobFailed
from .job import JobFunction, Signature

Shape: TypeAlias = "int | list[Shape]"  # the input of a step: a step's result (its index), or a list of inputs
STATUSES = ("running", "succeeded", "failed", "cancelled")
ENDED = ("done", "dead", "cancelled")  # a step's job statuses that never change again
MARK = "jiggler-workflow-input-"  # + the workflow id: where a step's payload receives the previous result


class Canvas:
    """A chain or group of steps; `enqueue()` writes it as one workflow."""

    def __init__(self, kind: str, steps: Iterable[object]) -> None:
        self.steps: tuple[Signature | Canvas, ...] = tuple(_checked(kind, list(steps)))
        self.kind = kind

    def enqueue(self) -> Workflow:
        """Write the workflow and push its first steps, in one atomic step; the handle of the workflow."""
        plan = Plan()
        out = plan.place(self, None)
        return Workflow(plan.push(out))

    def __repr__(self) -> str:
        return f"{self.kind}({', '.join(map(repr, self.steps))})"


def _checked(kind: str, steps: list[object]) -> list[Signature | Canvas]:
    if not steps:
        raise ValueError(f"a {kind} needs at least one step")
    for index, step in enumerate(steps):
        if isinstance(step, JobFunction):
            raise TypeError(f"{kind} step {index} is the job {step.name} itself: give its signature, job.s(...)")
        if not isinstance(step, (Signature, Canvas)):
            raise TypeError(
                f"{kind} step {index} must be a signature (a @job function's .s(...) or .si(...)) or a chain, group "
                f"or chord, not {type(step).__name__} {step!r:.80}"
            )
    return cast("list[Signature | Canvas]", steps)


def chain(*steps: Signature | Canvas) -> Canvas:
    """Steps one after the other: each starts once the previous one has succeeded, with its result first."""
    return Canvas("chain", steps)


def group(*steps: Signature | Canvas | Iterable[Signature | Canvas]) -> Canvas:
    """Steps in parallel (given as arguments or as one iterable); the group's result is their results' list."""
    if len(steps) == 1 and not isinstance(steps[0], (Signature, Canvas, JobFunction)):
        return Canvas("group", cast("Iterable[object]", steps[0]))
    return Canvas("group", steps)


def chord(header: Iterable[Signature | Canvas], body: Signature | Canvas) -> Canvas:
    """A group, then `body`, which receives the list of the group's results."""
    return Canvas("chain", (group(header), body))


@dataclass
class Planned:
    """One step of a workflow being written: its signature, jid and the shape of its input (None: the first)."""

    sig: Signature
    jid: str
    shape: Shape | None


def leaves(shape: Shape | None) -> list[int]:
    """The steps an input shape waits for, in order."""
    if shape is None:
        return []
    if isinstance(shape, int):
        return [shape]
    return [leaf for member in shape for leaf in leaves(member)]


class Plan:
    """A workflow laid out as steps, each with the shape of its input; then written in one script call."""

    def __init__(self) -> None:
        self.steps: list[Planned] = []
        self.id = payload_mod.new_jid()

    def place(self, item: Signature | Canvas, shape: Shape | None) -> Shape:
        """Add `item`'s steps, which take `shape` as input; the shape of `item`'s result."""
        if isinstance(item, Signature):
            self.steps.append(Planned(item, payload_mod.new_jid(), shape))
            return len(self.steps) - 1
        if item.kind == "group":
            return [self.place(member, shape) for member in item.steps]
        out = self.place(item.steps[0], shape)
        for step in item.steps[1:]:
            out = self.place(step, out)
        return out

    def push(self, out: Shape) -> str:
        """Write the workflow whose result has shape `out`; its id. TypeError or ValueError for a step that cannot
        be a step (its arguments do not bind, a unique job), before anything is written."""
        keys = config.current().keys
        encode = wire.of(keys).encode
        payloads = [self._payload(i, step) for i, step in enumerate(self.steps)]
        chain_ = middleware.client
        if chain_.entries:
            for p in payloads:
                chain_.before("before_push", p)
        token = payload_mod.encode(MARK + self.id)
        fields: list[str] = ["status", "running", "created_at", repr(time.time()), "total", str(len(self.steps))]
        fields += ["left", str(len(self.steps)), "out", payload_mod.encode(out)]
        fields += ["steps", payload_mod.encode([[s.jid, s.sig.name] for s in self.steps])]
        after: dict[int, list[int]] = {}
        for i, (step, p) in enumerate(zip(self.steps, payloads, strict=True)):
            head, _, tail = encode(p).partition(token)
            fields += [f"h{i}", head, f"q{i}", p["queue"], f"j:{step.jid}", str(i)]
            if tail:
                fields += [f"t{i}", tail]
            if step.shape is not None:
                fields += [f"in{i}", payload_mod.encode(step.shape), f"w{i}", str(len(leaves(step.shape)))]
            for before in leaves(step.shape):
                after.setdefault(before, []).append(i)
        fields += [f for i, nexts in after.items() for f in (f"n{i}", ",".join(map(str, nexts)))]
        first = [i for i, step in enumerate(self.steps) if step.shape is None]
        from .client import current  # imports redis: loaded at the first enqueue, not with the package

        current().push_workflow(self.id, fields, self._batch_fields(keys.workflow(self.id)), first)
        if chain_.entries:
            for p in payloads:
                chain_.after("after_push", p)
        return self.id

    def _payload(self, index: int, step: Planned) -> dict[str, Any]:
        sig, receives = step.sig, step.shape is not None and not step.sig.immutable
        if sig.call.unique_for is not None:
            raise ValueError(f"workflow step {index} ({sig!r}): a unique job (unique_for) cannot be a workflow step")
        args = [MARK + self.id, *sig.args] if receives else list(sig.args)
        try:
            p = sig.call._payload(args, sig.kwargs)
        except TypeError as exc:
            hint = " (it receives the previous result as its first argument; .si(...) passes nothing)"
            raise TypeError(f"workflow step {index} ({sig!r}): {exc}{hint if receives else ''}") from None
        del p["enqueued_at"]  # set by the script that pushes it
        p["jid"], p["bid"] = step.jid, self.id
        p["result_ttl"] = max(sig.call.result_ttl or 0, config.BATCH_TTL)  # each step's status lives as long
        return p

    def _batch_fields(self, workflow_key: str) -> list[str]:
        """The hash of the batch whose members are the steps: every step pending from the start."""
        total = str(len(self.steps))
        return [
            "description",
            f"workflow {self.id}",
            "created_at",
            repr(time.time()),
            "total",
            total,
            "pending",
            total,
            "workflow",
            workflow_key,
        ]


@dataclass
class Step:
    """One step of a workflow: its index, jid, job name, status and the indexes of the steps it waits for.
    Status: a job's ("queued", "running", "retrying", "done", "dead", "cancelled"), "waiting" while steps before
    it run, "skipped" when the workflow ended before it was pushed."""

    index: int
    jid: str
    name: str
    status: str
    after: list[int]

    def as_dict(self) -> dict[str, Any]:
        """Its fields, as `gjiggler workflow --json` prints them."""
        return {"index": self.index, "jid": self.jid, "name": self.name, "status": self.status, "after": self.after}


class Workflow:
    """A workflow by its id: `status`, `result(timeout)`, `steps` (api.Workflow adds `cancel()`).
    LookupError when it is unknown or has expired."""

    def __init__(self, wid: str) -> None:
        if not isinstance(wid, str):
            raise TypeError(f"a workflow id must be a string, not {type(wid).__name__}")
        self.id = wid
        cfg = config.current()
        self.redis, self.keys = config.redis_client(cfg.url), cfg.keys
        self.key = self.keys.workflow(wid)

    def _read(self, *fields: str) -> list[str | None]:
        values = cast("list[str | None]", self.redis.hmget(self.key, ["status", *fields]))
        if values[0] is None:
            days = config.BATCH_TTL // 86400
            raise LookupError(f"no workflow {self.id!r} (unknown, or expired {days} days after its last change)")
        return values

    @property
    def status(self) -> str:
        """One of "running", "succeeded", "failed", "cancelled"."""
        return cast(str, self._read()[0])

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow to end and return its last step's result (a group's: the list of its members');
        JobFailed or JobCancelled as api.Job.result raises them, TimeoutError when `timeout` seconds pass first.
        Blocks on Redis (BLMOVE) without polling."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = self.keys.workflow_done(self.id)
        while True:
            status, result, error, jid = self._read("result", "error", "failed_jid")
            if status == "succeeded":
                return json.loads(result or "null")
            if status in ("failed", "cancelled"):
                raise self._ended(status, error or "{}", jid or self.id)
            left = MAX_BLOCK if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"workflow {self.id} did not end within {timeout}s (status: {status})")
            wait: Any = block_for(left)  # redis-py types BLMOVE's timeout as int; Redis takes fractions
            self.redis.blmove(done, done, wait, "RIGHT", "LEFT")

    @staticmethod
    def _ended(status: str, error: str, jid: str) -> Exception:
        details = json.loads(error) if error else {}
        if status == "cancelled" or details.get("error_class") == "JobCancelled":
            return JobCancelled(jid)
        return JobFailed(jid, str(details.get("error_class", "")), str(details.get("error_message", "")))

    @property
    def steps(self) -> list[Step]:
        """Every step, in the order they were given, with its status now."""
        fields = cast("dict[str, str]", self.redis.hgetall(self.key))
        if not fields:
            self._read()  # raises LookupError
        listed: list[list[str]] = json.loads(fields.get("steps", "[]"))
        pipe = self.redis.pipeline(transaction=False)
        for jid, _ in listed:
            pipe.hget(self.keys.result(jid), "status")
            pipe.zscore(self.keys.cancelled, jid)
        replies = pipe.execute()
        running = fields.get("status") == "running"
        steps = []
        for i, (jid, name) in enumerate(listed):
            status, cancelled = cast("str | None", replies[2 * i]), replies[2 * i + 1] is not None
            if f"s{i}" not in fields:
                status = "waiting" if running else "skipped"
            elif cancelled and status not in ENDED:
                status = "cancelled"  # as api.Job(jid).status says it: its worker is stopping it
            after = leaves(json.loads(fields[f"in{i}"])) if f"in{i}" in fields else []
            steps.append(Step(i, jid, name, status or "queued", after))
        return steps

    def summary(self) -> dict[str, Any]:
        """id, status, created_at, finished_at (None while running), total (steps) and succeeded (how many)."""
        status, created, finished, total, left = self._read("created_at", "finished_at", "total", "left")
        row: dict[str, Any] = {"id": self.id, "status": status, "created_at": float(created or 0)}
        row["finished_at"] = float(finished) if finished else None
        row["total"] = int(total or 0)
        row["succeeded"] = row["total"] - int(left or 0)
        return row

    def info(self) -> dict[str, Any]:
        """The summary, the result (succeeded) or error and failed_jid (failed, cancelled: the step that ended it, None
        for a workflow cancelled as a whole), and every step."""
        info = self.summary()
        _, result, error, jid = self._read("result", "error", "failed_jid")
        if result is not None:
            info["result"] = json.loads(result)
        if error:
            info["error"] = json.loads(error)
            info["failed_jid"] = jid  # None when the workflow itself was cancelled
        info["steps"] = [s.as_dict() for s in self.steps]
        return info

    def __repr__(self) -> str:
        return f"<Workflow {self.id}>"
