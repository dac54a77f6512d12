"""KServe's Python SDK REST client (protocol v2) against a Shardline router, unmodified:
server liveness and readiness, model readiness, and scoring with JSON and binary
tensors. Reads its settings as JSON on stdin ({"url", "key", "model", "output", "rows"}), prints
what it saw as JSON on stdout (scores as float32 bit patterns). Run by
router/tests/clients.rs. Kept apart from the tritonclient script: both packages register
the same `inference.*` protobuf messages and cannot share a process."""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput


async def main():
    cfg = json.load(sys.stdin)
    base = cfg["url"]
    headers = {"Authorization": "Bearer " + cfg["key"]}
    model = cfg["model"]
    output = cfg["output"]
    batch = np.array(cfg["rows"], dtype=np.float32)
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    seen = {
        "live": await client.is_server_live(base),
        "ready": await client.is_server_ready(base),
        "model_ready": await client.is_model_ready(base, model, headers=headers),
        "scores": {},
    }

    async def score(label, binary_in, binary_out):
        tensor = InferInput("features", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary_in)
        outputs = [RequestedOutput(output, parameters={"binary_data": binary_out})]
        request = InferRequest(model, [tensor], request_id="k-1", request_outputs=outputs)
        response_headers = {}
        response = await client.infer(
            base, request, model, headers=dict(headers), response_headers=response_headers
        )
        y = response.outputs[0].as_numpy()
        seen["scores"][label] = {
            "bits": y.astype(np.float32).reshape(-1).view(np.uint32).tolist(),
            "shape": list(y.shape),
            "binary_answer": "inference-header-content-length" in response_headers,
        }

    await score("json", False, False)
    await score("binary", True, True)
    await score("binary_in_json_out", True, False)
    await client.close()
    json.dump(seen, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
