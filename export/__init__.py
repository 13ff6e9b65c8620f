"""export: a zoo model or a training run -> a verified ONNX file with its metadata inside.

    from export.sources import load_source
    from export.pipeline import ExportOptions, export
    result = export(load_source("runs/ants"), ExportOptions(out="model.onnx", quantize="int8"))

Nothing is written unless every check passes (onnx.checker, strict shape inference, parity against
PyTorch on random inputs at two batch sizes and on real images). Reads training runs only through
their run directory (transfer/RUN_DIR.md); never imports transfer.
"""
