"""edgecore's own reader and writer of the HDF5 subset Keras and h5py produce: numpy and
the standard library only, so `pip install edgecore` needs no h5py (issue 15; Termux has
no h5py package).

The API is the small part of h5py's that formats/ uses: File(path, "r"|"w"), Group
(get, [], in, iteration in h5py's order, create_group, create_dataset), Dataset (shape,
dtype, [()], read_direct, np.asarray) and .attrs (values of the types h5py returns: str
for UTF-8 variable-length strings, bytes for ASCII ones, numpy scalars and arrays).

Reading (every structure bounds-checked against the file's length; every failure a
ModelFormatError naming the file, the structure and its offset):
  superblock versions 0-3 (with a user block); object headers version 1 and 2 (with
  continuation blocks); groups as symbol tables (v1 B-tree + local heap + symbol nodes)
  or compact link messages; datasets contiguous, compact, or chunked without filters
  (v1 B-tree index); datatypes integer, IEEE float, fixed and variable-length strings;
  dataspaces scalar, simple and null; attributes (message versions 1-3) with
  variable-length strings in global heap collections.  Refused, naming the feature:
  dense (fractal heap) link or attribute storage, filters (compression), soft and
  external links, shared/committed datatypes, other chunk indexes.
  Loops are bounded: every B-tree node, continuation block and heap collection is
  visited at most once per walk, with a depth limit.

Writing: superblock version 0, version-1 object headers, symbol-table groups (one
B-tree leaf and symbol nodes of up to 2K entries; more via an internal node level),
contiguous datasets (data written straight from the arrays), attributes with
variable-length strings in a global heap (so a 145 KB model_config fits a header) —
the layout h5py writes with libver="earliest", which Keras and h5py open.
"""
import mmap
import os
import struct

import numpy as np

from ..errors import ModelFormatError

MAGIC = b"\x89HDF\r\n\x1a\n"
UNDEF = 0xFFFFFFFFFFFFFFFF
MAX_DEPTH = 64           # B-tree levels / group nesting we follow
MAX_MESSAGES = 1 << 16   # messages in one object header
MAX_RANK = 32            # HDF5's own limit

# Message types
_NIL, _DATASPACE, _LINFO, _DATATYPE, _FILL_OLD, _FILL = 0, 1, 2, 3, 4, 5
_LINK, _EFL, _LAYOUT, _GINFO, _FILTER, _ATTR = 6, 7, 8, 10, 11, 12
_CONT, _STAB, _AINFO = 16, 17, 21


def _fail(reason, path, pos=None):
    where = "" if pos is None else f" (at byte {pos})"
    raise ModelFormatError(f"HDF5: {reason}{where}", path=path)


class _Buffer:
    """The file's bytes (a read-only mmap, or the bytes read once where mmap is not
    available) with bounds-checked access."""

    def __init__(self, path, fileobj=None):
        self.path = path
        self._file = open(path, "rb") if fileobj is None else fileobj
        self._owned = fileobj is None
        try:
            self.data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # empty file, or no mmap on this file system
            self.data = self._file.read()
        self.size = len(self.data)

    def get(self, pos, n, what):
        if pos < 0 or n < 0 or pos + n > self.size:
            _fail(f"{what} at byte {pos}, {n} bytes, lies past the end of the file "
                  f"({self.size} bytes): truncated or corrupt", self.path)
        return self.data[pos:pos + n]

    def read_into(self, pos, dest, what):
        """Copy file bytes [pos, pos + len(dest)) into the writable buffer dest with
        pread, not through the mapping: the weights' pages then stay in the page cache
        and are not counted again in the process's resident size."""
        dest = memoryview(dest).cast("B")
        n = len(dest)
        self.get(pos, 0, what)
        if pos + n > self.size:
            _fail(f"{what} at byte {pos}, {n} bytes, lies past the end of the file "
                  f"({self.size} bytes): truncated or corrupt", self.path)
        done = 0
        fd = self._file.fileno()
        while done < n:
            got = os.preadv(fd, [dest[done:]], pos + done) if hasattr(os, "preadv") else \
                self._seek_read(pos + done, dest[done:])
            if got <= 0:
                _fail(f"{what}: the file ended while reading", self.path, pos + done)
            done += got

    def _seek_read(self, pos, dest):
        self._file.seek(pos)
        return self._file.readinto(dest)

    def uint(self, pos, n, what):
        return int.from_bytes(self.get(pos, n, what), "little")

    def close(self):
        if isinstance(self.data, mmap.mmap):
            try:
                self.data.close()
            except BufferError:  # an array still views it: closed when that goes
                pass
        if self._owned:
            self._file.close()


# --- datatypes -------------------------------------------------------------------------
class _Type:
    """A decoded datatype.  kind: 'int', 'float', 'str' (fixed), 'vlenstr', 'empty'."""

    __slots__ = ("kind", "size", "dtype", "utf8", "hdf5_class")

    def __init__(self, kind, size, dtype=None, utf8=False, hdf5_class=None):
        self.kind, self.size, self.dtype, self.utf8 = kind, size, dtype, utf8
        self.hdf5_class = hdf5_class


