"""Features: the frozen backbone run once per image, and what probes train on.

- `engine`: the feature module (every stage's pooled output + the pre-logits features in one pass),
  run by onnxruntime (exported once and verified against PyTorch) or eager PyTorch, on the CPU or
  (`features.device`) a CUDA GPU checked against the CPU, with decoding in background threads;
  `Extractor.extract` fills and reads the cache (all cached: torch is never imported);
- `torch_engine`: the feature module itself and the PyTorch engines (CPU, CUDA bf16), loaded only
  when a backbone is built;
- `cache`: the on-disk, memory-mapped feature cache keyed by image content, model, weights and
  preprocessing;
- `costs`: measured per-image costs on this machine (decode, features, training step) and the wall
  time a strategy should take from them (for `plan`'s estimates);
- `sets`: named feature sets built from the cached outputs (`top`, `imagenet`, `stageI`, runs of
  stages) and the `zoo.assembly.TransferModel` head each one becomes.

May import `zoo`, `export` (the verified torch -> ONNX step) and `transfer.config`; nothing above.
"""
