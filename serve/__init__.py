"""serve: an onnxruntime inference server speaking the Open Inference Protocol (KServe V2) over HTTP
and gRPC, with dynamic batching.

    transferzoo serve model.onnx --port 8000 [--grpc-port 8001]
    transferzoo serve REPO/          # a Triton model repository (`transferzoo deploy`, serve.repository)

Holds: config (settings), protocol (HTTP V2 parsing/encoding) and grpc_service (the same over gRPC, with
tritonclient's generated stubs), body (bounded request bodies), jsonparse (large JSON parsed off the GIL),
errors, batcher, model, predict, preprocess, app and server (FastAPI/uvicorn, limits, shutdown), page (GET /
and static/), repository (Triton layout), metrics.

Needs only onnxruntime, numpy, PIL, FastAPI/uvicorn, grpcio, prometheus_client and the metadata inside the
.onnx file (export/ONNX_METADATA.md). May import the torch-free parts of `zoo` (`images`, `config`,
`runtime`); never torch, timm, transfer or export.
"""
