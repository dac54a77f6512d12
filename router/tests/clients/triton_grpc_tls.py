"""tritonclient.grpc over TLS against a Shardline router, as a user would call it: the
plan (JSON on stdin) names the TLS gRPC address, the CA file to trust, the key, the model,
its input and a batch; the results (JSON on stdout) are the scores (as f32 bit patterns),
health, and what a plaintext client gets from the same listener. Run by
router/tests/grpc_tls.rs with the test venv's python."""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

plan = json.load(sys.stdin)
auth = {"authorization": "Bearer " + plan["key"]}
x = np.array(plan["rows"], dtype=np.float32)

tls = grpcclient.InferenceServerClient(
    url=plan["url"], ssl=True, root_certificates=plan["ca"]
)
tensor = grpcclient.InferInput(plan["input"], list(x.shape), "FP32")
tensor.set_data_from_numpy(x)
result = tls.infer(plan["model"], [tensor], headers=auth, client_timeout=10)
scores = result.as_numpy(plan["output"]).reshape(-1)

plain = grpcclient.InferenceServerClient(url=plan["url"])
try:
    plain.is_server_live(client_timeout=5)
    plaintext = None
except InferenceServerException as e:
    plaintext = [e.status(), e.message()]

print(
    json.dumps(
        {
            "live": tls.is_server_live(),
            "model_ready": tls.is_model_ready(plan["model"], headers=auth),
            "bits": scores.view(np.uint32).tolist(),
            "plaintext": plaintext,
            # And after the plaintext attempt, TLS still scores.
            "again": tls.infer(plan["model"], [tensor], headers=auth)
            .as_numpy(plan["output"])
            .reshape(-1)
            .view(np.uint32)
            .tolist(),
        }
    )
)
