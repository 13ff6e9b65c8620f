"""serve: an onnxruntime inference server speaking the Open Inference Protocol (KServe V2), with
dynamic batching.

    transferzoo serve model.onnx --port 8000
    transferzoo serve REPO/          # a Triton model repository (`transferzoo deploy`, serve.repository)

Needs only onnxruntime, numpy, PIL, FastAPI/uvicorn, prometheus_client and the metadata inside the
.onnx file (export/ONNX_METADATA.md). May import the torch-free parts of `zoo` (`images`, `config`,
`runtime`); never torch, timm, transfer or export.
"""
