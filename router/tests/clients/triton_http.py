"""tritonclient.http against a Shardline router, unmodified: health, model readiness and
metadata, and scoring with binary and JSON tensors (FP32 and FP64 inputs, binary and
JSON outputs). Reads its settings as JSON on stdin ({"url", "key", "model", "output",
"rows"}), prints what it saw as JSON on stdout: the scores as float32 bit patterns, so
the caller compares them bit for bit. Run by router/tests/clients.rs."""

import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    cfg = json.load(sys.stdin)
    client = httpclient.InferenceServerClient(url=cfg["url"])
    headers = {"Authorization": "Bearer " + cfg["key"]}
    model = cfg["model"]
    batch = np.array(cfg["rows"], dtype=np.float32)
    seen = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model, headers=headers),
        "other_model_ready": client.is_model_ready("nope", headers=headers),
        "metadata": client.get_model_metadata(model, headers=headers),
        "server_metadata": client.get_server_metadata(),
        "scores": {},
    }

    def score(label, rows, dtype, binary_in, binary_out):
        x = rows.astype(dtype)
        name = "FP32" if dtype == np.float32 else "FP64"
        tensor = httpclient.InferInput("features", list(x.shape), name)
        tensor.set_data_from_numpy(x, binary_data=binary_in)
        # binary_out None: no outputs named, so the client asks for binary_data_output.
        outputs = None
        if binary_out is not None:
            outputs = [httpclient.InferRequestedOutput(cfg["output"], binary_data=binary_out)]
        # A copy per call: tritonclient writes Inference-Header-Content-Length into the
        # dict it is given, and a later JSON request would carry it on.
        result = client.infer(model, [tensor], outputs=outputs, headers=dict(headers))
        y = result.as_numpy(cfg["output"])
        output = result.get_output(cfg["output"])
        seen["scores"][label] = {
            "bits": y.astype(np.float32).reshape(-1).view(np.uint32).tolist(),
            "shape": list(y.shape),
            "binary_answer": "binary_data_size" in (output.get("parameters") or {}),
        }

    score("fp32_binary", batch, np.float32, True, True)
    score("fp32_json", batch, np.float32, False, False)
    score("fp32_binary_in_json_out", batch, np.float32, True, False)
    score("fp32_json_in_binary_out", batch, np.float32, False, True)
    score("fp32_binary_default_outputs", batch, np.float32, True, None)
    score("fp64_binary", batch, np.float64, True, True)
    score("fp64_json", batch, np.float64, False, False)
    score("one_row_binary", batch[:1], np.float32, True, True)
    json.dump(seen, sys.stdout)


if __name__ == "__main__":
    main()
