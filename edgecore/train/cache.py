"""Where fit's batches come from, and the memory they take, all sized before the first step.

    MemoryCache / SpilledCache  the frozen prefix's output for every sample, made once: in
                                an array, or in an unlinked temporary file read and written
                                with pread/pwrite (the page cache holds it, not the process:
                                a memory map would count each touched page in the resident
                                size a budget bounds)
    BatchSource                 one batch of boundary tensors for given sample indices,
                                gathered into buffers made once per batch length, so an
                                epoch allocates nothing the size of a batch
"""
import os
import tempfile

import numpy as np


def _floats(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class MemoryCache:
    def __init__(self, shape):
        self.array = np.empty(shape, np.float32)
        self.shape = tuple(shape)

    def write(self, start, rows):
        self.array[start:start + len(rows)] = rows

    def gather(self, index, out):
        np.take(self.array, index, axis=0, out=out)

    def close(self):
        self.array = None


class SpilledCache:
    def __init__(self, shape, directory):
        self.shape = tuple(shape)
        self.row_bytes = 4 * _floats(self.shape[1:])
        fd, path = tempfile.mkstemp(suffix=".features", prefix="edgecore-", dir=directory)
        os.unlink(path)  # gone from the directory now; the space is freed when it is closed
        self.fd = fd
        os.ftruncate(fd, self.shape[0] * self.row_bytes)

    def write(self, start, rows):
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        data = memoryview(rows).cast("B")
        offset, done = start * self.row_bytes, 0
        while done < len(data):
            done += os.pwrite(self.fd, data[done:], offset + done)

    def gather(self, index, out):
        row = self.row_bytes
        flat = memoryview(out.reshape(len(index), -1)).cast("B")
        for k, i in enumerate(index):
            target = flat[k * row:(k + 1) * row]
            got = 0
            while got < row:
                piece = os.pread(self.fd, row - got, int(i) * row + got)
                if not piece:
                    raise OSError("the feature cache file ended early")
                target[got:got + len(piece)] = piece
                got += len(piece)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def cache_directory(directory):
    """Where a spilled cache goes: the given directory, else the system's temporary one."""
    return tempfile.gettempdir() if directory is None else os.fspath(directory)


class BatchSource:
    """Batches of boundary tensors for arrays of samples: from a feature cache, or by
    running the frozen prefix on the gathered inputs (augmented first, if asked)."""

    def __init__(self, trainer, inputs, caches=None, augment=None, rng=None):
        self.trainer, self.inputs, self.caches = trainer, inputs, caches
        self.augment, self.rng = augment, rng
        self._buffers = {}  # batch length -> gather buffers

    def _buffers_for(self, length):
        found = self._buffers.get(length)
        if found is None:
            if self.caches is not None:
                found = [np.empty((length,) + c.shape[1:], np.float32) for c in self.caches]
            else:
                found = [np.empty((length,) + a.shape[1:], a.dtype) for a in self.inputs]
            self._buffers[length] = found
        return found

    def batch(self, index):
        buffers = self._buffers_for(len(index))
        if self.caches is not None:
            for cache, out in zip(self.caches, buffers):
                cache.gather(index, out)
            return buffers
        for array, out in zip(self.inputs, buffers):
            np.take(array, index, axis=0, out=out)  # in the input's dtype: the arena converts
        xs = buffers
        if self.augment is not None:
            xs = [np.asarray(a, np.float32) for a in xs]
            xs = self.augment(xs[0] if len(xs) == 1 else xs, self.rng)
            xs = xs if isinstance(xs, (list, tuple)) else [xs]
            xs = [np.asarray(a, np.float32) for a in xs]
        return self.trainer.boundary_of(xs)

    def batch_bytes(self, length):
        """What batch() holds for a batch of this length (its gather buffers)."""
        if self.caches is not None:
            return sum(4 * length * _floats(c.shape[1:]) for c in self.caches)
        return sum(length * _floats(a.shape[1:]) * a.dtype.itemsize for a in self.inputs)


def build_caches(trainer, inputs, batch_size, spill_dir=None):
    """Run the frozen prefix once over all samples into caches (memory, or spilled to
    temporary files in spill_dir)."""
    n = inputs[0].shape[0]
    boundary = trainer.boundary_shapes([(1,) + tuple(a.shape[1:]) for a in inputs])
    shapes = [(n,) + tuple(s[1:]) for s in boundary]
    caches = [SpilledCache(s, spill_dir) if spill_dir is not None else MemoryCache(s)
              for s in shapes]
    try:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            features = trainer.boundary_of([a[start:stop] for a in inputs])
            for cache, rows in zip(caches, features):
                cache.write(start, rows)
    except BaseException:
        for cache in caches:
            cache.close()
        raise
    return caches
