"""BatchMeta and KVBatchMeta: what a get_meta or a put describes, as TransferQueue has them.

Both are plain Python data, picklable, so a meta can travel to another process.
A BatchMeta that came from this process's get_meta also holds the library's
meta (``_handle``): it pins the rows' data until the BatchMeta is garbage
collected, and lets get_data read without asking the controller again. An
operation that changes the rows (select_samples, chunk, concat, reorder, a
pickled copy) drops it; get_data then asks the controller for those rows.
"""
import copy
import itertools
import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

log = logging.getLogger("tqrdma")

# production_status values, as TransferQueue counts them
NOT_PRODUCED, READY_FOR_CONSUME = 0, 1


def _same(a, b):
    """== that also works for arrays and tensors (extra_info values may be either)."""
    if type(a) is not type(b):
        return False
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return a.shape == b.shape and bool((a == b).all())
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an incomparable value is not equal
        return False


def _merge_extra_info(chunks, what):
    """The union of the chunks' extra_info; a key with two different values is an error."""
    merged = {}
    for i, chunk in enumerate(chunks):
        for key, value in (chunk.extra_info or {}).items():
            if key in merged and not _same(merged[key], value):
                raise ValueError(f"{what}: extra_info {key!r} differs between chunk 0 and chunk {i}: "
                                 f"{merged[key]!r} vs {value!r}")
            merged.setdefault(key, value)
    return merged


def _split(size, chunks):
    """size positions in chunks ranges of near-equal length, the first ones one longer."""
    if chunks < 1:
        raise ValueError(f"chunk: chunks must be at least 1, not {chunks}")
    if chunks > size:
        log.warning("chunk: %d chunks of %d samples: some are empty", chunks, size)
    base, extra = divmod(size, chunks)
    bounds = [0]
    for i in range(chunks):
        bounds.append(bounds[-1] + base + (i < extra))
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


class _SampleView:
    """One sample of a BatchMeta, read-only (``meta.samples[i]``)."""

    __slots__ = ("_meta", "_i")

    def __init__(self, meta, i):
        self._meta, self._i = meta, i

    @property
    def global_index(self):
        return self._meta.global_indexes[self._i]

    @property
    def partition_id(self):
        return self._meta.partition_ids[self._i]

    @property
    def production_status(self):
        return int(self._meta.production_status[self._i])

    @property
    def custom_meta(self):
        return MappingProxyType(self._meta.custom_meta[self._i])

    @property
    def fields(self):
        """{field: its schema for this sample}: a nested field shows this sample's shape."""
        out = {}
        for name, schema in self._meta.field_schema.items():
            one = {k: v for k, v in schema.items() if k != "per_sample_shapes"}
            if schema.get("per_sample_shapes") is not None:
                one["shape"] = schema["per_sample_shapes"][self._i]
            out[name] = MappingProxyType(one)
        return MappingProxyType(out)

    def __repr__(self):
        return (f"_SampleView(global_index={self.global_index}, partition_id={self.partition_id!r}, "
                f"production_status={self.production_status})")


class _SampleViewList:
    __slots__ = ("_meta",)

    def __init__(self, meta):
        self._meta = meta

    def __len__(self):
        return self._meta.size

    def __getitem__(self, i):
        if i < 0:
            i += self._meta.size
        if not 0 <= i < self._meta.size:
            raise IndexError("sample index out of range")
        return _SampleView(self._meta, i)

    def __iter__(self):
        return (_SampleView(self._meta, i) for i in range(self._meta.size))


