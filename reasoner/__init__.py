"""reasoner: projector MLP, Qwen2 with progressive visual-token dropping, prompt, loading.

Import the submodules directly (`reasoner.modeling_qwen2_flash`, `reasoner.projector`,
`reasoner.prompt`, `reasoner.loading`; `reasoner.testing` for tiny checkpoints in tests). This
package file stays import-free so that `import reasoner` costs nothing (no torch import).
"""