def _parse_type(raw, path, pos, what):
    if len(raw) < 8:
        _fail(f"{what}: datatype message too short", path, pos)
    cls = raw[0] & 0x0F
    version = raw[0] >> 4
    bits = raw[1] | raw[2] << 8 | raw[3] << 16
    size = int.from_bytes(raw[4:8], "little")
    if version not in (1, 2, 3):
        _fail(f"{what}: datatype version {version} is not one HDF5 writes (damaged)", path, pos)
    order = ">" if bits & 1 else "<"
    if cls == 0:  # fixed-point
        if size not in (1, 2, 4, 8) or len(raw) < 12:
            _fail(f"{what}: integer datatype of {size} bytes (damaged)", path, pos)
        offset, precision = struct.unpack_from("<HH", raw, 8)
        if offset != 0 or precision != size * 8 or bits & 0b110:
            _fail(f"{what}: integer datatype with padding or offset (not a standard "
                  f"integer; damaged?)", path, pos)
        return _Type("int", size, np.dtype(f"{order}{'i' if bits & 8 else 'u'}{size}"),
                     hdf5_class=0)
    if cls == 1:  # IEEE float
        layouts = {2: (16, 10, 5, 15), 4: (32, 23, 8, 127), 8: (64, 52, 11, 1023)}
        if size not in layouts or len(raw) < 20 or bits & 0x40:
            _fail(f"{what}: float datatype of {size} bytes (damaged or not IEEE)", path, pos)
        offset, precision, epos, esize, mpos, msize, bias = struct.unpack_from(
            "<HHBBBBI", raw, 8)
        bits_, m, e, b = layouts[size]
        if ((offset, precision, epos, esize, mpos, msize, bias) != (0, bits_, m, e, 0, m, b)
                or (bits >> 8) & 0xFF != bits_ - 1 or bits & 0b1110 or (bits >> 4) & 3 != 2):
            _fail(f"{what}: float datatype that is not standard IEEE (damaged?)", path, pos)
        return _Type("float", size, np.dtype(f"{order}f{size}"), hdf5_class=1)
    if cls == 3:  # fixed-length string
        if size == 0:
            _fail(f"{what}: string datatype of size 0 (damaged)", path, pos)
        return _Type("str", size, np.dtype(f"S{size}"), utf8=bool((bits >> 4) & 0xF == 1),
                     hdf5_class=3)
    if cls == 9 and bits & 0xF == 1:  # variable-length string
        if size != 16:
            _fail(f"{what}: variable-length string of element size {size} (damaged)",
                  path, pos)
        return _Type("vlenstr", size, np.dtype(object), utf8=bool((bits >> 8) & 0xF == 1),
                     hdf5_class=9)
    names = {2: "time", 4: "bitfield", 5: "opaque", 6: "compound", 7: "reference",
             8: "enum", 9: "variable-length sequence", 10: "array"}
    raise _ForeignType(cls, names.get(cls, "unknown (damaged)"))


class _ForeignType(Exception):
    def __init__(self, cls, name):
        super().__init__(name)
        self.cls, self.name = cls, name


def _parse_space(raw, path, pos, what):
    """(shape or None for a null dataspace)."""
    if len(raw) < 4 or (raw[0] == 1 and len(raw) < 8):
        _fail(f"{what}: dataspace message too short", path, pos)
    version, rank, flags = raw[0], raw[1], raw[2]
    if version == 1:
        start, kind = 8, (1 if rank else 0)
    elif version == 2:
        start, kind = 4, raw[3]
    else:
        _fail(f"{what}: dataspace version {version} (damaged)", path, pos)
    if rank > MAX_RANK or kind not in (0, 1, 2):
        _fail(f"{what}: dataspace of rank {rank} (damaged)", path, pos)
    if kind == 2:
        return None
    if len(raw) < start + 8 * rank:
        _fail(f"{what}: dataspace message too short for rank {rank}", path, pos)
    return tuple(int.from_bytes(raw[start + 8 * i:start + 8 * i + 8], "little")
                 for i in range(rank))


# --- object headers --------------------------------------------------------------------
class _Header:
    __slots__ = ("messages",)

    def __init__(self, messages):
        self.messages = messages  # [(type, bytes, flags, position)]

    def first(self, mtype):
        for t, raw, flags, pos in self.messages:
            if t == mtype:
                return raw, flags, pos
        return None

    def all(self, mtype):
        return [(raw, flags, pos) for t, raw, flags, pos in self.messages if t == mtype]