class BatchMeta:
    """Metadata of a batch of samples (rows): where they are, which fields they have.

    global_indexes and partition_ids name the rows; field_schema maps each field to
    {"dtype", "shape", "is_nested", "is_non_tensor", and for nested fields
    "per_sample_shapes"}; production_status (int8 per row, 1: every field produced);
    custom_meta, one dict per row, stored by the controller with set_custom_meta;
    extra_info, this batch's own (never sent to the controller).
    """

    __slots__ = ("global_indexes", "partition_ids", "field_schema", "production_status",
                 "extra_info", "custom_meta", "_handle")

    def __init__(self, global_indexes, partition_ids, field_schema=None, production_status=None,
                 extra_info=None, custom_meta=None, _handle=None):
        self.global_indexes = [int(i) for i in global_indexes]
        self.partition_ids = list(partition_ids)
        n = len(self.global_indexes)
        if len(self.partition_ids) != n:
            raise ValueError(f"BatchMeta: {n} global_indexes but {len(self.partition_ids)} "
                             "partition_ids")
        self.field_schema = {name: dict(s) for name, s in (field_schema or {}).items()}
        for name, schema in self.field_schema.items():
            shapes = schema.get("per_sample_shapes")
            if shapes is not None and len(shapes) != n:
                raise ValueError(f"BatchMeta: field {name!r} has {len(shapes)} per_sample_shapes "
                                 f"for {n} samples")
        if production_status is None:
            self.production_status = np.zeros(n, dtype=np.int8)
        else:
            self.production_status = np.array(production_status, dtype=np.int8)
            if self.production_status.shape != (n,):
                raise ValueError(f"BatchMeta: production_status of shape "
                                 f"{self.production_status.shape} for {n} samples")
        self.extra_info = dict(extra_info or {})
        if custom_meta:
            if len(custom_meta) != n:
                raise ValueError(f"BatchMeta: {len(custom_meta)} custom_meta for {n} samples")
            self.custom_meta = [dict(m) for m in custom_meta]
        else:
            self.custom_meta = [{} for _ in range(n)]
        self._handle = _handle

    # pickling (and Ray) carry the data, never the process-local handle
    def __getstate__(self):
        return {s: getattr(self, s) for s in self.__slots__ if s != "_handle"}

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)
        self.production_status = np.array(self.production_status, dtype=np.int8)  # writable
        self._handle = None

    @classmethod
    def empty(cls, extra_info=None):
        return cls([], [], extra_info=extra_info)

    @property
    def size(self):
        return len(self.global_indexes)

    def __len__(self):
        return self.size

    @property
    def field_names(self):
        return sorted(self.field_schema)

    @property
    def is_ready(self):
        return self.size > 0 and bool((self.production_status == READY_FOR_CONSUME).all())

    @property
    def samples(self):
        return _SampleViewList(self)

    def _schema(self, name):
        if name not in self.field_schema:
            raise KeyError(f"field {name!r} is not in this BatchMeta (it has {self.field_names})")
        return self.field_schema[name]

    def get_dtypes(self, field_name):
        return [self._schema(field_name).get("dtype")] * self.size

    def get_shapes(self, field_name):
        schema = self._schema(field_name)
        if schema.get("per_sample_shapes") is not None:
            return list(schema["per_sample_shapes"])
        return [schema.get("shape")] * self.size

    # ---- extra_info: this batch's own ----
    def get_extra_info(self, key, default=None):
        return self.extra_info.get(key, default)

    def set_extra_info(self, key, value):
        self.extra_info[key] = value

    def get_all_extra_info(self):
        return copy.deepcopy(self.extra_info)

    def update_extra_info(self, info_dict):
        self.extra_info.update(info_dict)

    def remove_extra_info(self, key):
        return self.extra_info.pop(key, None)

    def clear_extra_info(self):
        self.extra_info.clear()

    def has_extra_info(self, key):
        return key in self.extra_info

    # ---- custom_meta: one dict per sample, kept by the controller ----
    def get_all_custom_meta(self):
        return copy.deepcopy(self.custom_meta)

    def update_custom_meta(self, custom_meta):
        """Merge one dict per sample into their custom_meta (send it with set_custom_meta)."""
        if custom_meta is None:
            return
        if len(custom_meta) != self.size:
            raise ValueError(f"update_custom_meta: {len(custom_meta)} dicts for {self.size} samples")
        for i, m in enumerate(custom_meta):
            if not isinstance(m, dict):
                raise TypeError(f"update_custom_meta: sample {i}: a dict, not {type(m).__name__}")
        for mine, new in zip(self.custom_meta, custom_meta):
            mine.update(new)

    def clear_custom_meta(self):
        self.custom_meta = [{} for _ in range(self.size)]

    # ---- new BatchMetas ----
    def _rows(self, positions, field_schema=None):
        """A new BatchMeta of the samples at positions (relative to this batch)."""
        schema = {}
        for name, s in (self.field_schema if field_schema is None else field_schema).items():
            s = copy.deepcopy(s)
            if s.get("per_sample_shapes") is not None:
                s["per_sample_shapes"] = [s["per_sample_shapes"][i] for i in positions]
            schema[name] = s
        same_rows = list(positions) == list(range(self.size))
        return BatchMeta([self.global_indexes[i] for i in positions],
                         [self.partition_ids[i] for i in positions], schema,
                         self.production_status[list(positions)], copy.deepcopy(self.extra_info),
                         [copy.deepcopy(self.custom_meta[i]) for i in positions],
                         _handle=self._handle if same_rows else None)

    def select_samples(self, sample_indices):
        positions = [int(i) for i in sample_indices]
        for i in positions:
            if not 0 <= i < self.size:
                raise ValueError(f"select_samples: {i} is not in [0, {self.size})")
        return self._rows(positions)

    def select_fields(self, field_names):
        if isinstance(field_names, str):
            field_names = [field_names]
        wanted = {n: self.field_schema[n] for n in field_names if n in self.field_schema}
        return self._rows(range(self.size), wanted)

    def copy(self):
        return self._rows(range(self.size))

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            i = int(item) + (self.size if item < 0 else 0)
            if not 0 <= i < self.size:
                raise IndexError("BatchMeta index out of range")
            return self._rows([i])
        if isinstance(item, slice):
            return self._rows(range(*item.indices(self.size)))
        raise TypeError(f"BatchMeta indexes with an int or a slice, not {type(item).__name__}")

    def chunk(self, chunks):
        """chunks BatchMetas of near-equal size, the first ones one larger; some may be empty."""
        return [self._rows(r) for r in _split(self.size, chunks)]

    def chunk_by_partition(self):
        groups = {}
        for i, pid in enumerate(self.partition_ids):
            groups.setdefault(pid, []).append(i)
        return [self._rows(positions) for positions in groups.values()]

    def reorder(self, indices):
        """Put the samples in the order indices gives (in place)."""
        indices = [int(i) for i in indices]
        if sorted(indices) != list(range(self.size)):
            raise ValueError(f"reorder: {indices} is not a permutation of range({self.size})")
        reordered = self._rows(indices)
        for name in self.__slots__:
            setattr(self, name, getattr(reordered, name))

    def add_fields(self, data, set_all_ready=True):
        """Record in the schema the fields of data (columns of this batch's samples)."""
        from ._values import field_schema  # the value layer knows every kind of column
        schema = field_schema(data, self.size, "add_fields")
        self.field_schema.update(schema)
        if set_all_ready:
            self.production_status[:] = READY_FOR_CONSUME
        return self

    def union(self, other):
        """The same samples with the fields of both (other's win); custom_meta merged."""
        if other is None or other.size == 0:
            return self.copy()
        if self.size == 0:
            return other.copy()
        if self.global_indexes != other.global_indexes or self.partition_ids != other.partition_ids:
            raise ValueError("union: the two BatchMetas are not of the same samples "
                             f"({self.global_indexes} of {self.partition_ids} vs "
                             f"{other.global_indexes} of {other.partition_ids})")
        schema = copy.deepcopy(self.field_schema)
        schema.update(copy.deepcopy(other.field_schema))
        custom = [dict(copy.deepcopy(a), **copy.deepcopy(b))
                  for a, b in zip(self.custom_meta, other.custom_meta)]
        return BatchMeta(self.global_indexes, self.partition_ids, schema,
                         np.minimum(self.production_status, other.production_status),
                         {**self.extra_info, **other.extra_info}, custom)

    @classmethod
    def concat(cls, data, validate=True):
        """One BatchMeta of the samples of every chunk, in order; fields must agree."""
        chunks = [c for c in (data or []) if c is not None and c.size > 0]
        if not chunks:
            return cls.empty()
        first = chunks[0]
        if validate:
            for i, c in enumerate(chunks[1:], 1):
                if c.field_names != first.field_names:
                    raise ValueError(f"concat: chunk {i} has fields {c.field_names}, chunk 0 "
                                     f"{first.field_names}")
                for name in first.field_names:
                    a, b = first.field_schema[name].get("dtype"), c.field_schema[name].get("dtype")
                    if a != b:
                        raise ValueError(f"concat: field {name!r} is {a} in chunk 0, {b} in "
                                         f"chunk {i}")
        schema = {}
        for name, s in first.field_schema.items():
            parts = [c.field_schema.get(name, {}) for c in chunks]
            nested = any(p.get("is_nested") for p in parts)
            merged = {"dtype": s.get("dtype"), "shape": None if nested else s.get("shape"),
                      "is_nested": nested, "is_non_tensor": s.get("is_non_tensor", False)}
            if nested or any(p.get("per_sample_shapes") is not None for p in parts):
                merged["per_sample_shapes"] = [
                    shape for c, p in zip(chunks, parts)
                    for shape in (p.get("per_sample_shapes") or [p.get("shape")] * c.size)]
            schema[name] = merged
        return cls(list(itertools.chain.from_iterable(c.global_indexes for c in chunks)),
                   list(itertools.chain.from_iterable(c.partition_ids for c in chunks)), schema,
                   np.concatenate([c.production_status for c in chunks]),
                   _merge_extra_info(chunks, "concat"),
                   list(itertools.chain.from_iterable(c.custom_meta for c in chunks)))

    def __str__(self):
        return (f"BatchMeta(size={self.size}, field_names={self.field_names}, "
                f"is_ready={self.is_ready}, global_indexes={self.global_indexes}, "
                f"extra_info={self.extra_info})")

    __repr__ = __str__


