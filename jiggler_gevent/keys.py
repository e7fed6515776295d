"""Every Redis key jiggler_gevent uses, and nowhere else.

Under the namespace NS (default `jiggler`; on a Redis Cluster, a `redis+cluster://` URL, NS is `{jiggler}`: the hash
tag puts every key of the namespace in one slot, so each Lua script runs on one node):
  NS:queues                 set of queue names ever pushed to
  NS:queue:<name>           list of JSON payloads; clients LPUSH, workers pop from the right
  NS:prio:<name>            sorted set of the waiting jobs of that queue with a priority other than 0, payload ->
                            -priority * 2^40 + 2^39 +/- a sequence number: the lowest starts first
  NS:group:<name>:<group>   list of the waiting jobs of one group of that queue (`group`), pushed and popped as a
                            queue's list
  NS:groups:<name>          sorted set, the rotation of that queue's groups with jobs waiting: group -> its turn
                            (the lowest goes next); the member '' stands for the queue's own list
  NS:seq                    counter, the sequence of the pushes to the three keys above (and of the turns); its
                            existence tells the fetch script that priorities or groups are in use on the namespace.
                            The scripts make these four names from the queue's key (scripts/lib_ready.lua)
  NS:schedule               sorted set, payload -> unix time it is due (enqueue_in / enqueue_at)
  NS:retry                  sorted set, payload -> unix time of the next attempt
  NS:dead                   sorted set, payload -> unix time it died
  NS:processes              set of process identities that have started and not stopped cleanly
  NS:deaths                 sorted set, identity of a process that died holding several jobs -> when its death was
                            recovered (ms, Redis clock); kept for the blame window (server/recovery.py)
  NS:process:<identity>     hash, the heartbeat of one process; expires when the process stops beating
  NS:work:<identity>        hash, jobs running now in that process (for display)
  NS:working:<identity>     list, raw payloads fetched by that process and not yet acknowledged
  NS:stat:processed|failed  counters, and NS:stat:processed:<YYYY-MM-DD> per day
  NS:wake                   sorted set with at most one member: whatever pushes to a queue adds it, and a worker
                            idle on several queues blocks on it (BZPOPMIN), since one BLMOVE waits on one queue
  NS:paused                 set of the keys of the paused queues (NS:queue:<name>, or Sidekiq's queue:<name>): the
                            fetch script takes nothing from them (api.Queue.pause, resume)
  NS:cron:last              hash, periodic entry name -> the last fire time enqueued for it (unix seconds)
  NS:cron:table:<sig>       JSON list of the periodic entries of the processes whose table has signature <sig>;
                            each of their heartbeats renews its TTL (the heartbeat's), so it expires with the last
  NS:cron:leader:<sig>      the scheduler lease of those processes: the holder's identity, with a TTL (PX)
  NS:cron:seen:<sig>        the last time (Redis clock, ms) one of their schedulers asked for that lease
  NS:unique:<digest>        a unique job's lock: the jid holding it, with a TTL; <digest> hashes the job's wire
                            name, arguments, keyword arguments and queue (the payload's `unique_key`)
  NS:debounce:<key>         the payload (as stored) of the debounced job waiting for <key> (default: its wire name
                            and queue), replaced by each enqueue with that key while it waits (scripts/debounce.lua)
  NS:limits                 hash, limiter name -> JSON {kind, size, per}: every limiter used on the namespace (a
                            group's, 'group.<sha1>', only while one of its slots is in use: scripts/lib_holds.lua)
  NS:limit:<name>           a limiter's state: concurrent, sorted set holder token -> expiry (ms); window, sorted
                            set acquisition -> time (µs); bucket, hash {interval, count} (all on Redis' clock)
  NS:limit:<name>:free      list a concurrent limiter's release pushes to, and its waiters block on (BLPOP)
  NS:limit:<name>:parked    list of the payloads (as stored in NS:schedule) of jobs rescheduled because that
                            concurrent limiter was full; each release moves the first still scheduled to its queue
  NS:holds:<identity>       hash, what one worker process holds besides its jobs: 'slot:<limiter>:<token>' ->
                            '<size>,<lock timeout ms>', 'lease:<sig>' -> '1' (scripts/lib_holds.lua); the
                            recovery that declares the process dead gives them back
  NS:result:<jid>           hash, the status of a job with `result_ttl` (status, result or error, times); kept
                            RESULT_PENDING_TTL while the job waits or runs, `result_ttl` seconds after it ends
  NS:result:<jid>:done      list with one member once that job has ended; result() waits on it with a BLMOVE
                            from the list to itself, so every waiter wakes and the member stays
  NS:state:<jid>            hash, what a job reports while it runs (server/iteration.py): progress, message, and
                            for an iterable job cursor (JSON) and iterations; kept config.ITERATION_TTL after each
                            write while the job is unfinished, config.PROGRESS_TTL after it returned (and for a
                            job that only reports progress)
  NS:djtask:<jid>           hash, a Django task enqueued through the tasks backend (contrib/django/task_record.py):
                            task (JSON: its path, priority, queue, backend, takes_context, run_after), args and
                            kwargs (JSON), enqueued_at, written with the job by push_each.lua; once it ran,
                            worker_ids and errors (JSON). Kept as long as the job's NS:result:<jid>
                            (RESULT_PENDING_TTL while it waits, result_ttl after it ends)
  NS:cancelled              sorted set, jid -> unix time it was cancelled (kept CANCEL_KEEP)
  NS:cancel                 pub/sub channel: the jid of each cancellation, to every worker
  NS:batches                sorted set, batch id -> unix time it was created
  NS:batch:<bid>            hash, a batch: description, created_at, total, pending (jobs not yet succeeded),
                            complete_at, success_at, its callbacks' payloads (cb_complete, cb_success) and queues
  NS:batch:<bid>:ok         set of the jids that succeeded (each counted once)
  NS:batch:<bid>:failed     set of the jids that failed and have not succeeded since
  NS:workflows              sorted set, workflow id -> unix time it was created (entries older than BATCH_TTL are
                            trimmed as workflows are created)
  NS:workflow:<id>          hash, a workflow (scripts/lib_workflow.lua): status, created_at, finished_at, result or
                            error, left (steps not yet succeeded), out (the result's shape), steps (JSON list of
                            [jid, name]), and per step <i>: h<i>/t<i> its payload (split where the previous result
                            goes; deleted once pushed), in<i> the shape of its input, w<i> steps it still waits
                            for, n<i> the steps after it, q<i> its queue, s<i> when it was pushed, r<i> its result;
                            j:<jid> -> <i>. Its steps are the members of the batch NS:batch:<id>, whose hash names
                            this key (field `workflow`); both expire as a batch does. Each step's status hash
                            NS:result:<jid> names its workflow (field `workflow`)
  NS:workflow:<id>:done     list with one member once the workflow has ended; result() waits on it as on a job's
  NS:metrics:<minute>       hash, the per-job metrics of one UTC minute (<minute> = unix time // 60), added to by
                            every worker's heartbeat: <job>|runs, <job>|failed, <job>|ms (total run time) and
                            <job>|h<bound> (runs that took at most <bound> ms, the bounds config.JOB_TIME_BUCKETS;
                            <job>|hinf beyond the last), <job>|max_us (the longest run in microseconds, a maximum
                            kept by job_max.lua); <job> is a registered wire name or "unknown"; expires
                            config.JOB_METRICS_TTL after its minute

With `wire="sidekiq"` (SidekiqKeys) the keys Sidekiq shares are Sidekiq's own, with no namespace (or under `P:`
when a namespace P other than the default is given, as redis-namespace would put them): queues, queue:<name>,
schedule, retry, dead, processes, stat:processed|failed[:<YYYY-MM-DD>], and per process
  <identity>                hash, Sidekiq's heartbeat: info (JSON), busy, beat, quiet ("true"/"false"), rss (KB),
                            rtt_us; expires like NS:process:<identity>
  <identity>:work           hash, the jobs running now (Sidekiq 7's name); <identity>:workers the same (Sidekiq 6's)
  <identity>-signals        list, signals for the process (TSTP quiet, TERM stop) pushed by Sidekiq's Web UI or API;
                            each heartbeat pops one
Every other key above (working lists, wake, paused, cron, unique, debounce, limits, results, cancels, batches,
workflows, metrics) stays under NS (default `jiggler`), which Sidekiq never reads.
"""

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Keys:
    """Key names for one namespace."""

    namespace: str = "jiggler"
    wire: ClassVar[str] = "jiggler"  # the payload format that goes with this layout (wire/__init__.py)

    def _k(self, *parts: str) -> str:
        return ":".join((self.namespace,) + parts)

    @property
    def queues(self) -> str:
        return self._k("queues")

    def queue(self, name: str) -> str:
        return self._k("queue", name)

    @property
    def queue_prefix(self) -> str:
        return self._k("queue", "")

    def prio(self, name: str) -> str:
        """The sorted set of the priority jobs of queue `name` (lib_ready.lua makes it from the queue's key)."""
        return self._k("prio", name)

    def group(self, name: str, group: str) -> str:
        """The list of the waiting jobs of group `group` of queue `name`."""
        return self._k("group", name, group)

    def groups(self, name: str) -> str:
        """The rotation of the groups of queue `name` (lib_ready.lua)."""
        return self._k("groups", name)

    @property
    def seq(self) -> str:
        return self._k("seq")

    @property
    def wake(self) -> str:
        return self._k("wake")

    @property
    def paused(self) -> str:
        return self._k("paused")

    @property
    def schedule(self) -> str:
        return self._k("schedule")

    @property
    def retry(self) -> str:
        return self._k("retry")

    @property
    def dead(self) -> str:
        return self._k("dead")

    @property
    def processes(self) -> str:
        return self._k("processes")

    def process(self, identity: str) -> str:
        return self._k("process", identity)

    @property
    def deaths(self) -> str:
        return self._k("deaths")

    def work(self, identity: str) -> str:
        return self._k("work", identity)

    def working(self, identity: str) -> str:
        return self._k("working", identity)

    @property
    def cron_last(self) -> str:
        return self._k("cron", "last")

    def cron_table(self, signature: str) -> str:
        return self._k("cron", "table", signature)

    def cron_leader(self, signature: str) -> str:
        return self._k("cron", "leader", signature)

    def cron_seen(self, signature: str) -> str:
        return self._k("cron", "seen", signature)

    def unique(self, digest: str) -> str:
        return self._k("unique", digest)

    def debounce(self, key: str) -> str:
        return self._k("debounce", key)

    @property
    def unique_prefix(self) -> str:
        return self._k("unique", "")

    @property
    def limits(self) -> str:
        return self._k("limits")

    def limit(self, name: str) -> str:
        return self._k("limit", name)

    def limit_free(self, name: str) -> str:
        return self._k("limit", name, "free")

    def limit_parked(self, name: str) -> str:
        return self._k("limit", name, "parked")

    @property
    def limit_prefix(self) -> str:
        return self._k("limit", "")

    def holds(self, identity: str) -> str:
        return self._k("holds", identity)

    @property
    def cron_leader_prefix(self) -> str:
        return self._k("cron", "leader", "")

    def result(self, jid: str) -> str:
        return self._k("result", jid)

    @property
    def result_prefix(self) -> str:
        return self._k("result", "")

    def job_state(self, jid: str) -> str:
        return self._k("state", jid)

    def django_task(self, jid: str) -> str:
        return self._k("djtask", jid)

    @property
    def cancelled(self) -> str:
        return self._k("cancelled")

    @property
    def cancel_channel(self) -> str:
        return self._k("cancel")

    @property
    def batches(self) -> str:
        return self._k("batches")

    def batch(self, bid: str) -> str:
        return self._k("batch", bid)

    @property
    def batch_prefix(self) -> str:
        return self._k("batch", "")

    @property
    def workflows(self) -> str:
        return self._k("workflows")

    def workflow(self, wid: str) -> str:
        return self._k("workflow", wid)

    def workflow_done(self, wid: str) -> str:
        return self._k("workflow", wid, "done")

    def metrics(self, minute: int) -> str:
        return self._k("metrics", str(minute))

    def stat(self, name: str, day: str = "") -> str:
        return self._k("stat", name, day) if day else self._k("stat", name)

    @property
    def pattern(self) -> str:
        """A glob that matches every key of this namespace."""
        return self._k("*")

    def signals(self, identity: str) -> str | None:
        """The list of signals sent to a process through Redis, or None when the layout has none."""
        return None

    def work_keys(self, identity: str) -> tuple[str, ...]:
        """Every hash the running jobs of a process are written to (one per reader's naming)."""
        return (self.work(identity),)


