"""How an INT8 graph is made and judged: settings only, no heavy imports (the CLI reads the defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ...errors import UsageError

METHODS = ("minmax", "entropy", "percentile")  # onnxruntime CalibrationMethod MinMax / Entropy / Percentile
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # x86 flags with saturation-free 8-bit dot products
DEFAULT_MIN_AGREEMENT = 0.97  # issue 13's goal: held-out top-1 agreement with the fp32 adapted model
DEFAULT_CALIBRATION_IMAGES = 256  # calibration images used (at most)
DEPLOY_PRECISIONS = ("fp32", "int8")  # what adapt deploys (not the distillation's --precision)
TARGETS = ("onnxruntime", "tensorrt")  # the runtime a QDQ graph is made for
# TensorRT's recommended Q/DQ placement: the inputs of the weighted layers only (not their outputs)
TENSORRT_OP_TYPES = ("Conv", "Gemm", "MatMul")


def needs_reduce_range(isa: list[str] | None = None) -> bool:
    """True on an x86 CPU with AVX2 but no VNNI/AMX-INT8 (ONNX Runtime's advice against saturation)."""
    from ...latency.fingerprint import cpu_isa_flags

    flags = cpu_isa_flags() if isa is None else isa
    return "avx2" in flags and not any(f in flags for f in VNNI_FLAGS)


@dataclass(frozen=True)
class QuantSettings:
    """How a graph is quantised (recorded in reports and profiles).

    The defaults are ONNX Runtime's for the CPU (uint8 activations, asymmetric); ``tensorrt()``
    gives the settings TensorRT's explicit quantisation accepts (deploy/int8/tensorrt_qdq.py).
    """

    method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool | None = None  # None: decided by the CPU (needs_reduce_range)
    activation_type: str = "uint8"
    weight_type: str = "int8"
    target: str = "onnxruntime"  # TARGETS
    symmetric: bool = False  # activations symmetric (zero point 0); weights are symmetric either way
    quantize_bias: bool = True  # False: biases stay float (no int32 DequantizeLinear)
    op_types: tuple[str, ...] = ()  # ops quantised; () = every op ONNX Runtime quantises
    quantize_outputs: bool = True  # False: Q/DQ on the quantised ops' inputs only (logits stay float)

    @classmethod
    def tensorrt(cls, method: str = "minmax") -> QuantSettings:
        """Symmetric int8 activations and weights (zero point 0), per-channel weights along the
        output channels, no reduce_range, float biases, Q/DQ on the weighted layers' inputs and not
        on their outputs (TensorRT's recommended placement; the logits stay float)."""
        return cls(method, per_channel=True, reduce_range=False, activation_type="int8", weight_type="int8",
                   target="tensorrt", symmetric=True, quantize_bias=False, op_types=TENSORRT_OP_TYPES,
                   quantize_outputs=False)

    def resolved(self) -> QuantSettings:
        """These settings with ``reduce_range`` decided for this CPU; validated."""
        if self.method not in METHODS:
            raise UsageError(f"unknown calibration method {self.method!r}", f"choose from {', '.join(METHODS)}")
        if self.target not in TARGETS:
            raise UsageError(f"unknown INT8 target {self.target!r}", f"choose from {', '.join(TARGETS)}")
        if self.reduce_range is not None:
            return self
        return replace(self, reduce_range=needs_reduce_range())

    def to_dict(self) -> dict:
        return {**asdict(self), "op_types": list(self.op_types), "format": "QDQ"}


@dataclass(frozen=True)
class Int8Gate:
    """The verdict's threshold: top-1 agreement with the fp32 graph of at least ``min_agreement``."""

    min_agreement: float = DEFAULT_MIN_AGREEMENT


@dataclass(frozen=True)
class Int8Config:
    """How an INT8 graph is made and judged (README, "INT8 deployment")."""

    settings: QuantSettings = field(default_factory=QuantSettings)
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    gate: Int8Gate = field(default_factory=Int8Gate)
    keep_float: tuple[str, ...] = ()  # nodes that stay in float whatever the rule finds
    try_groups: bool = True  # the measured per-op-group speed rule (rule.py)
    max_sensitive_float: int = 16  # nodes the accuracy rule may keep in float (0: none)
    bias_correction: bool = True  # subtract the mean shift of the weights' rounding from the biases (bias.py)
    timing: dict = field(default_factory=dict)  # the candidates' latency measurement (budget_s, ...)

    def for_tensorrt(self) -> Int8Config:
        """These settings for TensorRT's explicit quantisation: the symmetric graph with the same
        calibration, gate and accuracy rule, without the speed rule (timed on the CPU, it says
        nothing of TensorRT's speed on the GPU)."""
        return replace(self, settings=QuantSettings.tensorrt(self.settings.method), try_groups=False)

    def validate(self) -> Int8Config:
        self.settings.resolved()  # unknown method
        if self.calibration_images < 1:
            raise UsageError(f"--calibration-images must be >= 1, got {self.calibration_images}")
        if not 0 < self.gate.min_agreement <= 1:
            raise UsageError(f"the INT8 gate's minimum agreement is a fraction in (0, 1], got {self.gate.min_agreement}")
        return self
