"""Every method module, imported for its registrations, and the context registry they fill."""

from camlens.methods import fullgrad as fullgrad
from camlens.methods import gradient as gradient
from camlens.methods import head as head
from camlens.methods import legrad as legrad
from camlens.methods import perturbation as perturbation
from camlens.methods import refine as refine
from camlens.methods import sess as sess
from camlens.methods.context import CONTEXT_METHODS as CONTEXT_METHODS
from camlens.methods.context import MethodContext as MethodContext
from camlens.methods.context import MethodOptions as MethodOptions
from camlens.methods.context import combined_head as combined_head
