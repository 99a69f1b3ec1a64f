#!/usr/bin/env python3
"""Open a unitscale checkpoint (a safetensors file) in PyTorch and check that it reads as expected.

Loads every tensor with the `safetensors` package into torch tensors, prints each name, dtype,
shape and a few values, and the metadata (step, seed, config, ...). It checks that each dtype
named in the file's header maps to the torch dtype it should (F8_E4M3 -> torch.float8_e4m3fn,
F8_E8M0 -> torch.float8_e8m0fnu, ...) and that the checkpoint has a "step"; it exits with status 1
if a check fails.

    pip install safetensors torch
    UNITSCALE_KEEP_CHECKPOINT=/tmp/ckpt.safetensors \\
        build/release/tests/checkpoint/checkpoint_checkpoint_test \\
        --gtest_filter='*EveryDType*'
    python3 benchmarks/compare/load_checkpoint_torch.py /tmp/ckpt.safetensors
"""

import argparse
import json
import struct
import sys

# The safetensors dtype names that unitscale writes, and the torch dtype each must load as.
# F8_E8M0 (unitscale's e8m0fnu) needs torch >= 2.7 for float8_e8m0fnu.
EXPECTED_TORCH_DTYPES = {
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "I32": "int32",
}


def read_header(path):
    """The JSON header, read directly from the file (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def main():
    parser = argparse.ArgumentParser(
        description="Load a unitscale checkpoint (safetensors) into torch tensors and check it.")
    parser.add_argument("checkpoint", help="path to a .safetensors file written by unitscale")
    parser.add_argument("--values", type=int, default=4, metavar="N",
                        help="how many leading values of each tensor to print (default 4)")
    args = parser.parse_args()

    import torch
    from safetensors import safe_open
    import safetensors

    print(f"torch {torch.__version__}, safetensors {safetensors.__version__}")
    header = read_header(args.checkpoint)
    failures = []
    with safe_open(args.checkpoint, framework="pt") as f:
        metadata = f.metadata() or {}
        print("metadata:")
        for key in sorted(metadata):
            print(f"  {key} = {metadata[key]}")
        if "step" not in metadata:
            failures.append('no "step" in the metadata')
        print("tensors:")
        for name in f.keys():
            tensor = f.get_tensor(name)
            declared = header[name]["dtype"]
            expected_name = EXPECTED_TORCH_DTYPES.get(declared)
            expected = getattr(torch, expected_name, None) if expected_name else None
            ok = expected is not None and tensor.dtype == expected
            if not ok:
                failures.append(f"{name}: {declared} loaded as {tensor.dtype}, "
                                f"expected torch.{expected_name}")
            if list(tensor.shape) != header[name]["shape"]:
                failures.append(f"{name}: shape {list(tensor.shape)}, header says "
                                f"{header[name]['shape']}")
            flat = tensor.reshape(-1)[: args.values]
            shown = flat.to(torch.float64).tolist() if tensor.dtype != torch.int32 else flat.tolist()
            print(f"  {name}: {declared} -> {tensor.dtype}, shape {list(tensor.shape)}, "
                  f"values {shown}{'' if ok else '  <-- MISMATCH'}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("OK: every dtype maps to the expected torch dtype")
    return 0


if __name__ == "__main__":
    sys.exit(main())
