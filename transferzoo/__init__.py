"""transferzoo: from a folder of labelled images to a verified ONNX model behind an inference server.

One import package: `transferzoo.zoo` (backbones, weights, and the shared foundations),
`transferzoo.transfer` (training), `transferzoo.export` (ONNX with a parity gate),
`transferzoo.serve` (the inference server), and above them the command line (`cli`, `commands/`),
the pipeline runner (`pipeline/`) and the demo. The four packages never import the layer above.
"""

__version__ = "0.1.0"
