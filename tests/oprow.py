"""Run one op row through the plan runner (edgecore._kernels.run_plan) with every operand
in one arena buffer, so a test can check that a row layout reaches the kernel it names and
gives the checked wrapper's result.  Each operand is followed by a NaN guard that must
survive the run (no write past an output)."""
import numpy as np

from edgecore import _kernels as K

COLUMNS = {"y": 1, "x0": 2, "x1": 3, "w": 4, "b": 5, "scratch": 6, "y2": 7, "x2": 8}
GUARD = 16


def run_row(name, inputs, outputs, ints, floats=(), scratch=0, act=None):
    """inputs: {column: array}, outputs: {column: shape}, operands absent from both are -1;
    scratch: floats of scratch (NaN-filled, guarded); act: the row's activation, as
    (code, {alpha, max_value, threshold}) or (code, alpha, max_value, threshold), linear if
    None.  Returns {column: output array}; checks the guards."""
    parts, refs, offset = [], {}, 0
    operands = [(c, a) for c, a in inputs.items()]
    operands += [(c, np.full(s, np.nan, np.float32)) for c, s in outputs.items()]
    if scratch:
        operands.append(("scratch", np.full(scratch, np.nan, np.float32)))
    for column, arr in operands:
        flat = np.asarray(arr, np.float32).reshape(-1)
        refs[column] = offset                     # base 0 (the arena): the ref is the offset
        parts += [flat, np.full(GUARD, np.nan, np.float32)]
        offset += flat.size + GUARD
    arena = np.concatenate(parts)
    row = np.zeros((1, K.ROW_INTS), np.int64)
    row[0, 0] = K.OPCODES[name]
    row[0, 1:9] = -1
    for column, ref in refs.items():
        row[0, COLUMNS[column]] = ref
    row[0, K.ROW_PARAM_START:K.ROW_PARAM_START + len(ints)] = ints
    fparams = np.zeros((1, K.ROW_FLOATS), np.float32)
    fparams[0, 1] = np.inf                       # activation max_value (unused here)
    if act is not None:
        row[0, 9] = act[0]
        if isinstance(act[1], dict):
            params = act[1]
            fparams[0, :3] = (params.get("alpha", 0.0), params.get("max_value", np.inf),
                              params.get("threshold", 0.0))
        else:
            fparams[0, :3] = act[1:]
    fparams[0, 3:3 + len(floats)] = floats
    K.run_plan(row, fparams, arena, np.zeros(1, np.float32), arena.size, K.gemm_isa()[2])
    for column, arr in operands:
        end = refs[column] + np.asarray(arr).size
        assert np.isnan(arena[end:end + GUARD]).all(), f"{name}: wrote past operand {column}"
    return {c: arena[refs[c]:refs[c] + int(np.prod(s))].reshape(s).copy()
            for c, s in outputs.items()}
