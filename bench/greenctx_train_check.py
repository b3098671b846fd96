"""Can the R3D-18 stand-in train on a green context's SMs? One JSON line per configuration.

    python -m bench.greenctx_train_check --leave 4 [--fine] [--layout cl|cf]

Runs cudnn autotuning and a few bf16 training steps on a stream of `SmPartition(dev, leave)`
(each configuration in its own process: a failed cuDNN launch can poison the CUDA context).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from bench.feed_torch import _r3d18
from loader.greenctx import SmPartition


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leave", type=int, required=True)
    ap.add_argument("--fine", action="store_true")
    ap.add_argument("--layout", choices=["cl", "cf"], default="cl")
    ap.add_argument("--benchmark", type=int, default=1)
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = bool(a.benchmark)
    fmt = torch.channels_last_3d if a.layout == "cl" else torch.contiguous_format
    out: dict = {"bench": "greenctx_train_check", **vars(a)}
    model = _r3d18().cuda().to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(128, 3, 16, 112, 112, device="cuda").contiguous(memory_format=fmt)
    y = torch.randint(0, 101, (128,), device="cuda")
    try:
        part = SmPartition(torch.cuda.current_device(), a.leave, a.fine)
        out["train_sms"] = part.sms
        stream = torch.cuda.ExternalStream(part.stream())
        with torch.cuda.stream(stream):
            for _ in range(4):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            stream.synchronize()
        out["ok"] = bool(torch.isfinite(loss).item())
    except Exception as e:  # noqa: BLE001 - the error is the result
        out["ok"], out["error"] = False, str(e).splitlines()[0][:200]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
