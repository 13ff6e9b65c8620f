"""serve: an onnxruntime inference server speaking the Open Inference Protocol (KServe V2), with
dynamic batching. Needs only onnxruntime, numpy, PIL, FastAPI/uvicorn and prometheus_client, and
the metadata inside the .onnx file (export/ONNX_METADATA.md): never torch, timm or zoo.

    transferzoo serve model.onnx --port 8000
"""
