"""The worker: what only a `gjiggler worker` process loads. Internal; nothing here is public.

run_worker (worker.py) -> Supervisor (-p N) or Launcher -> Manager -> Processor, with the Poller, the Heartbeat
and the switcher (preempt.py) beside them. It sits on the app side and the shared modules, and never imports
the admin side (admin/). docs/internals.md has the whole flow.
"""