class _Reader:
    def __init__(self, path, fileobj=None):
        self.path = os.fspath(path)
        self.buf = _Buffer(self.path, fileobj)
        self._headers = {}
        self._gcols = {}
        self._links = {}
        try:
            self._superblock()
        except BaseException:
            self.buf.close()
            raise

    # superblock
    def _superblock(self):
        buf, base = self.buf, 0
        while True:
            if base + 8 > buf.size:
                _fail("no HDF5 signature (not an HDF5 file, or truncated)", self.path)
            if buf.get(base, 8, "signature") == MAGIC:
                break
            base = 512 if base == 0 else base * 2
        version = buf.uint(base + 8, 1, "superblock")
        if version in (0, 1):
            head = buf.get(base + 9, 7, "superblock")
            so, sl = head[4], head[5]
            if so != 8 or sl != 8:
                _fail(f"superblock with {so}-byte offsets and {sl}-byte lengths (only 8 is "
                      f"written by h5py; damaged?)", self.path, base)
            p = base + 24 + (4 if version == 1 else 0)
            base_addr = buf.uint(p, 8, "superblock")
            root_entry = p + 32
            eof = buf.uint(p + 16, 8, "superblock")
            self.base = base_addr
            self.root_addr = self.base + buf.uint(root_entry + 8, 8, "root group entry")
        elif version in (2, 3):
            so, sl = buf.uint(base + 9, 1, "superblock"), buf.uint(base + 10, 1, "superblock")
            if so != 8 or sl != 8:
                _fail(f"superblock with {so}-byte offsets and {sl}-byte lengths", self.path, base)
            self.base = buf.uint(base + 12, 8, "superblock")
            ext = buf.uint(base + 20, 8, "superblock")
            if ext != UNDEF:
                _fail("superblock extension (unsupported feature: file space or shared "
                      "message settings)", self.path, base)
            self.root_addr = self.base + buf.uint(base + 36, 8, "superblock")
            eof = buf.uint(base + 28, 8, "superblock")
        else:
            _fail(f"superblock version {version} (unknown; damaged?)", self.path, base)
        if self.base + eof > buf.size:  # as the HDF5 library refuses it
            _fail(f"truncated file: the superblock says it ends at byte {self.base + eof}, "
                  f"it has {buf.size} bytes", self.path)

    def addr(self, raw, off):
        """An address inside a message (relative to the base address)."""
        value = int.from_bytes(raw[off:off + 8], "little")
        return UNDEF if value == UNDEF else self.base + value

    # object headers
    def header(self, addr):
        cached = self._headers.get(addr)
        if cached is None:
            cached = self._headers[addr] = self._parse_header(addr)
        return cached

    def _parse_header(self, addr):
        buf = self.buf
        first = buf.get(addr, 4, "object header")
        messages, seen = [], set()
        if first == b"OHDR":
            return self._parse_header_v2(addr)
        if first[0] != 1:
            _fail(f"object header version {first[0]} (damaged, or not an object header)",
                  self.path, addr)
        count = buf.uint(addr + 2, 2, "object header")
        size = buf.uint(addr + 8, 4, "object header")
        blocks = [(addr + 16, size)]
        while blocks:
            start, length = blocks.pop(0)
            if start in seen or len(seen) > 4096:
                _fail("object header continuation blocks form a cycle", self.path, start)
            seen.add(start)
            buf.get(start, length, "object header block")
            p, end = start, start + length
            while p + 8 <= end:
                mtype, msize, flags = struct.unpack("<HHB", buf.get(p, 5, "header message"))
                if p + 8 + msize > end:
                    _fail(f"object header message of {msize} bytes runs past its block",
                          self.path, p)
                raw = buf.get(p + 8, msize, "header message")
                if mtype == _CONT:
                    if msize < 16:
                        _fail("continuation message too short", self.path, p)
                    blocks.append((self.addr(raw, 0), int.from_bytes(raw[8:16], "little")))
                elif mtype != _NIL:
                    messages.append((mtype, raw, flags, p))
                if len(messages) > min(count, MAX_MESSAGES):
                    _fail("object header holds more messages than it declares", self.path, addr)
                p += 8 + msize
        return _Header(messages)

    def _parse_header_v2(self, addr):
        buf = self.buf
        version, flags = buf.uint(addr + 4, 1, "object header"), buf.uint(addr + 5, 1, "object header")
        if version != 2:
            _fail(f"object header version {version} after OHDR (damaged)", self.path, addr)
        p = addr + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        size = buf.uint(p, width, "object header")
        blocks = [(p + width, size)]
        order = 2 if flags & 0x04 else 0
        messages, seen = [], set()
        while blocks:
            start, length = blocks.pop(0)
            if start in seen or len(seen) > 4096:
                _fail("object header continuation blocks form a cycle", self.path, start)
            seen.add(start)
            buf.get(start, length, "object header block")
            if start != p + width:  # a continuation block: OCHK signature, checksum at end
                if buf.get(start, 4, "continuation block") != b"OCHK":
                    _fail("continuation block without its OCHK signature", self.path, start)
                q, end = start + 4, start + length - 4
            else:
                q, end = start, start + length
            while q + 4 + order <= end:
                mtype = buf.uint(q, 1, "header message")
                msize = buf.uint(q + 1, 2, "header message")
                mflags = buf.uint(q + 3, 1, "header message")
                q += 4 + order
                if q + msize > end:
                    _fail(f"object header message of {msize} bytes runs past its block",
                          self.path, q)
                raw = buf.get(q, msize, "header message")
                if mtype == _CONT:
                    if msize < 16:
                        _fail("continuation message too short", self.path, q)
                    blocks.append((self.addr(raw, 0), int.from_bytes(raw[8:16], "little")))
                elif mtype != _NIL:
                    messages.append((mtype, raw, mflags, q))
                if len(messages) > MAX_MESSAGES:
                    _fail("object header has too many messages", self.path, addr)
                q += msize
        return _Header(messages)

    # groups
    def group_links(self, addr, where):
        """{name: address} of a group, in h5py's order; parsed once per file."""
        links = self._links.get(addr)
        if links is None:
            links = self._links[addr] = dict(self.links(addr, where))
        return links

    def links(self, addr, where):
        """[(name, object address)] of a group, in h5py's order (by name)."""
        header = self.header(addr)
        stab = header.first(_STAB)
        if stab is not None:
            raw, _, pos = stab
            if len(raw) < 16:
                _fail(f"{where}: symbol table message too short", self.path, pos)
            return self._symbol_table(self.addr(raw, 0), self.addr(raw, 8), where)
        linfo = header.first(_LINFO)
        if linfo is not None:
            raw, _, pos = linfo
            fheap_off = 2 + (8 if raw[1] & 1 else 0)
            if len(raw) < fheap_off + 8:
                _fail(f"{where}: link info message too short", self.path, pos)
            if int.from_bytes(raw[fheap_off:fheap_off + 8], "little") != UNDEF:
                _fail(f"{where}: group with dense link storage (fractal heap; unsupported "
                      f"feature)", self.path, pos)
        result = []
        for raw, _, pos in header.all(_LINK):
            result.append(self._link(raw, pos, where))
        result.sort(key=lambda item: item[0].encode("utf-8", "surrogateescape"))
        return result

    def _link(self, raw, pos, where):
        try:
            if raw[0] != 1:
                _fail(f"{where}: link message version {raw[0]} (damaged)", self.path, pos)
            flags, p = raw[1], 2
            kind = 0
            if flags & 0x08:
                kind, p = raw[p], p + 1
            if flags & 0x04:
                p += 8
            utf8 = False
            if flags & 0x10:
                utf8, p = raw[p] == 1, p + 1
            width = 1 << (flags & 3)
            length = int.from_bytes(raw[p:p + width], "little")
            p += width
            name_bytes = bytes(raw[p:p + length])
            if len(name_bytes) != length or length == 0:
                raise IndexError
            p += length
            name = name_bytes.decode("utf-8", "surrogateescape")
            if kind != 0:  # listed; opening it raises (Group._child)
                feature = {1: "soft link", 64: "external link"}.get(kind, f"link type {kind}")
                return name, (feature, pos)
            if len(raw) < p + 8:
                raise IndexError
            return name, self.addr(raw, p)
        except IndexError:
            _fail(f"{where}: link message too short", self.path, pos)

    def _symbol_table(self, btree, heap, where):
        buf = self.buf
        if buf.get(heap, 4, "local heap") != b"HEAP":
            _fail(f"{where}: the group's local heap has no HEAP signature", self.path, heap)
        heap_size = buf.uint(heap + 8, 8, "local heap")
        heap_data = self.base + buf.uint(heap + 24, 8, "local heap")
        names = buf.get(heap_data, heap_size, "local heap data")
        result, visited = [], set()

        def walk(node, depth):
            if node in visited:
                _fail(f"{where}: the group's B-tree is cyclic", self.path, node)
            if depth > MAX_DEPTH:
                _fail(f"{where}: the group's B-tree is deeper than {MAX_DEPTH}", self.path, node)
            visited.add(node)
            if buf.get(node, 4, "B-tree node") != b"TREE":
                _fail(f"{where}: B-tree node without its TREE signature", self.path, node)
            ntype, level, used = buf.uint(node + 4, 1, "B-tree"), buf.uint(node + 5, 1, "B-tree"), \
                buf.uint(node + 6, 2, "B-tree")
            if ntype != 0:
                _fail(f"{where}: group B-tree node of type {ntype}", self.path, node)
            p = node + 24
            for i in range(used):
                child = self.base + buf.uint(p + 8 + 16 * i, 8, "B-tree child")
                if level > 0:
                    walk(child, depth + 1)
                else:
                    snod(child)

        def snod(node):
            if node in visited:
                _fail(f"{where}: a symbol table node is reached twice (cyclic B-tree)",
                      self.path, node)
            visited.add(node)
            if buf.get(node, 4, "symbol table node") != b"SNOD":
                _fail(f"{where}: symbol table node without its SNOD signature", self.path, node)
            count = buf.uint(node + 6, 2, "symbol table node")
            for i in range(count):
                entry = buf.get(node + 8 + 40 * i, 40, "symbol table entry")
                offset = int.from_bytes(entry[0:8], "little")
                end = names.find(b"\0", offset) if offset < len(names) else -1
                if end < 0:
                    _fail(f"{where}: a link name lies outside the group's local heap",
                          self.path, node)
                name = names[offset:end].decode("utf-8", "surrogateescape")
                result.append((name, self.base + int.from_bytes(entry[8:16], "little")))

        walk(btree, 0)
        return result

    # global heap
    def gheap_object(self, collection, index, where):
        objects = self._gcols.get(collection)
        if objects is None:
            objects = self._gcols[collection] = self._parse_gcol(collection, where)
        if index not in objects:
            _fail(f"{where}: variable-length data refers to object {index} of the global heap "
                  f"collection at {collection}, which it does not hold", self.path)
        start, size = objects[index]
        return self.buf.get(start, size, "global heap object")

    def _parse_gcol(self, pos, where):
        buf = self.buf
        if buf.get(pos, 4, "global heap") != b"GCOL" or buf.uint(pos + 4, 1, "global heap") != 1:
            _fail(f"{where}: variable-length data points at no global heap collection",
                  self.path, pos)
        size = buf.uint(pos + 8, 8, "global heap")
        if size < 16 or pos + size > buf.size:
            _fail(f"{where}: global heap collection of {size} bytes runs past the end of "
                  f"the file", self.path, pos)
        objects, p, stop = {}, pos + 16, pos + size
        while p + 16 <= stop:
            index = buf.uint(p, 2, "global heap object")
            obj_size = buf.uint(p + 8, 8, "global heap object")
            need = 16 + (obj_size + 7) // 8 * 8 if index else obj_size
            if need == 0 or p + need > stop:
                problem = "has size 0" if need == 0 else "runs past the end of its collection"
                _fail(f"corrupt global heap in the collection at offset {pos}: its object "
                      f"{index} {problem}", self.path, p)
            if index == 0:
                break
            objects[index] = (p + 16, obj_size)
            p += need
        return objects

    # values
    def read_values(self, dtype, shape, raw_or_addr, nbytes_available, where, pos,
                    attribute=True):
        """numpy array of `shape` from data bytes (a message's bytes for attributes)."""
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        need = count * dtype.size
        if need > nbytes_available:
            _fail(f"{where}: {count} values need {need} bytes, {nbytes_available} are stored",
                  self.path, pos)
        data = raw_or_addr[:need]
        if dtype.kind == "vlenstr":
            out = np.empty(count, dtype=object)
            for i in range(count):
                length, coll, index = struct.unpack_from("<IQI", data, 16 * i)
                if length == 0 and coll == 0:
                    out[i] = b""
                else:
                    value = bytes(self.gheap_object(self.base + coll, index, where)[:length])
                    if len(value) != length:
                        _fail(f"{where}: variable-length string longer than its heap object",
                              self.path, pos)
                    out[i] = value
            if dtype.utf8 or attribute:  # h5py: a string attribute reads as str
                for i in range(count):
                    out[i] = out[i].decode("utf-8", "surrogateescape")
            return out.reshape(shape)
        return np.frombuffer(bytes(data), dtype=dtype.dtype, count=count).reshape(shape)

    def close(self):
        self._headers.clear()
        self._gcols.clear()
        self.buf.close()


