"""reasoner: projector MLP, Qwen2 with progressive visual-token dropping, prompt, loading.

Import the submodules directly (`reasoner.modeling_qwen2_flash`, `reasoner.projector`,
`reasoner.prompt`, `reasoner.loading`; `reasoner.testing` for tiny checkpoints in tests), and for
serving: `reasoner.planning` (pure query planning over the pyramid), `reasoner.answers` (times,
rule prompts), `reasoner.engine` (`LocalReasoner`), `reasoner.scheduler` (policy + worker,
`EngineService`), `reasoner.service` (HTTP app + `HttpReasoner` client). This
package file stays import-free so that `import reasoner` costs nothing (no torch import).
"""
