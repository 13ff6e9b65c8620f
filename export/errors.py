"""Errors of the export step. Both are ZooErrors (ValueErrors): the CLI prints them, no traceback."""

from __future__ import annotations

from transferzoo.zoo.errors import ZooError


class ExportError(ZooError):
    """The model could not be turned into an ONNX graph (unsupported op, exporter crash...)."""


class GateError(ZooError):
    """A graph was produced but failed validation; nothing was written. `report` holds the numbers."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report
