#!/usr/bin/python3
"""Writes the seed corpus of fuzz_state (tests/fuzz/seeds/state/) from the valid state file
the target saves at start-up. Rerun it when the state format or the target's layers change:

    TERSE_FUZZ_STATE_FILE=/tmp/valid.bin build-fuzz/tests/fuzz/fuzz_state -runs=0 tests/fuzz/seeds/state
    /usr/bin/python3 tests/fuzz/make_state_seeds.py /tmp/valid.bin tests/fuzz/seeds/state

A seed is a flag byte (bit 0: patch the valid file, bit 1: recompute the checksum, bit 2: run
an allreduce after an accepted mutated file) and the raw file or 11-byte patch records
(uint8 op | uint16 position | uint64 value; ops in fuzz_util.h). Regression inputs that a
fuzzing run found are kept beside these seeds under their own names and are not rewritten."""
import struct
import sys


def patch(op, pos, val):
    return struct.pack("<BHQ", op, pos, val & 0xFFFFFFFFFFFFFFFF)


def layers(d):
    """The offsets of every layer's fields in a version 2 file."""
    n_layers = struct.unpack_from("<I", d, 20)[0]
    off, out = 56, []
    for _ in range(n_layers):
        n_state = struct.unpack_from("<Q", d, off + 40)[0]
        state = off + 240
        n_window = struct.unpack_from("<Q", d, state + 4 * n_state + 8)[0]
        out.append({"off": off, "plan": off + 32, "n_state": off + 40, "codec": off + 48,
                    "state": state, "window_calls": state + 4 * n_state,
                    "window": state + 4 * n_state + 16, "n_window": n_window})
        off = state + 4 * n_state + 16 + 4 * n_window
    assert off + 8 == len(d), "not a version 2 state file of the expected layout"
    return out


def main():
    d = open(sys.argv[1], "rb").read()
    out = sys.argv[2]
    L = layers(d)
    adapted = [l for l in L if l["n_window"]]  # the L-GreCo layers (rank 0 keeps a window)
    assert len(adapted) == 2, "expected the topk and the powersgd L-GreCo layers"
    topk_lg, psgd_lg = adapted
    seeds = {
        "raw_valid": b"\x00" + d,
        "patch_none": b"\x01",
        "raw_truncated_fixsum": b"\x02" + d[:300],
        "calls_fixsum": b"\x03" + patch(3, L[0]["off"] + 16, 999),
        "state_nan_then_allreduce": b"\x07" + patch(7, L[0]["state"] + 4, 0)
        + patch(7, L[2]["state"] + 8, 2) + patch(7, L[4]["state"], 6),
        "n_state_fixsum": b"\x03" + patch(9, L[1]["n_state"], 50),
        "version1_fixsum": b"\x03" + patch(2, 8, 1),
        "step_huge_then_allreduce": b"\x07" + patch(3, 24, 1 << 40),
        "lgreco_plan_fixsum": b"\x07" + patch(8, topk_lg["plan"], 14),
        "lgreco_window_nan_then_allreduce": b"\x07" + patch(7, topk_lg["window"] + 8, 0),
        "lgreco_window_calls_zero_then_allreduce": b"\x07" + patch(3, topk_lg["window_calls"], 0),
        # rank 3 instead of 2: the protocol state (Q) changes size, so n_state no longer matches
        "lgreco_powersgd_rank3_fixsum": b"\x07" + patch(8, psgd_lg["plan"], 18),
        "lgreco_powersgd_window_inf_then_allreduce": b"\x07" + patch(7, psgd_lg["window"], 2),
        "codec_label_fixsum": b"\x03" + patch(0, L[3]["codec"], ord("x")),
        "trailing_fixsum": b"\x03" + patch(5, len(d) - 8, 0x0107),
    }
    for name, data in seeds.items():
        with open(f"{out}/{name}", "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
