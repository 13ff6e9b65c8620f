"""export: a zoo model or a training run -> a verified ONNX file with its metadata inside.

    from transferzoo.export.options import ExportOptions
    from transferzoo.export.pipeline import export
    from transferzoo.export.sources import load_source
    result = export(load_source("runs/ants"), ExportOptions(out="model.onnx", quantize="int8"))

Nothing is written unless every check passes (onnx.checker, strict shape inference, parity against
PyTorch on random inputs at two batch sizes and on real images). `onnx_export` holds the one
torch -> ONNX step the whole project uses (`to_onnx`, `verified_session`).

May import `zoo`. Reads training runs only through their run directory (transfer/RUN_DIR.md):
never imports transfer.
"""
