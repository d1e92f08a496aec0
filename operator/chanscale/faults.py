"""Crash points for the crash-safety tests: ``CHANSCALE_CRASH_AT=<step>`` SIGKILLs the operator at that step of
the first scale it makes, so a test can prove that every step of a tick is safe to die in.

Steps, in order: ``before-intent`` (decided, nothing written), ``after-intent`` (the scale intent is in
status.history, the Deployment not yet scaled), ``after-scale`` (scaled, the intent not yet cleared),
``after-status`` (everything written). Unset in production; the check is one string comparison.
"""

from __future__ import annotations

import os
import signal

STEPS = ("before-intent", "after-intent", "after-scale", "after-status")
_AT = os.environ.get("CHANSCALE_CRASH_AT", "")


def crash_point(step: str) -> None:
    if step == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
