"""Arithmetic written as operations on tensors rather than layers, and Lambda.

Keras 3 saves `x / 6.0` as a `Divide`/`TrueDivide` node of keras.src.ops.numpy (`x + 3.0`
and `x * c` come as `Add`/`Multiply`, handled by the merge layers); Keras 2 saves the same
as `TFOpLambda` with a TensorFlow function name and the constant in the call kwargs.
Only arithmetic with a known meaning is accepted: the function name selects one of our
binary kernels; nothing from the file is ever evaluated.

Lambda layers are refused: they carry marshalled Python bytecode, and running code from a
model file would let the file do anything.
"""
from ..formats.config import TensorKey
from .base import Layer
from .merging import _ElementwiseMerge

import numpy as np


class Divide(_ElementwiseMerge):
    keras_classes = ("Divide", "TrueDivide")
    op = "divide"


# TFOpLambda function name -> binary op of merging.BINARY_OPS
_TF_BINARY = {
    "__operators__.add": "add", "math.add": "add",
    "__operators__.sub": "subtract", "math.subtract": "subtract",
    "__operators__.mul": "multiply", "math.multiply": "multiply",
    "__operators__.truediv": "divide", "math.truediv": "divide", "math.divide": "divide",
    "math.maximum": "maximum", "math.minimum": "minimum",
}


class TFOpLambda(_ElementwiseMerge):
    keras_classes = ("TFOpLambda",)

    def parse(self, config):
        function = config.get("function")
        if function not in _TF_BINARY:
            raise self.unsupported(
                f"TensorFlow op {function!r}; supported: {', '.join(sorted(_TF_BINARY))}")
        self.op = _TF_BINARY[function]
        self.operands = []
        for call in self.calls:
            operands = [("tensor", 0)]
            y = call.kwargs.get("y")
            if len(call.args) >= 1 and not isinstance(call.args[0], TensorKey):
                raise self.unsupported("TFOpLambda whose first operand is not a tensor")
            if isinstance(y, TensorKey):
                operands.append(("tensor", 1))
            elif isinstance(y, (int, float)) and not isinstance(y, bool):
                operands.append(("const", np.asarray(y, dtype=np.float32)))
            else:
                raise self.unsupported(f"TFOpLambda operand y={y!r}")
            self.operands.append(operands)


class Lambda(Layer):
    keras_classes = ("Lambda",)

    def parse(self, config):
        raise self.unsupported(
            "Lambda layers carry Python bytecode and edgecore never executes code from a "
            "model file; rebuild the model with built-in layers (or a registered custom "
            "layer edgecore implements) and save it again")
