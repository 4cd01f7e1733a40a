"""Synthetic surveillance cameras with exact ground truth (issue 8, item 1).

Why here: ingest consumes cameras, and these are cameras whose every event is known, for
training the tiny model, accuracy evaluation, needle-in-a-haystack tests and the demo.

Public API:

* ``Scene.from_spec(SceneSpec(seed, duration, events=("red_car_parks@120",), ...))``:
  ``scene.render(t)`` → (H, W, 3) uint8 RGB at any time t, statelessly; ``scene.frames(t0, t1,
  fps)``, ``scene.clip(times)``; ``scene.truth`` is the :class:`GroundTruth`.
* ``make_truth(seed, duration, events, people_per_min, cars_per_min, random_needles)`` and
  ``Scene(truth, width, height, fps)`` when only the truth is needed or it was loaded from JSON.
* :class:`GroundTruth`: ``active(t0, t1, kind, actor_kind, colour, needle)``,
  ``count(actor_kind, t, colour)``, ``present(actor_kind, colour, t0, t1)``,
  ``happened(kind, t0, t1, ...)``, ``first(kind, ...)``; ``to_json``/``from_json``,
  ``save``/``load``. :class:`Event` = (kind, actor_kind, colour, t_start, t_end, region,
  actor_id, needle), intervals half-open, times in scene seconds.
* ``write_video(scene, path, t0, t1, fps)`` → H.264 MP4 + ``path.truth.json``;
  ``write_camera_file(path, scene, seconds)`` for the RTSP test server; ``read_truth(video)``.
* ``colour_mask(frame, colour)``: pixels of a saturated actor colour (tests, oracle checks).
* ``hold_still(truth, {actor_id: t}, t0, t1, rng)``: the same scene with those actors standing
  still over [t0, t1) (people shuffling, with an rng), their events rewritten (loiter / park /
  stop by where they stand).
* ``EventSpec.parse("black_person_drops_yellow_bag@60")``; ``random_specs(rng, duration, n)``.
* CLI: ``synth_app`` in ``ingest.synth.cli`` (``video``, ``truth``, ``frame``).
"""

from __future__ import annotations

from ingest.synth.scene import (
    RGB,
    Scene,
    SceneSpec,
    body_centre,
    colour_mask,
    make_background,
)
from ingest.synth.script import REGIONS, EventSpec, hold_still, make_truth, random_specs
from ingest.synth.truth import ACTOR_KINDS, COLOURS, EVENT_KINDS, Event, GroundTruth, Track
from ingest.synth.video import (
    decode_frames,
    read_truth,
    truth_path,
    write_camera_file,
    write_video,
)

__all__ = [
    "ACTOR_KINDS",
    "COLOURS",
    "EVENT_KINDS",
    "REGIONS",
    "RGB",
    "Event",
    "EventSpec",
    "GroundTruth",
    "Scene",
    "SceneSpec",
    "Track",
    "body_centre",
    "colour_mask",
    "decode_frames",
    "hold_still",
    "make_background",
    "make_truth",
    "random_specs",
    "read_truth",
    "truth_path",
    "write_camera_file",
    "write_video",
]
