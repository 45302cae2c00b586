"""Fine-tuning methods, one module each; importing a module registers its methods (one line each)."""

from strato_peft.methods.base import MethodContext, MethodSpec
from strato_peft.methods.registry import available_methods, get_method, register

from strato_peft.methods import lora  # noqa: E402,F401  lora, dora, rslora, pissa, olora, qlora
from strato_peft.methods import adalora  # noqa: E402,F401
from strato_peft.methods import ia3  # noqa: E402,F401
from strato_peft.methods import prompt_learning  # noqa: E402,F401  prefix_tuning, prompt_tuning
from strato_peft.methods import full  # noqa: E402,F401
from strato_peft.methods import strato  # noqa: E402,F401

__all__ = ["MethodContext", "MethodSpec", "available_methods", "get_method", "register"]
