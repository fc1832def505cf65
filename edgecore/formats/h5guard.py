"""Checks made on the raw bytes of an HDF5 file before the HDF5 library reads it.

Since issue 15 edgecore reads HDF5 with its own reader (h5native.py), which walks every
global heap collection it uses with the same bounds as `check_global_heaps` and decodes
only integer, float and string datatypes; the file-wide pre-scan is no longer run on
load.  `read_attr` and `is_weight_type` remain the datatype gate; `check_global_heaps`
stays for anyone handing a file to the HDF5 C library (h5py) and for its tests.

The HDF5 C library trusts some on-disk structures, and two kinds of damage take the
process down instead of raising (found by tests/test_fuzz.py; both still in HDF5 2.0):

Global heaps (`check_global_heaps`).  Every variable-length string (`model_config`,
`weight_names`, the `.keras` layer names) lives in a global heap collection ("GCOL").
Decoding one, the library steps from object to object by each object's size, so an object
of size 0 makes it loop forever (H5HG__cache_heap_deserialize), and an object reaching past
its collection makes it read outside its buffer.  No exception can interrupt that C loop,
so every collection is walked here first, exactly as the library will, and the file is
refused if a walk would not advance or would leave its collection.  A collection whose
header cannot be real (wrong version, size running past the end of the file) is skipped:
the library rejects those itself.  "GCOL" occurring by chance inside weight data is
walked too; to be refused it would also need version byte 1 and a 64-bit size smaller than
the file, which float weights essentially never spell.  Cost: one search of the mapped file
(in copied 256 KiB slices) plus a few reads per collection.

Datatypes (`read_attr`, `is_weight_type`).  Converting a value whose stored datatype is
damaged can crash the library (a variable-length string whose class bits now say "type 9"
segfaults in H5T__conv_vlen).  Keras attributes are strings or numbers and Keras weights
are standard integers or IEEE floats, so the datatype is looked at first (no conversion)
and anything else is refused before a value is read.

Non-goal: validating anything the library checks on its own.
"""
import mmap

from ..errors import ModelFormatError

# HDF5 datatype classes of the attributes a Keras file has: integer, float, string, and
# variable-length (strings; h5native decodes no other variable-length type).
ATTR_CLASSES = (0, 1, 3, 9)

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_GCOL = b"GCOL"
_GCOL_VERSION = 1


def _superblock_length_size(buf, start, end):
    """'Size of lengths' from the superblock (at start, or after a user block of 512,
    1024, ... bytes); None if there is no superblock (the library will reject the file)."""
    offset = 0
    while start + offset + 16 <= end:
        base = start + offset
        if buf[base:base + 8] == _HDF5_MAGIC:
            version = buf[base + 8]
            if version in (0, 1):
                return buf[base + 14]
            if version in (2, 3):
                return buf[base + 10]
            return None
        offset = 512 if offset == 0 else offset * 2
    return None


def _uint(buf, pos, size):
    return int.from_bytes(buf[pos:pos + size], "little")


# Searched in copied slices of this size: `mmap.find` itself can read one byte past the end
# of the mapping (CPython's fastsearch peeks at s[i + len(needle)]; a file whose size is a
# multiple of the page size then faults — seen on aarch64 under Python 3.11), and slicing
# copies only bytes that exist.
_FIND_CHUNK = 1 << 18


def _find_all(buf, needle, start, end):
    """Every offset of needle in buf[start:end], reading buf only through bounded slices."""
    for chunk_start in range(start, end, _FIND_CHUNK):
        chunk_end = min(end, chunk_start + _FIND_CHUNK)
        # Overlap by len(needle) - 1 so a match straddling two chunks is found once.
        chunk = buf[chunk_start:min(end, chunk_end + len(needle) - 1)]
        hit = chunk.find(needle)
        while 0 <= hit < chunk_end - chunk_start:
            yield chunk_start + hit
            hit = chunk.find(needle, hit + 1)


def check_global_heaps(buf, path, start=0, end=None, what="the file"):
    """Raise ModelFormatError if a global heap collection in buf[start:end] would hang or
    overrun the HDF5 library.  buf: bytes or mmap (anything that slices to bytes)."""
    end = len(buf) if end is None else end
    length_size = _superblock_length_size(buf, start, end)
    if length_size not in (2, 4, 8, 16, 32):
        return
    header = 8 + length_size  # signature, version, 3 reserved bytes, collection size
    obj_header = 8 + length_size  # index (2), reference count (2), reserved (4), size
    for pos in _find_all(buf, _GCOL, start, end):
        if pos + header <= end and buf[pos + 4] == _GCOL_VERSION:
            size = _uint(buf, pos + 8, length_size)
            if header <= size <= end - pos:
                _walk_collection(buf, pos, size, header, obj_header, length_size, path,
                                 f"{what}: the collection at offset {pos - start}")


def _walk_collection(buf, pos, size, header, obj_header, length_size, path, where):
    """H5HG__cache_heap_deserialize's loop over one collection of `size` bytes at pos."""
    p, stop = pos + header, pos + size
    while p < stop:
        if p + obj_header > stop:  # too small for an object header: trailing free space
            return
        index = _uint(buf, p, 2)
        obj_size = _uint(buf, p + 8, length_size)
        # Objects are padded to 8 bytes; the free-space object (index 0) is not.
        need = obj_header + (obj_size + 7) // 8 * 8 if index else obj_size
        if need == 0 or p + need > stop:
            problem = "has size 0" if need == 0 else "runs past the end of its collection"
            raise ModelFormatError(f"corrupt HDF5 global heap in {where}: its object {index} "
                                   f"at byte {p - pos} {problem}", path=path)
        p += need


def check_file_global_heaps(file, path, start=0, length=None, what="the file"):
    """check_global_heaps over bytes [start, start + length) of an open binary file,
    mapped rather than read (a model file can be tens of MB).  path: for messages."""
    try:
        buf = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # empty, or a file system without mmap: read it once
        file.seek(0)
        buf = file.read()
    try:
        end = len(buf) if length is None else min(len(buf), start + length)
        check_global_heaps(buf, path, start, end, what)
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


def read_attr(obj, name, path, layer=None):
    """obj.attrs[name] (None when absent), after checking its datatype is a string or a
    number, the only kinds of attribute a Keras file has."""
    if name not in obj.attrs:
        return None
    type_class = obj.attrs.type_class(name)
    if type_class not in ATTR_CLASSES:
        raise ModelFormatError(f"attribute {name!r} of {obj.name!r} has a damaged or foreign "
                               f"datatype (HDF5 class {type_class})", path=path, layer=layer)
    return obj.attrs[name]


def is_weight_type(dataset):
    """Whether the dataset's stored datatype is a standard integer or IEEE float."""
    return dataset.is_weight_type()