# --- h5py-like objects ---------------------------------------------------------------------
class AttributeManager:
    def __init__(self, obj):
        self._obj = obj
        self._items = None  # name -> (type or _ForeignType, shape, raw, pos)
        self._written = {}

    def _load(self):
        if self._items is None:
            self._items = {}
            if self._obj._reader is not None:
                for raw, _, pos in self._obj._header().all(_ATTR):
                    name, entry = self._obj._parse_attr(raw, pos)
                    self._items[name] = entry
        return self._items

    def __contains__(self, name):
        return name in self._written or name in self._load()

    def keys(self):
        return list(self._written) + list(self._load())

    __iter__ = lambda self: iter(self.keys())  # noqa: E731

    def __len__(self):
        return len(self.keys())

    def type_class(self, name):
        """HDF5 datatype class of the attribute (0 int, 1 float, 3 string, 9 vlen, ...)."""
        entry = self._load()[name]
        return entry[0].cls if isinstance(entry[0], _ForeignType) else entry[0].hdf5_class

    def __getitem__(self, name):
        if name in self._written:
            return self._written[name]
        entry = self._load().get(name)
        if entry is None:
            raise KeyError(f"no attribute {name!r}")
        dtype, shape, data, pos = entry
        where = f"attribute {name!r} of {self._obj.name!r}"
        reader = self._obj._reader
        if isinstance(dtype, _ForeignType):
            _fail(f"{where} has datatype class {dtype.cls} ({dtype.name}), not a string "
                  f"or number", reader.path, pos)
        if shape is None:
            return None  # h5py returns an Empty; Keras never writes one
        value = reader.read_values(dtype, shape, data, len(data), where, pos)
        if dtype.kind == "str" and shape == ():
            return value[()]
        if shape == ():
            return value[()]
        return value

    def get(self, name, default=None):
        return self[name] if name in self else default

    def __setitem__(self, name, value):
        if self._obj._writer is None:
            raise ValueError("file opened for reading")
        self._written[name] = value


