"""The Ruby Sidekiq harness (tests/sidekiq_ruby.py) works with pure Ruby: client, a `sidekiq` process, the Web UI.

Uses a Redis database of its own from `claimed_db` (one of 8..15 on the test Redis, flushed after).
"""

import json
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import wait_for
from tests.sidekiq_ruby import SidekiqProcess, SidekiqWeb, claimed_db, require_ruby_sidekiq, run_ruby

# Flaky fails while the key `flaky:fail` exists, so the test decides when its retry may succeed.
JOBS = """
class Marker
  include Sidekiq::Job
  def perform(name, value)
    Sidekiq.redis { |c| c.set("ran:#{name}", value) }
  end
end

class Flaky
  include Sidekiq::Job
  def perform(name)
    raise ArgumentError, "flaky #{name}" if Sidekiq.redis { |c| c.exists?("flaky:fail") }
    Sidekiq.redis { |c| c.set("ran:#{name}", "ok") }
  end
end
"""


@pytest.fixture
def sidekiq_url(redis_url: str) -> Iterator[str]:
    """A Redis URL with a database of this test's own, for Ruby Sidekiq."""
    require_ruby_sidekiq()
    with claimed_db(redis_url) as url:
        yield url


def test_ruby_client_process_and_web_ui(sidekiq_url: str) -> None:
    r = redis.Redis.from_url(sidekiq_url, decode_responses=True)
    r.set("flaky:fail", "1")
    pushed = run_ruby(
        sidekiq_url,
        'Sidekiq::Client.push_bulk("class" => "Marker", "args" => [["a", "1"], ["b", "2"]], "queue" => "py")\n'
        'Sidekiq::Client.push("class" => "Flaky", "args" => ["c"], "queue" => "py", "backtrace" => 5)\n'
        'puts Sidekiq::Queue.new("py").size',
    )
    assert pushed.strip() == "3"

    with SidekiqProcess(sidekiq_url, JOBS, queues=("py",)) as worker, SidekiqWeb(sidekiq_url) as web:
        identity = worker.identity
        assert identity is not None
        wait_for(lambda: r.mget("ran:a", "ran:b") == ["1", "2"], 20, "the Marker jobs to run", 0.05)
        wait_for(lambda: r.zcard("retry") == 1, 20, "the Flaky job in the retry set", 0.05)

        assert f"{identity.split(':')[0]}:{worker.pid}" in web.get("/busy")
        retries = json.loads(
            run_ruby(
                sidekiq_url,
                'puts Sidekiq.dump_json(Sidekiq::RetrySet.new.map { |e| e.item.merge("bt" => e.error_backtrace) })',
            )
        )
        assert [(e["class"], e["error_class"], e["error_message"], e["retry_count"]) for e in retries] == [
            ("Flaky", "ArgumentError", "flaky c", 0)
        ]
        assert "in `perform'" in retries[0]["bt"][0]
        keys = web.retry_keys()
        assert [key.split("-", 1)[1] for key in keys] == [retries[0]["jid"]]
        assert "flaky c" in web.get(f"/retries/{keys[0]}")

        r.delete("flaky:fail")
        web.retry_now(keys[0])
        assert r.zcard("retry") == 0
        wait_for(lambda: r.get("ran:c") == "ok", 20, "the retried Flaky job to run", 0.05)

        web.quiet(identity)
        assert r.lrange(f"{identity}-signals", 0, -1) in (["TSTP"], [])
        wait_for(lambda: r.hget(identity, "quiet") == "true", 15, "the Quiet button to reach sidekiq", 0.1)
        assert "Received TSTP" in worker.log()
    assert worker.returncode == 0
    r.close()
