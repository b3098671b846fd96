"""A device check: SmPartition's rest streams, and current(rest=True) with a runtime-API
framework (run from the repository root: PYTHONPATH=. python this file; prints one JSON line)."""

import json

import torch

from loader.greenctx import SmPartition

out = {}
with SmPartition(0, 2, fine=True) as fine, SmPartition(0, 2) as aligned:
    out["sms"] = [fine.sms, aligned.sms, fine.device_sms]
    out["rest_streams"] = [bool(fine.rest_stream()), bool(aligned.rest_stream(priority=-1))]
    x = torch.arange(1 << 20, device="cuda", dtype=torch.float32)
    torch.cuda.synchronize()
    with fine.current(rest=True):
        s = torch.cuda.Stream(priority=-1)  # made by the runtime in the rest green context
    with torch.cuda.stream(s):
        y = (x * 2).sum()
    s.synchronize()
    out["sum_ok"] = float(y) == float(x.sum()) * 2
    ext = torch.cuda.ExternalStream(fine.rest_stream(-1))
    ext.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(ext):
        z = (x + 1).sum()
    ext.synchronize()
    out["ext_ok"] = float(z) == float(x.sum()) + x.numel()
    with fine.current(), fine.current(rest=True):
        pass
    out["nested_ok"] = True
print(json.dumps(out))