@dataclass(frozen=True)
class SidekiqKeys(Keys):
    """Sidekiq's key layout for what Sidekiq reads (see the module docstring); `prefix` is "" or "P:"."""

    prefix: str = ""
    wire: ClassVar[str] = "sidekiq"

    def _s(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def queues(self) -> str:
        return self._s("queues")

    def queue(self, name: str) -> str:
        return self._s("queue", name)

    @property
    def queue_prefix(self) -> str:
        return self._s("queue", "")

    # Never filled: a priority or a group is refused on Sidekiq's wire (client.py); named as the scripts make them.
    def prio(self, name: str) -> str:
        return self._s("prio", name)

    def group(self, name: str, group: str) -> str:
        return self._s("group", name, group)

    def groups(self, name: str) -> str:
        return self._s("groups", name)

    @property
    def schedule(self) -> str:
        return self._s("schedule")

    @property
    def retry(self) -> str:
        return self._s("retry")

    @property
    def dead(self) -> str:
        return self._s("dead")

    @property
    def processes(self) -> str:
        return self._s("processes")

    def process(self, identity: str) -> str:
        return self._s(identity)

    def work(self, identity: str) -> str:
        return self._s(f"{identity}:work")

    def signals(self, identity: str) -> str | None:
        return self._s(f"{identity}-signals")

    def work_keys(self, identity: str) -> tuple[str, ...]:
        return (self._s(f"{identity}:work"), self._s(f"{identity}:workers"))

    def stat(self, name: str, day: str = "") -> str:
        return self._s("stat", name, day) if day else self._s("stat", name)
