"""The model walk: which layers there are, which are pictured, how they are reached.

- `walk`: every layer of a model in order, reaching into nested models, with
  its output and how that output is laid out;
- `selection`: the default choice, ``"all"`` and explicit selectors;
- `capture`: wrapping layers' ``call`` to reach each output as it is computed;
- `probes`: the probe batch made concrete and matched to the model's inputs.
"""
