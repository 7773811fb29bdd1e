"""What tritonclient (Triton's own HTTP client, from PyPI) gets from mdn serve's /v2.

Usage: triton_infer.py HOST:PORT KEY NAME ROWS_JSON
Prints one JSON object: health, the model's metadata, and infer's outputs as binary and as
JSON tensors, by name, version and alias, and the errors of a missing model and a bad shape.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, key, name, rows = sys.argv[1:5]
AUTH = {"Authorization": f"Bearer {key}"} if key else {}


def headers():
    # A new dict for every call: tritonclient writes Inference-Header-Content-Length into
    # the one it is given, which a later JSON request would then carry.
    return dict(AUTH)


client = httpclient.InferenceServerClient(url=url)
x = np.array(json.loads(rows), dtype=np.float32)
OUTPUTS = ["pi", "mu", "sigma", "mean", "variance", "quantiles"]


def infer(model, version="", binary=True, outputs=OUTPUTS, data=x):
    inp = httpclient.InferInput("x", list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
    r = client.infer(model, [inp], model_version=version, outputs=wanted, headers=headers(),
                     parameters={"quantiles": [0.05, 0.95]})
    return {n: r.as_numpy(n).tolist() for n in outputs} | {"version": r.get_response()["model_version"]}


def error(f):
    try:
        f()
    except InferenceServerException as e:
        return [e.status(), e.message()]
    return None


out = {
    "live": client.is_server_live(headers=headers()),
    "ready": client.is_server_ready(headers=headers()),
    "model_ready": client.is_model_ready(name, headers=headers()),
    "missing_ready": client.is_model_ready("no-such-model", headers=headers()),
    "metadata": client.get_model_metadata(name, headers=headers()),
    "binary": infer(name),
    "json": infer(name, binary=False),
    "version_1": infer(name, version="1", outputs=["mean"]),
    "alias": infer(name, version="production", outputs=["mean"]),
    "missing": error(lambda: infer("no-such-model")),
    "bad_shape": error(lambda: infer(name, data=np.zeros((2, 3), dtype=np.float32))),
    "no_key": error(lambda: httpclient.InferenceServerClient(url=url).get_model_metadata(name)),
}
print(json.dumps(out))
