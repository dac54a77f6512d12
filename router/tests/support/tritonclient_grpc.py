"""tritonclient.grpc against a Shardline router, as a user would call it: the plan
(JSON on stdin) names the gRPC address, the key, the model and its tensors, and the rows
to score (as f32 / f64 bit patterns, so nothing is lost on the way); the results (JSON
on stdout) are the scores as f32 bit patterns, health and metadata, and the gRPC status
of each refusal. Run by router/tests/grpc.rs with the test venv's python."""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

plan = json.load(sys.stdin)
client = grpcclient.InferenceServerClient(url=plan["url"])
auth = {"authorization": "Bearer " + plan["key"]}
rows, dim = plan["rows"], plan["dim"]


def score(x, datatype, headers=auth, model=None):
    tensor = grpcclient.InferInput(plan["input"], list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    wanted = grpcclient.InferRequestedOutput(plan["output"])
    result = client.infer(model or plan["model"], [tensor], outputs=[wanted], headers=headers)
    return result.as_numpy(plan["output"])


def bits(scores):
    assert scores.dtype == np.float32, scores.dtype
    return scores.reshape(-1).view(np.uint32).tolist()


def refusal(call):
    try:
        call()
    except InferenceServerException as e:
        return [e.status(), e.message()]
    return None


fp32 = np.array(plan["fp32_bits"], dtype=np.uint32).view(np.float32).reshape(rows, dim)
fp64 = np.array(plan["fp64_bits"], dtype=np.uint64).view(np.float64).reshape(rows, dim)
metadata = client.get_model_metadata(plan["model"], headers=auth)
server = client.get_server_metadata()
nan = fp32[:1].copy()
nan[0, 3] = np.nan
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(plan["model"], headers=auth),
    "metadata": {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
            for t in metadata.inputs
        ],
        "outputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
            for t in metadata.outputs
        ],
    },
    "server": {"name": server.name, "version": server.version, "extensions": list(server.extensions)},
    "fp32": bits(score(fp32, "FP32")),
    "fp64": bits(score(fp64, "FP64")),
    "refusals": {
        "bad_key": refusal(lambda: score(fp32, "FP32", headers={"authorization": "Bearer nope"})),
        "no_key": refusal(lambda: score(fp32, "FP32", headers={})),
        "other_tenant": refusal(lambda: score(fp32, "FP32", model=plan["other_model"])),
        "wrong_shape": refusal(lambda: score(fp32[:, :-1].copy(), "FP32")),
        "non_finite": refusal(lambda: score(nan, "FP32")),
        "model_metadata_bad_key": refusal(
            lambda: client.get_model_metadata(plan["model"], headers={"authorization": "Bearer nope"})
        ),
    },
}
json.dump(out, sys.stdout)
