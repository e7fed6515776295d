"""Launch huey_consumer with gevent patched first (huey's greenlet mode expects the caller to patch)."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from huey.bin.huey_consumer import consumer_main  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = "huey_consumer"
    consumer_main()
