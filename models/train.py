"""``python -m models.train``: the documented alias of ``python -m training.train``.

Kept because scripts and the paper's users call it; training lives in ``training/``, above the
model code, so this module names it without importing it.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("training.train", run_name="__main__", alter_sys=True)
