"""The HDF5 feature cache: layout in `cache.layout`, writing in `cache.writer`, reading in `cache.reader`."""