class _Node:
    def __init__(self, reader, addr, name, writer=None):
        self._reader, self._addr, self.name, self._writer = reader, addr, name, writer
        self.attrs = AttributeManager(self)

    def _header(self):
        return self._reader.header(self._addr)

    def _parse_attr(self, raw, pos):
        path, where = self._reader.path, f"an attribute of {self.name!r}"
        try:
            version = raw[0]
            name_len, type_len, space_len = struct.unpack_from("<HHH", raw, 2)
            if version == 1:
                pad = lambda n: (n + 7) // 8 * 8  # noqa: E731
                p = 8
            elif version in (2, 3):
                pad = lambda n: n  # noqa: E731
                p = 8 if version == 2 else 9
            else:
                _fail(f"{where}: attribute message version {version} (damaged)", path, pos)
            if raw[1] & 3:
                _fail(f"{where}: shared datatype or dataspace (unsupported feature)", path, pos)
            name = bytes(raw[p:p + name_len]).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            p += pad(name_len)
            type_raw = raw[p:p + type_len]
            p += pad(type_len)
            space_raw = raw[p:p + space_len]
            p += pad(space_len)
            if len(space_raw) != space_len or len(type_raw) != type_len:
                raise IndexError
        except (IndexError, struct.error):
            _fail(f"{where}: attribute message too short (damaged)", path, pos)
        where = f"attribute {name!r} of {self.name!r}"
        try:
            dtype = _parse_type(type_raw, path, pos, where)
        except _ForeignType as foreign:
            dtype = foreign
        shape = _parse_space(space_raw, path, pos, where)
        return name, (dtype, shape, raw[p:], pos)


