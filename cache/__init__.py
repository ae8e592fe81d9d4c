"""The HDF5 feature cache: layout in `cache.layout`, writing in `cache.writer`, reading in `cache.reader`."""

from cache.exports import lazy_exports

# The Python API (reading a cache): documented in docs/reference/api.md, tested in tests/test_api.py.
PUBLIC = {
    "load_split": "cache.reader",
    "cache_info": "cache.reader",
    "Split": "cache.reader",
    "UserError": "cache.errors",
    "UsageError": "cache.errors",
}
__all__ = list(PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, PUBLIC)
