"""``python -m evaluation.worker``: the documented alias of ``python -m worker``.

Kept because deployments start workers with it; the worker is its own package above the
scorer, the store and the queue, so this module names it without importing it.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("worker", run_name="__main__", alter_sys=True)
