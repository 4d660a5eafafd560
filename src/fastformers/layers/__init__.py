"""The building blocks models are made of, as nn.Modules: each binds its op (fastformers.ops) once per
(device type, dtype, backend setting), so a forward costs a key compare, not a backend choice.

Models are written in terms of these and `fastformers.ops`; they never see a backend.
"""

from .activation import Activation, SiluMul
from .attention import Attention
from .linear import Conv1D, FusedLinear, Linear, weights_changed
from .norm import LayerNorm, RMSNorm
from .rotary import Rotary

__all__ = ["Activation", "Attention", "Conv1D", "FusedLinear", "LayerNorm", "Linear", "RMSNorm", "Rotary", "SiluMul",
           "weights_changed"]