@dataclass
class KVBatchMeta:
    """What the key-value calls describe: keys, their tags, partition and fields."""

    keys: list = field(default_factory=list)
    tags: list = field(default_factory=list)
    partition_id: Any = None
    fields: Any = None
    extra_info: Any = field(default_factory=dict)

    def __post_init__(self):
        self.keys = list(self.keys)
        self.tags = copy.deepcopy(list(self.tags))
        if len(self.keys) != len(self.tags):
            raise ValueError(f"KVBatchMeta: {len(self.keys)} keys but {len(self.tags)} tags")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("KVBatchMeta: a key is repeated")
        if self.fields is not None:
            self.fields = list(self.fields)
            if len(set(self.fields)) != len(self.fields):
                raise ValueError("KVBatchMeta: a field is repeated")
        self.extra_info = copy.deepcopy(self.extra_info) if self.extra_info is not None else {}

    @classmethod
    def _made(cls, keys, tags, partition_id, fields):
        """One of the library's answers: fresh lists of distinct keys and fields, tags just
        parsed, so nothing to check or copy (a 1-row kv_put pays for every microsecond)."""
        meta = cls.__new__(cls)
        meta.keys, meta.tags, meta.partition_id, meta.fields = keys, tags, partition_id, fields
        meta.extra_info = {}
        return meta

    @property
    def size(self):
        return len(self.keys)

    def __len__(self):
        return len(self.keys)

    def __str__(self):
        return (f"KVBatchMeta(size={self.size}, field_names={self.fields}, "
                f"extra_info={self.extra_info})")

    def _of(self, positions):
        return KVBatchMeta([self.keys[i] for i in positions], [self.tags[i] for i in positions],
                           self.partition_id, self.fields, self.extra_info)

    def select_keys(self, keys_to_select):
        keys_to_select = list(keys_to_select)
        if len(set(keys_to_select)) != len(keys_to_select):
            raise ValueError("select_keys: a key is repeated")
        where = {k: i for i, k in enumerate(self.keys)}
        missing = [k for k in keys_to_select if k not in where]
        if missing:
            raise RuntimeError(f"select_keys: keys {missing} are not in this KVBatchMeta")
        return self._of([where[k] for k in keys_to_select])

    def reorder(self, indexes):
        indexes = [int(i) for i in indexes]
        if len(indexes) != self.size:
            raise ValueError(f"reorder: {len(indexes)} indexes for {self.size} keys")
        if len(set(indexes)) != len(indexes):
            raise ValueError("reorder: an index is repeated")
        reordered = self._of(indexes)
        self.keys, self.tags = reordered.keys, reordered.tags

    def chunk(self, chunks):
        """chunks KVBatchMetas of near-equal size, the first ones one larger."""
        return [self._of(r) for r in _split(self.size, chunks)]

    @classmethod
    def concat(cls, data):
        chunks = [c for c in (data or []) if c is not None and c.size > 0]
        if not chunks:
            return cls()
        first = chunks[0]
        for c in chunks[1:]:
            if c.fields is not None and set(c.fields) != set(first.fields or []):
                raise ValueError(f"concat: fields {c.fields} and {first.fields} differ")
            if c.partition_id != first.partition_id:
                raise ValueError(f"concat: partitions {first.partition_id!r} and "
                                 f"{c.partition_id!r} differ")
        return cls(list(itertools.chain.from_iterable(c.keys for c in chunks)),
                   list(itertools.chain.from_iterable(c.tags for c in chunks)),
                   first.partition_id, first.fields, _merge_extra_info(chunks, "concat"))
