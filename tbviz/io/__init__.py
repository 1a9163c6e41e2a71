"""Event I/O: the tag scheme, TFRecord framing, writing, reading and finding runs.

Imports no Keras and no Keras backend: the ACTIVATIONS tab, ``tbviz export``
and ``tbviz report`` read logs with it on any machine.

- `tags`: the on-disk contract (tags, palette layout, `LayerInfo`);
- `records`: TFRecord framing and checksums, written and read;
- `png`: PNG encoding and colour palettes;
- `summaries`: one layer's part of an epoch as a TensorBoard ``Summary``;
- `writer`: event files (local, or one object per flush on object stores) and
  the background `RunWriter`;
- `reader`: event files read back, incrementally, damage reported;
- `runs`: which directories of a log directory are tbviz runs;
- `fs`: log directories given as URLs, through fsspec.
"""
