"""model.summary(): Keras's table in plain ASCII (Termux terminals may lack box glyphs).

Columns and totals follow Keras 3: "Layer (type)", "Output Shape", "Param #" and, for
Functional models, "Connected to"; then Total / Trainable / Non-trainable params with the
float32 size in Keras's units (1024-based, two decimals).
"""
from .layers.model import ModelLayer, param_counts


def readable_size(n_bytes):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes / 1024 < 1:
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.2f} PB"


def _shape_text(shapes):
    text = [str((None,) + tuple(s)).replace(",)", ")") for s in shapes]
    return text[0] if len(text) == 1 else "[" + ", ".join(text) + "]"


def _layer_calls(graph):
    """{layer: [node, ...]} including InputLayer pseudo-calls (graph inputs)."""
    calls = {}
    for tensor in graph.inputs:
        calls.setdefault(tensor.key[0], []).append(([], [tensor.shape]))
    for node in graph.nodes:
        calls.setdefault(node.layer.name, []).append(
            (node.inputs, [t.shape for t in node.outputs]))
    return calls


def format_summary(model, line_length=None):
    graph = model.graph
    functional = graph.kind == "functional"
    widths = [34, 26, 12] + ([36] if functional else [])
    if line_length:
        scale = line_length / sum(widths)
        widths = [max(8, int(w * scale)) for w in widths]
    headers = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if functional else [])
    calls = _layer_calls(graph)
    rows = []
    for layer in model.layers:
        layer_calls = calls.get(layer.name, [])
        shapes = layer_calls[0][1] if layer_calls else []
        total, _ = param_counts(layer, True)
        row = [f"{layer.name} ({'Functional' if isinstance(layer, ModelLayer) and layer.spec.kind == 'functional' else layer.class_name})",
               _shape_text(shapes) if shapes else "?", f"{total:,}"]
        if functional:
            inbound = []
            for inputs, _ in layer_calls:
                inbound.extend(f"{t.key[0]}[{t.key[1]}][{t.key[2]}]" for t in inputs)
            row.append(", ".join(inbound) or "-")
        rows.append(row)
    rule = "-" * sum(widths)
    lines = [f'Model: "{model.name}"', rule, _row(headers, widths), "=" * sum(widths)]
    for row in rows:
        lines.append(_row(row, widths))
    lines.append(rule)
    total = train = 0
    for layer in graph.layers:
        t, tr = param_counts(layer, model.trainable)
        total += t
        train += tr
    lines.append(f" Total params: {total:,} ({readable_size(total * 4)})")
    lines.append(f" Trainable params: {train:,} ({readable_size(train * 4)})")
    lines.append(f" Non-trainable params: {total - train:,} ({readable_size((total - train) * 4)})")
    return "\n".join(lines)


def _row(cells, widths):
    parts = []
    for i, (cell, width) in enumerate(zip(cells, widths)):
        cell = str(cell)
        if len(cell) > width - 2:
            cell = cell[:width - 5] + "..."
        parts.append(cell.rjust(width - 2) + "  " if i == 2 else " " + cell.ljust(width - 1))
    return "".join(parts).rstrip()
