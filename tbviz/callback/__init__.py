"""The Keras callback, `ActivationLogger`: it only wires the other rooms together.

- `logger`: the callback's Keras hooks;
- `config`: its arguments, checked, one default each;
- `build`: which layers, how each is pictured, the step (once per ``fit()``).
"""

from tbviz.callback.logger import ActivationLogger

__all__ = ["ActivationLogger"]
