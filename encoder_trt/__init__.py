"""encoder_trt: the VideoChat-Flash clip encoder (UMT-L + ToMe) and its inference backends.

Modules (imported explicitly; this package imports nothing heavy on its own):
  modeling_umt  UMTConfig, UMTEncoder (checkpoint key names), UMTClipEncoder (+ ToMe, 64 tokens)
  tome          merge_schedule, bipartite_soft_matching, merge_wavg, tome_compress (pure functions)
  preprocess    resize_frame (ingest side), decode_jpeg + normalise (encoder side)
  checkpoint    load_umt_encoder / load_clip_encoder from a local VideoChat-Flash directory
  backends      ClipEncoder protocol, create_backend("torch" | "onnxruntime" | "tensorrt", ...)
  onnx_export   export_onnx (whole UMT + ToMe graph, dynamic batch axis)
  trt_engine    build_engine / TensorRTBackend (TensorRT 10, imported lazily)
  testing       tiny configs, random weights, fake checkpoint directories for tests
"""
