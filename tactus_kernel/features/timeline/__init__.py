"""The live step timeline and the audit trail of each procedure run.

Every recorded call of a procedure (a step, a human request, an agent turn,
a ``Sleep``, a child procedure, a wait) already passes through its
:class:`~tactus_kernel.engine.records.RunLog`: ``replay()`` when it starts (a
miss means "it runs now", a hit means "replayed from the record") and
``append()`` when its value is recorded. A :class:`Trail` hooked to the
log turns those calls into events, so no primitive needs code of its own
and ``Step.run``'s hot path gains only a few list operations:

* a step is kept as a tiny pending entry while it runs and becomes an
  event dict only when it ends (or when the view is drawn meanwhile);
* consecutive replayed steps, and consecutive steps that took less than
  ``FAST`` seconds, merge into one event with a ``count``: replaying or
  recording 10,000 steps costs one event, not 10,000;
* the view is redrawn at most every ``INTERVAL`` seconds (from the event
  hook itself, so a CPU-bound loop that never yields still updates it,
  plus a timer for the last change), and only appears once a run has gone
  on for ``SHOW_AFTER`` seconds: quick runs and replays show nothing.

The events of a run that changes its record become ``record["events"]``
(with its first new checkpoint, or when it ends), so the audit trail of
the last recording run is saved with the notebook (see docs/metadata.md).
A replay that matches its record leaves the record as it was: its own
events stay in the kernel (:func:`~tactus_kernel.features.timeline.log.latest_events`),
for the view and ``%tactus log``.
"""

from tactus_kernel.features.timeline.observer import Timeline, TimelineFeature
from tactus_kernel.features.timeline.style import INTERVAL, SHOW_AFTER
from tactus_kernel.features.timeline.trail import PREVIEW, Trail, preview
from tactus_kernel.features.timeline.view import CellTimeline

__all__ = ["INTERVAL", "PREVIEW", "SHOW_AFTER", "CellTimeline", "Timeline", "TimelineFeature", "Trail", "preview"]