class Dataset(_Node):
    def __init__(self, reader, addr, name):
        super().__init__(reader, addr, name)
        header = self._header()
        where = f"dataset {name!r}"
        path = reader.path
        space = header.first(_DATASPACE)
        dtype = header.first(_DATATYPE)
        layout = header.first(_LAYOUT)
        if space is None or dtype is None or layout is None:
            _fail(f"{where}: object header lacks its dataspace, datatype or layout", path, addr)
        self.shape = _parse_space(space[0], path, space[2], where)
        if dtype[1] & 2:
            _fail(f"{where}: committed (shared) datatype (unsupported feature)", path, dtype[2])
        try:
            self._type = _parse_type(dtype[0], path, dtype[2], where)
        except _ForeignType as foreign:
            self._type = foreign
        self._layout = layout
        self._filters = header.first(_FILTER) is not None
        if header.first(_EFL) is not None:
            _fail(f"{where}: external file storage (unsupported feature)", path, addr)

    @property
    def dtype(self):
        return np.dtype(object) if isinstance(self._type, _ForeignType) else self._type.dtype

    def is_weight_type(self):
        """A standard integer or IEEE float (anything else cannot be a Keras weight)."""
        return not isinstance(self._type, _ForeignType) and self._type.kind in ("int", "float")

    def type_description(self):
        t = self._type
        return f"class {t.cls} ({t.name})" if isinstance(t, _ForeignType) else str(t.dtype)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape is not None else 0

    def _check(self):
        if isinstance(self._type, _ForeignType):
            _fail(f"dataset {self.name!r} has datatype class {self._type.cls} "
                  f"({self._type.name})", self._reader.path)

    def read_direct(self, out):
        """Read the whole dataset into `out` (C-contiguous, same shape), converting the
        stored type to out's on the way; no other full copy is made."""
        self._check()
        if tuple(out.shape) != tuple(self.shape or ()):
            raise ValueError(f"read_direct: out has shape {out.shape}, dataset {self.shape}")
        flat = out.reshape(-1)
        self._fill(flat)
        return out

    def __getitem__(self, key):
        if key not in ((), Ellipsis, slice(None)):
            raise TypeError("only [()], [...] and [:] are supported")
        self._check()
        if self.shape is None:
            return None
        if self._type.kind == "vlenstr":
            raise TypeError(f"dataset {self.name!r} holds variable-length strings")
        out = np.empty(self.shape, dtype=self._type.dtype.newbyteorder("="))
        self._fill(out.reshape(-1))
        return out[()] if self.shape == () else out

    def __array__(self, dtype=None, copy=None):
        value = np.asarray(self[()])
        return value if dtype is None else value.astype(dtype)

    def _fill(self, flat):
        reader, path = self._reader, self._reader.path
        raw, _, pos = self._layout
        where = f"dataset {self.name!r}"
        count = flat.size
        itemsize = self._type.size
        stored = self._type.dtype
        version = raw[0] if raw else 0
        if version != 3:
            _fail(f"{where}: data layout message version {version} (only version 3, what "
                  f"h5py writes with the default settings, is supported)", path, pos)
        cls = raw[1]
        if cls == 1:  # contiguous
            if len(raw) < 18:
                _fail(f"{where}: layout message too short", path, pos)
            addr = reader.addr(raw, 2)
            size = int.from_bytes(raw[10:18], "little")
            if count == 0:
                return
            if addr == UNDEF:  # never written: h5py returns the fill value, zeros
                flat[...] = 0
                return
            if size < count * itemsize:
                _fail(f"{where}: stores {size} bytes for {count} values", path, pos)
            if flat.dtype == stored and flat.flags.c_contiguous:  # straight into place
                reader.buf.read_into(addr, flat, f"{where}: data")
                return
            step = max(1, (1 << 20) // itemsize)  # else converted 1 MiB at a time
            for start in range(0, count, step):
                part = np.empty(min(step, count - start), stored)
                reader.buf.read_into(addr + start * itemsize, part, f"{where}: data")
                flat[start:start + part.size] = part
        elif cls == 0:  # compact
            size = int.from_bytes(raw[2:4], "little")
            if size < count * itemsize or len(raw) < 4 + count * itemsize:
                _fail(f"{where}: compact data shorter than its {count} values", path, pos)
            flat[...] = np.frombuffer(bytes(raw[4:4 + count * itemsize]), stored, count)
        elif cls == 2:
            self._fill_chunked(flat, raw, pos, where)
        else:
            _fail(f"{where}: data layout class {cls} (damaged)", path, pos)

    def _fill_chunked(self, flat, raw, pos, where):
        reader, path = self._reader, self._reader.path
        if self._filters:
            _fail(f"{where}: chunked dataset with filters (compression; unsupported "
                  f"feature)", path, pos)
        rank = raw[2] - 1
        shape = tuple(self.shape or ())
        if rank != len(shape) or len(raw) < 11 + 4 * (rank + 1):
            _fail(f"{where}: chunked layout of the wrong rank", path, pos)
        btree = reader.addr(raw, 3)
        chunk = tuple(int.from_bytes(raw[11 + 4 * i:15 + 4 * i], "little") for i in range(rank))
        if any(c == 0 for c in chunk):
            _fail(f"{where}: chunk dimension 0 (damaged)", path, pos)
        out = flat.reshape(shape)
        if btree == UNDEF:
            out[...] = 0
            return
        buf, visited = reader.buf, set()
        key_size = 8 + 8 * (rank + 1)
        stored = self._type.dtype
        chunk_bytes = int(np.prod(chunk)) * self._type.size

        def walk(node, depth):
            if node in visited or depth > MAX_DEPTH:
                _fail(f"{where}: the chunk B-tree is cyclic or too deep", path, node)
            visited.add(node)
            if buf.get(node, 4, "B-tree node") != b"TREE" or buf.uint(node + 4, 1, "B-tree") != 1:
                _fail(f"{where}: chunk B-tree node without its TREE signature", path, node)
            level, used = buf.uint(node + 5, 1, "B-tree"), buf.uint(node + 6, 2, "B-tree")
            p = node + 24
            for i in range(used):
                key = buf.get(p + i * (key_size + 8), key_size, "chunk key")
                child = reader.base + buf.uint(p + i * (key_size + 8) + key_size, 8, "chunk")
                if level > 0:
                    walk(child, depth + 1)
                    continue
                size, mask = struct.unpack_from("<II", key, 0)
                offs = struct.unpack_from(f"<{rank}Q", key, 8)
                if mask or size != chunk_bytes:
                    _fail(f"{where}: filtered chunk (unsupported feature)", path, child)
                if any(o % c or o >= s for o, c, s in zip(offs, chunk, shape)):
                    _fail(f"{where}: chunk at an impossible offset {offs}", path, child)
                data = np.frombuffer(buf.get(child, chunk_bytes, f"{where}: chunk"), stored)
                block = data.reshape(chunk)
                dst = tuple(slice(o, min(o + c, s)) for o, c, s in zip(offs, chunk, shape))
                src = tuple(slice(0, d.stop - d.start) for d in dst)
                out[dst] = block[src]

        walk(btree, 0)


class Group(_Node):
    def __init__(self, reader, addr, name, writer=None):
        super().__init__(reader, addr, name, writer)
        self._links_cache = None
        self._children = {}  # writer: name -> Group / _NewDataset, in creation order

    def _links(self):
        if self._writer is not None:
            return {n: c for n, c in self._children.items()}
        if self._links_cache is None:
            self._links_cache = self._reader.group_links(self._addr, f"group {self.name!r}")
        return self._links_cache

    def keys(self):
        if self._writer is not None:
            return sorted(self._children, key=lambda n: n.encode("utf-8"))
        return list(self._links())

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._links())

    def __contains__(self, name):
        try:
            return self.get(name) is not None
        except ModelFormatError:
            return False

    def _child_name(self, part):
        return (self.name.rstrip("/") + "/" + part) if self.name != "/" else "/" + part

    def get(self, name, default=None):
        node = self
        for part in [p for p in str(name).split("/") if p]:
            if not isinstance(node, Group):
                return default
            node = node._child(part)
            if node is None:
                return default
        return node

    def __getitem__(self, name):
        node = self.get(name)
        if node is None:
            raise KeyError(f"no object {name!r} in {self.name!r}")
        return node

    def items(self):
        return [(k, self[k]) for k in self.keys()]

    def _child(self, part):
        if self._writer is not None:
            return self._children.get(part)
        addr = self._links().get(part)
        if addr is None:
            return None
        if isinstance(addr, tuple):
            _fail(f"group {self.name!r}: {part!r} is a {addr[0]} (unsupported feature)",
                  self._reader.path, addr[1])
        header = self._reader.header(addr)
        name = self._child_name(part)
        if header.first(_STAB) is not None or header.first(_LINFO) is not None or \
                header.first(_LINK) is not None:
            return Group(self._reader, addr, name)
        if header.first(_LAYOUT) is not None:
            return Dataset(self._reader, addr, name)
        if header.first(_DATATYPE) is not None:
            _fail(f"{name!r} is a committed datatype, not a group or dataset", self._reader.path,
                  addr)
        return Group(self._reader, addr, name)  # an empty new-style group

    # writing
    def create_group(self, name):
        node = self
        parts = [p for p in name.split("/") if p]
        for part in parts:
            child = node._children.get(part)
            if child is None:
                child = node._children[part] = Group(None, None, node._child_name(part),
                                                     self._writer)
            elif not isinstance(child, Group):
                raise ValueError(f"{child.name!r} is a dataset")
            node = child
        return node

    def create_dataset(self, name, shape=None, dtype=None, data=None):
        prefix, _, leaf = name.rpartition("/")
        parent = self.create_group(prefix) if prefix else self
        if leaf in parent._children:
            raise ValueError(f"{leaf!r} already exists in {parent.name!r}")
        array = _NewDataset(parent._child_name(leaf), shape, dtype, data, self._writer)
        parent._children[leaf] = array
        return array


class _NewDataset:
    """A dataset being written: its data is held as the array it is given."""

    def __init__(self, name, shape, dtype, data, writer):
        self.name = name
        self._writer = writer
        if data is not None:
            data = np.asarray(data)
            shape = data.shape if shape is None else tuple(shape)
            dtype = data.dtype if dtype is None else np.dtype(dtype)
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype if dtype is not None else np.float32)
        if self.dtype.kind not in "iuf":
            raise TypeError(f"dataset {name!r}: dtype {self.dtype} (only numbers are written)")
        if data is not None:  # one copy, in the dtype written (not zeros, then a copy)
            self.data = np.array(np.broadcast_to(data, self.shape), dtype=self.dtype, order="C")
        else:
            self.data = np.zeros(self.shape, self.dtype)
        self.attrs = AttributeManager(self)
        self._reader = None

    def __setitem__(self, key, value):
        self.data[key] = value


