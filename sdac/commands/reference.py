"""`sdac reference model.onnx -o ref.onnx`: the model with the hardware's hard SiLU/GeLU, for onnxruntime."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SdacError

ORDER = 22


def register(sub) -> None:
    p = sub.add_parser("reference", help="write the model with the hardware's hard SiLU/GeLU (an onnxruntime "
                       "reference for the device)",
                       description="Replace SiLU (x*sigmoid(x)) by HardSwish = x*relu6(x+3)/6 and GeLU "
                       "(x*0.5*(1+erf(x/sqrt 2)) or Gelu) by x*HardSigmoid(x; alpha=1.702/6, beta=0.5) = "
                       "x*relu6(1.702x+3)/6, the approximations the accelerator computes, looking through "
                       "QuantizeLinear/DequantizeLinear pairs. The timestep-embedding path, which the host "
                       "computes exactly, is left as it is. The result runs in onnxruntime.")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("-o", "--output", required=True, metavar="REF.onnx")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..compiler.hardref import write_hard_reference
    out = Path(args.output)
    if out.exists() and not args.force:
        raise SdacError(f"{out}: already exists (use --force to overwrite)")
    if not Path(args.model).exists():
        raise SdacError(f"{args.model}: no such file")
    n = write_hard_reference(args.model, str(out))
    print(f"{out}: {n} hard activation nodes (HardSwish/HardSigmoid)")
    return 0
