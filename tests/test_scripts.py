"""The Lua scripts' calls (scripts/__init__.py): EVALSHA straight on the client, reloaded when the server lacks them,
and queued on a pipeline that loads them itself; against a real Redis."""

import json

from jiggler_gevent import scripts
from tests import jobs


def test_each_sha_is_the_one_the_server_gives_its_script(r):
    for name, source in scripts.SOURCES.items():
        assert r.script_load(source) == scripts.SHAS[name], name


def test_a_push_after_the_server_forgot_its_scripts_loads_push_lua_again(ns, r):
    jobs.record.enqueue("k", "before")
    r.script_flush()
    assert r.script_exists(scripts.SHAS["push"]) == [False]
    jid = jobs.record.enqueue("k", "after")
    assert r.script_exists(scripts.SHAS["push"]) == [True]
    raws = r.lrange(ns.keys.queue("default"), 0, -1)
    assert [json.loads(raw)["args"] for raw in reversed(raws)] == [["k", "before"], ["k", "after"]]
    assert json.loads(raws[0])["jid"] == jid


def test_a_script_queued_on_a_pipeline_is_loaded_by_the_pipeline(ns, r):
    r.script_flush()
    push = scripts.register(r).push
    args = [ns.keys.queue_prefix, "default", 1, '{"jid":"p1"}']
    with r.pipeline(transaction=False) as pipe:
        queued = push(keys=[ns.keys.queues, ns.keys.wake], args=args, client=pipe)
        assert queued is pipe  # queued, not sent
        pipe.llen(ns.keys.queue("default"))
        reply = pipe.execute()
    assert reply[-1] == 1
    assert r.lrange(ns.keys.queue("default"), 0, -1) == ['{"jid":"p1"}']


def test_a_script_called_without_a_client_runs_on_the_one_it_is_bound_to(ns, r):
    push = scripts.register(r).push
    push(keys=[ns.keys.queues, ns.keys.wake], args=[ns.keys.queue_prefix, "low", 1, '{"jid":"b1"}'])
    assert r.lrange(ns.keys.queue("low"), 0, -1) == ['{"jid":"b1"}']
    assert scripts.register(r) is scripts.register(r)  # bound once per client
