"""``python -m worker``: an evaluation worker, the join point of queue, store and scorer.

``python -m evaluation.worker`` is its documented alias. It serves lanes of the queue (Huey):
``files`` (prediction files), ``models`` (checkpoints a CPU can finish) and, on a GPU host,
``gpu``; a lane has its own consumer, so a prediction file never waits behind a checkpoint. For
each job it claims the job with a lease it renews while it works, reads the prediction file or runs
the checkpoint (CUDA when present, under a time limit, reporting progress), scores every test split
and writes the results and the job's end in one transaction, together with what the release policy
lets anyone read (``leaderboard.publication``: the Ladder's decision is taken under the submitter's
account lock). A reaper thread re-enqueues jobs whose worker died and queued jobs whose message was
lost. Typed errors fail a job with their message (a model's own failures, its time limit, memory
or non-finite outputs, charged to its submitter); anything else fails it with "internal error"
(charged to nobody) and a logged traceback. The worker
registers itself and sends a heartbeat (device, threads, lanes, state, current job, measured speed)
that the Space shows; started by ``app.py`` (``MITOSIS_PARENT_PID`` set), it runs at a lower OS
priority, leaves a core to the Space, pauses while users are answered, and exits when the app is
gone. ``--rescore`` queues a new job for every scored submission (history is kept); a changed label
set is re-scored by itself.
"""

from worker.runner import Worker

__all__ = ["Worker"]