def _item(value):
    """One attribute's value as (kind, numpy array, utf8)."""
    if isinstance(value, str):
        return "vlen", np.array([value.encode("utf-8")], dtype=object).reshape(()), True
    if isinstance(value, bytes):
        return "vlen", np.array([value], dtype=object).reshape(()), False
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (bytes, str)) for v in value):
        utf8 = isinstance(value[0], str)
        arr = np.empty(len(value), dtype=object)
        for i, v in enumerate(value):
            arr[i] = v.encode("utf-8") if isinstance(v, str) else v
        return "vlen", arr, utf8
    array = np.asarray(value)
    if array.dtype.kind in "SU" or array.dtype == object:
        flat = array.reshape(-1)
        arr = np.empty(flat.size, dtype=object)
        for i, v in enumerate(flat):
            v = v.item() if isinstance(v, np.generic) else v
            arr[i] = v.encode("utf-8") if isinstance(v, str) else bytes(v)
        return "vlen", arr.reshape(array.shape), array.dtype.kind == "U"
    if array.dtype.kind == "b":
        array = array.astype(np.int8)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"cannot write an attribute of dtype {array.dtype}")
    return "num", np.array(array, dtype=array.dtype.newbyteorder("<"), order="C"), False


# --- writer ---------------------------------------------------------------------------
def _pad8(n):
    return (n + 7) // 8 * 8


def _type_message(dtype=None, vlen=None):
    """Datatype message bytes for a numeric dtype, or a vlen string (vlen = utf8 flag)."""
    if vlen is not None:
        base = bytes([0x10, 0, 0, 0]) + struct.pack("<IHH", 1, 0, 8)  # unsigned char
        return bytes([0x19, 0x01, 0x01 if vlen else 0x00, 0]) + struct.pack("<I", 16) + base
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        layouts = {2: (16, 10, 5, 10, 15), 4: (32, 23, 8, 23, 127), 8: (64, 52, 11, 52, 1023)}
        bits, epos, esize, msize, bias = layouts[dtype.itemsize]
        return (bytes([0x11, 0x20, bits - 1, 0]) + struct.pack("<I", dtype.itemsize)
                + struct.pack("<HHBBBBI", 0, bits, epos, esize, 0, msize, bias))
    signed = 0x08 if dtype.kind == "i" else 0
    return (bytes([0x10, signed, 0, 0]) + struct.pack("<I", dtype.itemsize)
            + struct.pack("<HH", 0, dtype.itemsize * 8))


def _space_message(shape):
    return bytes([1, len(shape), 0, 0, 0, 0, 0, 0]) + b"".join(
        struct.pack("<Q", d) for d in shape)


