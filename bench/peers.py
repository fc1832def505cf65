"""The reference runtimes edgecore is measured against, each as a zero-argument callable
returning the output for one fixed input: shared by bench_models.py (pytest-benchmark)
and compare_runtimes.py (the README table), so both time the same thing."""


def onnxruntime_runner(path, threads, x):
    """ONNX Runtime on `path` with `threads` intra-op threads (one inter-op), CPU only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{len(inputs)} graph inputs ({[i.name for i in inputs]}), expected "
                         "the image only: re-run bench/convert_models.py")
    feed = {inputs[0].name: x}
    return lambda: session.run(None, feed)[0]


def litert_runner(path, threads, x):
    """LiteRT (its default XNNPACK delegate) on `path` with `threads` threads."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def run():
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run
