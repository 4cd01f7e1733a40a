"""The tiny VideoChat-Flash trained on synthetic scenes (issue 8, item 2).

`data` (windows + questions from ground truth), `tokenizer` (small byte-level BPE, Qwen2 files),
`model` (the project's UMT/ToMe, projector and Qwen2 modules at small sizes; export to the
official directory layout), `train` (seeded CPU training), `evaluate` (held-out accuracy through
the normal loaders), `cli` (`tiny_app`: `flashwatch tiny train|eval`).
"""
