"""The numerics of the step, in ``keras.ops`` (one implementation for every backend).

- `layout`: how a layer output of a given shape is laid out as a picture
  (grids, sizes, the epoch's pixel budget): plain Python on shapes;
- `pictures`: layer outputs -> normalised, colour-level, tiled pictures;
- `stats`: per-layer statistics from a strided sample;
- `change`: the coarse maps the change metric compares, and the metric;
- `summary`: one layer's whole summary in the step, and the numbers it returns.
"""