class _Writer:
    """Serialises a tree of Groups / _NewDatasets to a file, superblock version 0."""

    LEAF_K = 4       # group leaf node K: symbol nodes hold up to 2K entries
    INTERNAL_K = 16  # group internal node K: B-tree nodes hold up to 2K children

    def __init__(self, f):
        self.f = f
        self.pos = 0

    def alloc(self, n):
        at = self.pos
        self.pos += _pad8(n)
        return at

    def write_at(self, at, data):
        self.f.seek(at)
        self.f.write(data)

    def write(self, root):
        self.pos = 96  # superblock
        self.collections = []
        # Pass 1: lay out every object; vlen strings first go into collections.
        self._pending = []
        root_addr, btree, heap = self.place_group(root)
        self.flush_gheaps()
        eof = self.pos
        sb = (MAGIC + bytes([0, 0, 0, 0, 0, 8, 8, 0]) + struct.pack("<HH", self.LEAF_K,
                                                                  self.INTERNAL_K)
              + struct.pack("<I", 0) + struct.pack("<QQQQ", 0, UNDEF, eof, UNDEF)
              + struct.pack("<QQII", 0, root_addr, 1, 0) + struct.pack("<QQ", btree, heap))
        self.write_at(0, sb)
        self.f.seek(0, 2)
        if self.f.tell() < eof:
            self.f.truncate(eof)

    def attr_messages(self, node):
        messages = []
        for name, value in node.attrs._written.items():
            kind, array, utf8 = _item(value)
            if kind == "vlen":
                tmsg = _type_message(vlen=utf8)
                data = bytearray()
                for v in array.reshape(-1):
                    index, coll = self.gheap_add(v)
                    data += struct.pack("<IQI", len(v), 0, index)
                    self._pending.append((len(data) - 12, coll))  # patched below
                fixups = self._pending
                self._pending = []
            else:
                tmsg = _type_message(array.dtype)
                data = array.tobytes()
                fixups = []
            smsg = _space_message(array.shape)
            bname = name.encode("utf-8") + b"\0"
            head = bytes([1, 0]) + struct.pack("<HHH", len(bname), len(tmsg), len(smsg))
            body = bytearray(head + bname.ljust(_pad8(len(bname)), b"\0")
                             + tmsg.ljust(_pad8(len(tmsg)), b"\0")
                             + smsg.ljust(_pad8(len(smsg)), b"\0"))
            start = len(body)
            body += data
            messages.append((_ATTR, body, [(start + off, coll) for off, coll in fixups]))
        return messages

    # global heap: collections of at most 1 MiB; addresses patched in at flush
    def gheap_add(self, value):
        if not self.collections or self.collections[-1][1] + 16 + _pad8(len(value)) > (1 << 20) \
                and self.collections[-1][0]:
            self.collections.append([[], 16])
        coll = self.collections[-1]
        coll[0].append(value)
        coll[1] += 16 + _pad8(len(value))
        return len(coll[0]), len(self.collections) - 1

    def flush_gheaps(self):
        for i, (values, size) in enumerate(self.collections):
            size = max(size + 16, 4096)  # room for the free-space object, as HDF5 keeps
            at = self.alloc(size)
            out = bytearray(b"GCOL" + bytes([1, 0, 0, 0]) + struct.pack("<Q", size))
            for index, v in enumerate(values, 1):
                out += struct.pack("<HHIQ", index, 0, 0, len(v)) + v.ljust(_pad8(len(v)), b"\0")
            free = size - len(out)
            out += struct.pack("<HHIQ", 0, 0, 0, free)
            out = out.ljust(size, b"\0")
            self.write_at(at, bytes(out))
            for header_at, offset in self.gheap_fixups.get(i, []):
                self.write_at(header_at + offset, struct.pack("<Q", at))

    def header(self, messages):
        """Allocate and write a v1 object header holding messages [(type, body, fixups)];
        returns its address.  fixups: [(offset in body, collection)] of vlen references."""
        blob = bytearray()
        patches = []
        for mtype, body, fixups in messages:
            size = _pad8(len(body))
            if size > 0xFFFF:
                raise ValueError("an attribute larger than the 64 KB object header limit")
            start = len(blob) + 8
            flags = 1 if mtype in (_DATATYPE, _FILL) else 0  # constant, as HDF5 marks them
            blob += struct.pack("<HHB3x", mtype, size, flags) + bytes(body).ljust(size, b"\0")
            patches += [(start + off, coll) for off, coll in fixups]
        count = len(messages)
        at = self.alloc(16 + len(blob))
        self.write_at(at, struct.pack("<BBHII4x", 1, 0, count, 1, len(blob)) + bytes(blob))
        for off, coll in patches:
            self.gheap_fixups.setdefault(coll, []).append((at + 16, off))
        return at

    def place_dataset(self, ds):
        data = np.ascontiguousarray(ds.data, dtype=ds.dtype.newbyteorder("<"))
        nbytes = data.nbytes
        data_at = self.alloc(nbytes) if nbytes else UNDEF
        if nbytes:
            self.f.seek(data_at)
            self.f.write(memoryview(data).cast("B"))
        fill = bytes([2, 2, 2, 1]) + struct.pack("<I", 0)  # h5py's: late, if set, default
        layout = bytes([3, 1]) + struct.pack("<QQ", data_at, nbytes)
        messages = [(_DATASPACE, _space_message(ds.shape), []),
                    (_DATATYPE, _type_message(ds.dtype), []),
                    (_FILL, fill, []), (_LAYOUT, layout, [])]
        return self.header(messages + self.attr_messages(ds))

    def place_group(self, group):
        names = sorted(group._children, key=lambda n: n.encode("utf-8"))
        children = []
        for name in names:
            child = group._children[name]
            if isinstance(child, Group):
                children.append((name, self.place_group(child)[0], None))
            else:
                children.append((name, self.place_dataset(child), None))
        # local heap: "" at 0, then the names
        heap_data = bytearray(b"\0" * 8)
        offsets = []
        for name, _, _ in children:
            offsets.append(len(heap_data))
            heap_data += name.encode("utf-8") + b"\0"
            heap_data = heap_data.ljust(_pad8(len(heap_data)), b"\0")
        free = 1  # HDF5's "no free block"
        if len(heap_data) <= 72:  # h5py's minimal heap is 88 bytes, the rest a free block
            free = len(heap_data)
            heap_data += struct.pack("<QQ", 1, 88 - len(heap_data))
            heap_data = heap_data.ljust(88, b"\0")
        heap_at = self.alloc(32)
        data_at = self.alloc(len(heap_data))
        self.write_at(heap_at, b"HEAP" + bytes([0, 0, 0, 0]) + struct.pack(
            "<QQQ", len(heap_data), free, data_at))
        self.write_at(data_at, bytes(heap_data))
        # symbol table nodes of up to 2 * LEAF_K entries
        cap = 2 * self.LEAF_K
        snods = []
        for start in range(0, len(children), cap):
            part = list(zip(offsets[start:start + cap], children[start:start + cap]))
            node = bytearray(b"SNOD" + bytes([1, 0]) + struct.pack("<H", len(part)))
            for off, (_, addr, _) in part:
                node += struct.pack("<QQII16x", off, addr, 0, 0)
            node = node.ljust(8 + 40 * cap, b"\0")
            at = self.alloc(len(node))
            self.write_at(at, bytes(node))
            snods.append((at, part[-1][0]))
        btree_at = self._btree(snods, level=0)
        stab = struct.pack("<QQ", btree_at, heap_at)
        addr = self.header([(_STAB, stab, [])] + self.attr_messages(group))
        return addr, btree_at, heap_at

    def _btree(self, children, level):
        """A group B-tree over children [(address, key = heap offset of last name)]."""
        cap = 2 * self.INTERNAL_K
        if len(children) > cap:
            nodes = [(self._node(children[i:i + cap], level), children[i:i + cap][-1][1])
                     for i in range(0, len(children), cap)]
            return self._btree(nodes, level + 1)
        return self._node(children, level)

    def _node(self, children, level):
        size = 24 + 8 * (2 * self.INTERNAL_K + 1) + 8 * 2 * self.INTERNAL_K
        node = bytearray(b"TREE" + bytes([0, level]) + struct.pack("<H", len(children))
                         + struct.pack("<QQ", UNDEF, UNDEF))
        node += struct.pack("<Q", 0)
        for addr, key in children:
            node += struct.pack("<QQ", addr, key)
        node = node.ljust(size, b"\0")
        at = self.alloc(size)
        self.write_at(at, bytes(node))
        return at


class File(Group):
    """File(path, "r") reads; File(path, "w") collects groups, datasets and attributes
    and writes them all at close()."""

    def __init__(self, path, mode="r", label=None):
        """path: a file name, or (reading) an open binary file with a descriptor;
        label: the name errors give the file (default: path)."""
        fileobj = None
        if hasattr(path, "fileno"):
            fileobj, path = path, getattr(path, "name", "<file object>")
            path = path if isinstance(path, str) else "<file object>"
        self.filename = os.fspath(path)
        self.mode = mode
        if mode == "r":
            if fileobj is None and label is not None:
                fileobj = open(self.filename, "rb")
                self._opened = fileobj
            reader = _Reader(self.filename if label is None else label, fileobj)
            super().__init__(reader, reader.root_addr, "/")
        elif mode == "w":
            super().__init__(None, None, "/", writer=True)
            self._writer = True
            self._out = open(self.filename, "wb")  # created now, filled at close()
        else:
            raise ValueError(f"mode {mode!r}: only 'r' and 'w'")
        self._closed = False

    def flush(self):
        pass

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self.mode == "r":
            self._reader.close()
            if getattr(self, "_opened", None) is not None:
                self._opened.close()
            return
        with self._out as f:
            writer = _Writer(f)
            writer.gheap_fixups = {}
            writer.write(self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is not None and self.mode == "w":
            self._closed = True  # write nothing on an error
            self._out.close()
            return
        self.close()
